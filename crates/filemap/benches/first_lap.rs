//! The first lap through a channel's ring: what opening costs, and what the first pass of
//! messages costs, with and without the ring's pages mapped at open (`MAP_POPULATE`).
//!
//! `cargo bench -p filemap --bench first_lap` prints a Markdown table for
//! docs/BENCHMARKS.md.
//!
//! Per ring size, in alternating rounds (medians of 15):
//! - **raw, lazy:** a reserved tmpfs file mapped shared as it is (`mmap`), then one lap of
//!   4 KiB writes and reads through it, as a sender and a receiver with their own mappings
//!   would do: each page faults on each side at first touch.
//! - **raw, populated:** the same with `MAP_POPULATE` on both mappings.
//! - **filemap:** `open_stream` (a second handle, as another process would make), then
//!   one lap of 4 KiB messages, `send` on the creator's handle and `recv` on the opened
//!   one.
//!
//! "open" is one mapping (raw) or one `open_stream` (filemap); "first lap" is the whole
//! pass. Ratios are against "raw, populated" of the same round.
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
    use std::os::fd::AsFd;
    use std::time::Instant;

    use rustix::mm::{self, MapFlags, ProtFlags};

    use super::common::{self, median, RemoveOnDrop};

    const ROUNDS: usize = 15;
    const CHUNK: usize = 4096;

    /// A shared mapping of `len` bytes of `file`, unmapped when dropped.
    struct Map(*mut u8, usize);

    impl Map {
        fn new(file: &std::fs::File, len: usize, populate: bool) -> Map {
            let flags = if populate {
                MapFlags::SHARED | MapFlags::POPULATE
            } else {
                MapFlags::SHARED
            };
            // SAFETY: a new mapping where the kernel chooses; the file is `len` bytes long.
            let p = unsafe {
                mm::mmap(
                    std::ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    flags,
                    file.as_fd(),
                    0,
                )
            }
            .expect("mmap");
            Map(p.cast(), len)
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: our own mapping, no longer used.
            let _ = unsafe { mm::munmap(self.0.cast(), self.1) };
        }
    }

    /// µs to map, and µs for one lap of 4 KiB writes (through `a`) and reads (through `b`).
    fn raw(dir: &std::path::Path, len: usize, populate: bool) -> (f64, f64) {
        let path = dir.join(format!("raw-{len}-{populate}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        // Reserved, as a channel's file is.
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len as u64).unwrap();
        let a = Map::new(&file, len, populate);
        let t = Instant::now();
        let b = Map::new(&file, len, populate);
        let open = t.elapsed().as_secs_f64() * 1e6;
        let msg = vec![5u8; CHUNK];
        let mut buf = vec![0u8; CHUNK];
        let t = Instant::now();
        for off in (0..len).step_by(CHUNK) {
            // SAFETY: `off + CHUNK <= len`; the two mappings are ours and nothing else
            // uses the file.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), a.0.add(off), CHUNK);
                std::ptr::copy_nonoverlapping(b.0.add(off), buf.as_mut_ptr(), CHUNK);
            }
        }
        let lap = t.elapsed().as_secs_f64() * 1e6;
        std::hint::black_box(&buf);
        drop((a, b));
        let _ = std::fs::remove_file(&path);
        (open, lap)
    }

    /// µs for `open_stream`, and µs for one lap of 4 KiB messages.
    fn filemap(opts: &filemap::Options, len: usize, round: usize) -> (f64, f64) {
        let name = format!("Local\\lap-{len}-{round}");
        let s = opts.create_stream(&name, len as u32, CHUNK as u32).unwrap();
        let mut tx = s.sender().unwrap();
        let t = Instant::now();
        let opened = opts.open_stream(&name).unwrap();
        let open = t.elapsed().as_secs_f64() * 1e6;
        let mut rx = opened.receiver().unwrap();
        let msg = vec![5u8; CHUNK];
        let mut buf = vec![0u8; CHUNK];
        // Frames of 4104 bytes: as many as fit in one lap.
        let t = Instant::now();
        for _ in 0..len / (CHUNK + 8) {
            tx.send(&msg).unwrap();
            rx.recv().unwrap().read_at(0, &mut buf).unwrap();
        }
        let lap = t.elapsed().as_secs_f64() * 1e6;
        (open, lap)
    }

    pub(super) fn main() {
        let dir = common::shm_root("lap");
        let _clean = RemoveOnDrop(vec![dir.clone()]);
        std::fs::create_dir_all(&dir).unwrap();
        let mut opts = filemap::Options::new();
        opts.namespace(filemap::Namespace::at(dir.join("ns")));
        println!("| ring | contender | open µs | first lap µs | open / raw populated | lap / raw populated |");
        println!("|---:|---|---:|---:|---:|---:|");
        for mib in [1usize, 16, 64] {
            let len = mib << 20;
            let mut rows = vec![(Vec::new(), Vec::new()); 3];
            let mut ratios = vec![(Vec::new(), Vec::new()); 3];
            for round in 0..ROUNDS {
                let got = [
                    raw(&dir, len, false),
                    raw(&dir, len, true),
                    filemap(&opts, len, round),
                ];
                for (i, &(open, lap)) in got.iter().enumerate() {
                    rows[i].0.push(open);
                    rows[i].1.push(lap);
                    ratios[i].0.push(open / got[1].0);
                    ratios[i].1.push(lap / got[1].1);
                }
            }
            for (i, label) in ["raw, lazy", "raw, populated", "filemap stream"]
                .iter()
                .enumerate()
            {
                println!(
                    "| {mib} MiB | {label} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
                    median(rows[i].0.clone()),
                    median(rows[i].1.clone()),
                    median(ratios[i].0.clone()),
                    median(ratios[i].1.clone()),
                );
            }
        }
    }
}
