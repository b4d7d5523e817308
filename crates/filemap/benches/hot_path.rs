//! The cost of one `send` and one `recv` on a stream's hot path, in one thread with the
//! ring in cache: the instructions a message costs each side, without the cache-line
//! transfers between two cores that `filemap bench` measures on top.
//!
//! `cargo bench -p filemap --bench hot_path` prints a Markdown table for
//! docs/BENCHMARKS.md.
//!
//! Per message size (8 and 64 bytes), in alternating rounds (the median of 31 rounds, each the best of 20
//! batches):
//! - **raw ring:** fixed slots of the message's size, a `u64` head and tail, a copy in and
//!   a copy out (`copy_nonoverlapping`, which is `memcpy`), as `filemap bench`'s raw SPSC
//!   ring does;
//! - **filemap, copied:** `Sender::send`, then `Receiver::recv` and `Message::read_at`;
//! - **filemap, zero-copy:** `Sender::loan`, an 8-byte `Loan::write_at` and `commit`, then
//!   `recv` and an 8-byte `read_at`;
//! - **filemap, batched:** `Sender::send_all` of 64 messages, then `Receiver::recv_batch`
//!   of up to 256 with a `read_at` of each, as `filemap bench`'s batched row does;
//! - **filemap, recv_into:** `Sender::send`, then `Receiver::recv_into` (the copy
//!   without a message value);
//! - **filemap, copied, `?` into the caller's error:** as copied, in a function whose
//!   error type is the caller's own (here a `String` made from filemap's error, as an
//!   application's error type may be): each `?` then calls a conversion, which may
//!   unwind, while the message lives, so the compiler keeps the message in memory;
//! - **raw ring, size known when compiling:** the raw ring, its copies of a constant size
//!   (a few moves, not a call to `memcpy`), as a typed channel's are;
//! - **filemap, typed:** `Sender::send_value` and `Receiver::recv_value` of `[u64; N]`
//!   (a value with its words' alignment).
//!
//! A batch fills 64 KiB of a 128 KiB ring and then drains it, so that neither side waits.
// A benchmark's report may panic on a closed stdout.
#![allow(clippy::disallowed_macros)]

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the benchmarks need the Linux backend");
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    use std::cell::UnsafeCell;
    use std::hint::black_box;
    use std::sync::atomic::{AtomicU64, Ordering::*};
    use std::time::Instant;

    use filemap::{Receiver, Result, Sender};

    use super::common::{self, median, RemoveOnDrop};

    const ROUNDS: usize = 31;
    const BATCHES: usize = 20;
    const RING: usize = 1 << 17;

    /// The raw ring: slots of one size in a heap buffer, and the two positions. The bytes
    /// are cells: both sides copy through raw pointers made from a shared `&Raw`.
    struct Raw {
        buf: Box<[UnsafeCell<u8>]>,
        head: AtomicU64,
        tail: AtomicU64,
        /// The number of slots (a power of two) less one.
        mask: u64,
    }

    impl Raw {
        /// A pointer to byte `off` of the buffer (not dereferenced here).
        #[inline]
        fn at(&self, off: usize) -> *mut u8 {
            UnsafeCell::raw_get(self.buf.as_ptr().wrapping_add(off))
        }
    }

    #[inline(never)]
    fn raw_send(r: &Raw, msg: &[u8], n: usize) -> Result<()> {
        raw_send_loop(r, msg, n)
    }

    /// `raw_send`'s loop, inlined into it and into `raw_send_fixed`.
    #[inline(always)]
    fn raw_send_loop(r: &Raw, msg: &[u8], n: usize) -> Result<()> {
        let size = msg.len();
        let mut t = r.tail.load(Relaxed);
        let mut h = r.head.load(Acquire);
        for _ in 0..n {
            while t - h > r.mask {
                h = r.head.load(Acquire);
            }
            let off = (t & r.mask) as usize * size;
            assert!(off + size <= r.buf.len());
            // SAFETY: inside the buffer (checked); the bytes are cells, so writing through a
            // pointer from a shared borrow is allowed, and nothing else touches them now.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), r.at(off), size) };
            t += 1;
            r.tail.store(t, Release);
        }
        Ok(())
    }

    #[inline(never)]
    fn raw_recv(r: &Raw, buf: &mut [u8], n: usize) -> Result<()> {
        raw_recv_loop(r, buf, n)
    }

    /// `raw_recv`'s loop, inlined into it and into `raw_recv_fixed`.
    #[inline(always)]
    fn raw_recv_loop(r: &Raw, buf: &mut [u8], n: usize) -> Result<()> {
        let size = buf.len();
        let mut h = r.head.load(Relaxed);
        let mut t = r.tail.load(Acquire);
        for _ in 0..n {
            while t == h {
                t = r.tail.load(Acquire);
            }
            let off = (h & r.mask) as usize * size;
            assert!(off + size <= r.buf.len());
            // SAFETY: inside the buffer (checked); nothing writes these bytes meanwhile.
            unsafe { std::ptr::copy_nonoverlapping(r.at(off), buf.as_mut_ptr(), size) };
            h += 1;
            r.head.store(h, Release);
        }
        Ok(())
    }

    /// As `raw_send`, with the message's size known when compiling (as a typed channel's
    /// is): the copy is a few moves, not a call.
    #[inline(never)]
    fn raw_send_fixed<const W: usize>(r: &Raw, msg: &[u64; W], n: usize) -> Result<()> {
        raw_send_loop(r, bytemuck::cast_slice(msg.as_slice()), n)
    }

    /// As `raw_recv`, with the size known when compiling.
    #[inline(never)]
    fn raw_recv_fixed<const W: usize>(r: &Raw, buf: &mut [u64; W], n: usize) -> Result<()> {
        raw_recv_loop(r, bytemuck::cast_slice_mut(buf.as_mut_slice()), n)
    }

    #[inline(never)]
    fn send_typed<const W: usize>(tx: &mut Sender, v: &[u64; W], n: usize) -> Result<()>
    where
        [u64; W]: filemap::Plain,
    {
        for _ in 0..n {
            tx.send_value(v)?;
        }
        Ok(())
    }

    #[inline(never)]
    fn recv_typed<const W: usize>(rx: &mut Receiver, n: usize) -> Result<u64>
    where
        [u64; W]: filemap::Plain,
    {
        let mut x = 0;
        for _ in 0..n {
            let v: [u64; W] = rx.recv_value()?;
            // Every word: with only one used, the compiler may copy only that one.
            x ^= v.iter().fold(0, |a, w| a ^ w);
        }
        Ok(x)
    }

    /// The rows for messages of `W` words (`8 * W` bytes) whose size the code knows: the
    /// raw ring's, and a typed channel's (`send_value` and `recv_value` of `[u64; W]`).
    fn fixed_rows<const W: usize>(
        raw: &Raw,
        tx: &mut Sender,
        rx: &mut Receiver,
        n: usize,
    ) -> [(f64, f64); 2]
    where
        [u64; W]: filemap::Plain,
    {
        let (msg, mut buf) = ([7u64; W], [0u64; W]);
        [
            best(
                n,
                |n| raw_send_fixed(raw, black_box(&msg), n),
                |n| raw_recv_fixed(raw, black_box(&mut buf), n),
            ),
            best(
                n,
                |n| send_typed(tx, black_box(&msg), n),
                |n| {
                    recv_typed::<W>(rx, n).map(|x| {
                        black_box(x);
                    })
                },
            ),
        ]
    }

    #[inline(never)]
    fn send(tx: &mut Sender, msg: &[u8], n: usize) -> Result<()> {
        for _ in 0..n {
            tx.send(msg)?;
        }
        Ok(())
    }

    #[inline(never)]
    fn recv(rx: &mut Receiver, buf: &mut [u8], n: usize) -> Result<()> {
        for _ in 0..n {
            rx.recv()?.read_at(0, buf)?;
        }
        Ok(())
    }

    /// An application's own error type: `?` converts filemap's error into it.
    #[derive(Debug)]
    struct AppError(String);

    impl From<filemap::Error> for AppError {
        fn from(e: filemap::Error) -> AppError {
            AppError(e.to_string())
        }
    }

    #[inline(never)]
    fn recv_app(rx: &mut Receiver, buf: &mut [u8], n: usize) -> std::result::Result<(), AppError> {
        for _ in 0..n {
            rx.recv()?.read_at(0, buf)?;
        }
        Ok(())
    }

    #[inline(never)]
    fn recv_into(rx: &mut Receiver, buf: &mut [u8], n: usize) -> Result<()> {
        for _ in 0..n {
            rx.recv_into(buf)?;
        }
        Ok(())
    }

    #[inline(never)]
    fn loan(tx: &mut Sender, len: usize, n: usize) -> Result<()> {
        for i in 0..n {
            let mut loan = tx.loan(len)?;
            loan.write_at(0, &(i as u64).to_le_bytes())?;
            loan.commit();
        }
        Ok(())
    }

    #[inline(never)]
    fn recv_word(rx: &mut Receiver, n: usize) -> Result<u64> {
        let mut sum = 0;
        let mut word = [0u8; 8];
        for _ in 0..n {
            rx.recv()?.read_at(0, &mut word)?;
            sum += u64::from_le_bytes(word);
        }
        Ok(sum)
    }

    #[inline(never)]
    fn send_batched(tx: &mut Sender, msg: &[u8], n: usize) -> Result<()> {
        let mut sent = 0;
        while sent < n {
            sent += tx.send_all(std::iter::repeat_n(msg, (n - sent).min(64)))?;
        }
        Ok(())
    }

    #[inline(never)]
    fn recv_batched(rx: &mut Receiver, buf: &mut [u8], n: usize) -> Result<()> {
        let (mut got, mut failed) = (0, None);
        while got < n {
            got += rx.recv_batch((n - got).min(256), |m| {
                // Not `let _ =`: the error's drop, called on every result, is not inlined.
                if let Err(e) = m.read_at(0, buf) {
                    failed = Some(e);
                }
            })?;
        }
        failed.map_or(Ok(()), Err)
    }

    /// The best of `BATCHES` batches of `n`: nanoseconds per message, sending and
    /// receiving.
    fn best(
        n: usize,
        mut tx: impl FnMut(usize) -> Result<()>,
        mut rx: impl FnMut(usize) -> Result<()>,
    ) -> (f64, f64) {
        let (mut s, mut r) = (f64::MAX, f64::MAX);
        for _ in 0..BATCHES {
            let t = Instant::now();
            tx(n).unwrap();
            s = s.min(t.elapsed().as_nanos() as f64 / n as f64);
            let t = Instant::now();
            rx(n).unwrap();
            r = r.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        (s, r)
    }

    pub fn main() {
        let dir = common::shm_root("hot-path");
        let _clean = RemoveOnDrop(vec![dir.clone()]);
        let mut opts = filemap::Options::new();
        opts.namespace(filemap::Namespace::at(&dir));
        println!("| size | contender | send ns | recv ns | send / raw | recv / raw |");
        println!("|---:|---|---:|---:|---:|---:|");
        for size in [8usize, 64] {
            let stream = opts.create_stream("hot", RING as u32, 4096).unwrap();
            let (mut tx, mut rx) = (stream.sender().unwrap(), stream.receiver().unwrap());
            let raw = Raw {
                buf: (0..RING).map(|_| UnsafeCell::new(0)).collect(),
                head: AtomicU64::new(0),
                tail: AtomicU64::new(0),
                mask: (RING / size) as u64 - 1,
            };
            let msg = vec![7u8; size];
            let mut buf = vec![0u8; size];
            // Half the ring per batch; a frame is the message and an 8-byte header.
            let n = RING / 2 / (size + 8);
            let mut rows = vec![(Vec::new(), Vec::new()); 8];
            for _ in 0..ROUNDS {
                let mut b = vec![0u8; size];
                // One (send, receive) pair per row, in the order of the labels below.
                let round = [
                    best(
                        n,
                        |n| raw_send(&raw, black_box(&msg), n),
                        |n| raw_recv(&raw, black_box(&mut buf[..]), n),
                    ),
                    best(
                        n,
                        |n| send(&mut tx, black_box(&msg), n),
                        |n| recv(&mut rx, black_box(&mut b[..]), n),
                    ),
                    best(
                        n,
                        |n| loan(&mut tx, black_box(size), n),
                        |n| {
                            recv_word(&mut rx, n).map(|sum| {
                                black_box(sum);
                            })
                        },
                    ),
                    best(
                        n,
                        |n| send_batched(&mut tx, black_box(&msg), n),
                        |n| recv_batched(&mut rx, black_box(&mut b[..]), n),
                    ),
                    best(
                        n,
                        |n| send(&mut tx, black_box(&msg), n),
                        |n| recv_into(&mut rx, black_box(&mut b[..]), n),
                    ),
                    best(
                        n,
                        |n| send(&mut tx, black_box(&msg), n),
                        |n| {
                            recv_app(&mut rx, black_box(&mut b[..]), n)
                                .map_err(|e| filemap::Error::InvalidArgument { what: e.0 })
                        },
                    ),
                ];
                let fixed = match size {
                    8 => fixed_rows::<1>(&raw, &mut tx, &mut rx, n),
                    _ => fixed_rows::<8>(&raw, &mut tx, &mut rx, n),
                };
                for (row, (s, r)) in rows.iter_mut().zip(round.into_iter().chain(fixed)) {
                    row.0.push(s);
                    row.1.push(r);
                }
            }
            let (raw_s, raw_r) = (median(rows[0].0.clone()), median(rows[0].1.clone()));
            for (label, (s, r)) in [
                "raw ring",
                "filemap, copied",
                "filemap, zero-copy",
                "filemap, batched",
                "filemap, recv_into",
                "filemap, copied, `?` into the caller's error",
                "raw ring, size known when compiling",
                "filemap, typed (`[u64; N]` values)",
            ]
            .iter()
            .zip(rows)
            {
                let (s, r) = (median(s), median(r));
                println!(
                    "| {size} | {label} | {s:.2} | {r:.2} | {:.2}x | {:.2}x |",
                    s / raw_s,
                    r / raw_r
                );
            }
            drop((tx, rx, stream));
        }
    }
}
