//! Where a 64 B round trip between two cores goes: `filemap bench`'s baseline, models of a
//! stream's protocol built up one part at a time, and a real stream pair, side by side.
//!
//! `cargo bench -p filemap --bench round_trip_model` prints a Markdown table for
//! docs/BENCHMARKS.md.
//!
//! Two threads pinned to CPUs 0 and 1 play ping-pong with 64-byte messages. The cache
//! lines travel between the cores as they do between two processes, so the models need no
//! second process. Every model moves a message as eight relaxed 8-byte stores and loads.
//! - **raw, one line:** one flag word for both directions and a 64-byte buffer per
//!   direction (`filemap bench`'s raw atomic ping-pong, the baseline).
//! - **raw, a line per direction:** the same with a flag line per direction, as a pair of
//!   streams has a `tail` per direction.
//! - **ring:** a stream's frames, without its code: each message is a 72-byte frame (a
//!   length word, then the payload) at the next place in a ring. It is published by a
//!   store of `tail` on its own line. The consumer reads the length, then the payload, and
//!   stores `head` on a line of its own.
//! - **ring + prefetch:** the same, with the consumer asking for the next frame's two lines
//!   at every look at `tail`, as a stream's consumer does.
//! - **ring + prefetch + counters:** the same, plus the stream's `sent` and `received`
//!   stores beside `tail` and `head`, and its loads of the other side's waiting flag.
//!   This is a stream's protocol, store for store.
//! - **filemap stream pair:** two real streams, with `send`, then `recv` and `read_at`, as
//!   `filemap bench` runs them.
//!
//! In each of 9 rounds every row runs in turn (the order rotates), 100,000 round trips
//! after 10,000. A row's figure is its mean round trip, and the median over rounds. Its
//! ratio is the median of its ratios to the baseline's figure in the same round.
//!
//! Two vCPUs on these VMs are sometimes near each other and sometimes far apart (a raw
//! round trip of about 130–150 ns, or of about 450). The host decides, and it can switch
//! within a run, so compare ratios from the same round.
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
mod linux {
    use std::sync::atomic::{AtomicU64, Ordering::*};
    use std::sync::Arc;
    use std::time::Instant;

    use filemap::{Namespace, Options, WaitStrategy};

    use super::common::{self, median, RemoveOnDrop};

    const TRIPS: u64 = 100_000;
    const WARM: u64 = 10_000;
    const ROUNDS: usize = 9;
    /// Bytes of each direction's ring (a multiple of 72, so that frames never wrap).
    const RING: usize = 72 * 900;

    /// Page-aligned shared words, so that the offsets below fall on the lines they name.
    #[repr(C, align(4096))]
    struct Page([AtomicU64; 512]);

    struct Mem(Box<[Page]>);

    impl Mem {
        fn new(bytes: usize) -> Mem {
            Mem((0..bytes.div_ceil(4096))
                .map(|_| Page(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect())
        }

        /// The word at byte offset `off` (a multiple of 8).
        fn at(&self, off: usize) -> &AtomicU64 {
            &self.0[off / 4096].0[off % 4096 / 8]
        }

        /// Asks for the line at byte offset `off` (a hint; x86-64 only, as in the stream).
        fn prefetch(&self, off: usize) {
            let p = std::ptr::from_ref(self.at(off)).cast::<i8>();
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `prefetcht0` reads nothing that the program sees and never faults;
            // the address is a live word's besides.
            #[allow(unsafe_code)]
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = p;
        }

        fn put(&self, off: usize, msg: &[u64; 8]) {
            for (i, w) in msg.iter().enumerate() {
                self.at(off + 8 * i).store(*w, Relaxed);
            }
        }

        fn get(&self, off: usize, msg: &mut [u64; 8]) {
            for (i, w) in msg.iter_mut().enumerate() {
                *w = self.at(off + 8 * i).load(Relaxed);
            }
        }
    }

    // Byte offsets. Direction d (0: ping, 1: pong) has a control page at 4096 (1 + d):
    // `tail` and `sent` on its first line, `head` and `received` on its third, the two
    // waiting flags on its fifth. The raw buffers sit in page 3, the rings after it.
    const FLAG: usize = 0;
    fn tail(d: usize) -> usize {
        4096 * (1 + d)
    }
    fn head(d: usize) -> usize {
        tail(d) + 128
    }
    fn waiting(d: usize) -> usize {
        tail(d) + 256
    }
    fn buf(d: usize) -> usize {
        3 * 4096 + 128 * d
    }
    fn ring(d: usize) -> usize {
        4 * 4096 + d * RING
    }
    const LEN: usize = 4 * 4096 + 2 * RING;

    #[derive(Clone, Copy, PartialEq)]
    enum Model {
        OneLine,
        LinePerDirection,
        Ring,
        RingPrefetch,
        RingPrefetchCounters,
    }

    /// One side's view of one direction of a model. The `k`th message of the ping
    /// direction is published as `2k - 1`, its reply as `2k`, so that the one-line model's
    /// shared flag tells the two apart.
    struct End {
        model: Model,
        d: usize,
        pos: usize,
    }

    impl End {
        fn send(&mut self, m: &Mem, k: u64, msg: &[u64; 8]) {
            let d = self.d;
            match self.model {
                Model::OneLine | Model::LinePerDirection => {
                    m.put(buf(d), msg);
                    let flag = if self.model == Model::OneLine {
                        FLAG
                    } else {
                        tail(d)
                    };
                    m.at(flag).store(k, Release);
                }
                _ => {
                    let f = ring(d) + self.pos;
                    m.at(f).store(64, Relaxed);
                    m.put(f + 8, msg);
                    self.pos = (self.pos + 72) % RING;
                    if self.model == Model::RingPrefetchCounters {
                        m.at(tail(d) + 8).store(k, Relaxed);
                    }
                    m.at(tail(d)).store(k, Release);
                    if self.model == Model::RingPrefetchCounters {
                        // A stream's `fence_fast` is a compiler fence once membarrier is
                        // registered, which it is on these kernels.
                        std::sync::atomic::compiler_fence(SeqCst);
                        assert_eq!(m.at(waiting(d)).load(Relaxed), 0);
                    }
                }
            }
        }

        fn recv(&mut self, m: &Mem, k: u64, msg: &mut [u64; 8]) {
            let d = self.d;
            match self.model {
                Model::OneLine | Model::LinePerDirection => {
                    let flag = if self.model == Model::OneLine {
                        FLAG
                    } else {
                        tail(d)
                    };
                    while m.at(flag).load(Acquire) < k {
                        std::hint::spin_loop();
                    }
                    m.get(buf(d), msg);
                }
                _ => {
                    let f = ring(d) + self.pos;
                    let prefetch = self.model != Model::Ring;
                    loop {
                        if prefetch {
                            m.prefetch(f);
                            m.prefetch((f + 64) & !63);
                        }
                        if m.at(tail(d)).load(Acquire) >= k {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    assert_eq!(m.at(f).load(Relaxed), 64);
                    m.get(f + 8, msg);
                    self.pos = (self.pos + 72) % RING;
                    if self.model == Model::RingPrefetchCounters {
                        m.at(head(d) + 8).store(k, Relaxed);
                    }
                    m.at(head(d)).store(k, Release);
                    if self.model == Model::RingPrefetchCounters {
                        std::sync::atomic::compiler_fence(SeqCst);
                        assert_eq!(m.at(waiting(d) + 8).load(Relaxed), 0);
                    }
                }
            }
        }
    }

    fn pin(cpu: usize) {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }

    /// Nanoseconds per round trip, on the mean, after the warm-up.
    fn model(model: Model) -> f64 {
        let m = Arc::new(Mem::new(LEN));
        let m2 = Arc::clone(&m);
        let echo = std::thread::spawn(move || {
            pin(1);
            let mut rx = End {
                model,
                d: 0,
                pos: 0,
            };
            let mut tx = End {
                model,
                d: 1,
                pos: 0,
            };
            let mut msg = [0u64; 8];
            for k in 1..=WARM + TRIPS {
                rx.recv(&m2, 2 * k - 1, &mut msg);
                tx.send(&m2, 2 * k, &msg);
            }
        });
        let mut tx = End {
            model,
            d: 0,
            pos: 0,
        };
        let mut rx = End {
            model,
            d: 1,
            pos: 0,
        };
        let out = [7u64; 8];
        let mut back = [0u64; 8];
        let mut start = Instant::now();
        for k in 1..=WARM + TRIPS {
            if k == WARM + 1 {
                start = Instant::now();
            }
            tx.send(&m, 2 * k - 1, &out);
            rx.recv(&m, 2 * k, &mut back);
        }
        let ns = start.elapsed().as_nanos() as f64 / TRIPS as f64;
        echo.join().unwrap();
        assert_eq!(back, out);
        ns
    }

    fn stream_pair(root: &std::path::Path) -> f64 {
        let mut o = Options::new();
        o.namespace(Namespace::at(root));
        let ping = o.create_stream("Local\\ping", 1 << 18, 65536).unwrap();
        let pong = o.create_stream("Local\\pong", 1 << 18, 65536).unwrap();
        let mut sides = [
            (ping.sender().unwrap(), pong.receiver().unwrap()),
            (pong.sender().unwrap(), ping.receiver().unwrap()),
        ];
        for (tx, rx) in &mut sides {
            tx.set_wait_strategy(WaitStrategy::BusyPoll);
            rx.set_wait_strategy(WaitStrategy::BusyPoll);
        }
        let [(mut tx, mut rx), (mut etx, mut erx)] = sides;
        let echo = std::thread::spawn(move || {
            pin(1);
            let mut msg = [0u8; 64];
            for _ in 0..WARM + TRIPS {
                erx.recv().unwrap().read_at(0, &mut msg).unwrap();
                etx.send(&msg).unwrap();
            }
        });
        let out = [7u8; 64];
        let mut back = [0u8; 64];
        let mut start = Instant::now();
        for k in 0..WARM + TRIPS {
            if k == WARM {
                start = Instant::now();
            }
            tx.send(&out).unwrap();
            rx.recv().unwrap().read_at(0, &mut back).unwrap();
        }
        let ns = start.elapsed().as_nanos() as f64 / TRIPS as f64;
        echo.join().unwrap();
        assert_eq!(back, out);
        ns
    }

    pub fn main() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            eprintln!("round_trip_model needs two CPUs");
            return;
        }
        pin(0);
        // With the root under /tmp (ext4 here), the stream pair measured 0.1–0.2x slower.
        let root = common::shm_root("rtm");
        let _clean = RemoveOnDrop(vec![root.clone()]);
        let rows: [(&str, Option<Model>); 6] = [
            (
                "raw, one line (filemap bench's baseline)",
                Some(Model::OneLine),
            ),
            ("raw, a line per direction", Some(Model::LinePerDirection)),
            ("ring: 72-byte frames, tail and head", Some(Model::Ring)),
            ("ring + prefetch while waiting", Some(Model::RingPrefetch)),
            (
                "ring + prefetch + counters and flags (a stream's protocol)",
                Some(Model::RingPrefetchCounters),
            ),
            ("filemap stream pair", None),
        ];
        let mut ns = vec![Vec::new(); rows.len()];
        for round in 0..ROUNDS {
            for k in 0..rows.len() {
                let i = (round + k) % rows.len();
                ns[i].push(match rows[i].1 {
                    Some(m) => model(m),
                    None => {
                        let ns = stream_pair(&root);
                        let _ = std::fs::remove_dir_all(&root);
                        ns
                    }
                });
            }
        }
        println!(
            "| 64 B round trip, two threads on CPUs 0 and 1 | ns (median of {ROUNDS} rounds' means) | / raw, one line (median of the rounds') |"
        );
        println!("|---|---:|---:|");
        for (i, (label, _)) in rows.iter().enumerate() {
            let ratio = median(ns[i].iter().zip(&ns[0]).map(|(x, b)| x / b).collect());
            println!("| {label} | {:.1} | {ratio:.2}x |", median(ns[i].clone()));
        }
    }
}
