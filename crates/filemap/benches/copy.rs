//! Copies into and out of a view (`View::write_at`, `View::read_at`) against a plain
//! `memcpy` between the same addresses, for each placement of the destination relative to
//! the source within a page, in one thread with the bytes in cache.
//!
//! `cargo bench -p filemap --bench copy` prints a Markdown table for docs/BENCHMARKS.md:
//! per size and placement ("apart": the destination's address less the source's, modulo
//! 4096), nanoseconds per copy, the median of 11 rounds, each the best of 10 batches.
//!
//! Then 64 KiB round trips between two processes (this program re-run as the echoing
//! child, pinned to CPU 1, the parent to CPU 0) through a pair of streams with 256 KiB
//! rings, both sides busy-polling, with the parent's send buffer at page offsets 0, 16
//! and 2560 (its receive buffer 2 KiB further on): median and p99 of 10,000 round trips
//! after 2,000, and the ratio to the 2560 placement of the same run.
//!
//! Debian 12's glibc (2.36) copies more than about 2 KiB with `rep movsb` on CPUs that
//! report fast short `rep movsb` (FSRM), and on AMD Zen that takes 11–20x as long when the
//! destination lies 1 to 31 bytes past the source within a page. filemap's copies (views,
//! and every channel's copies in and out) step around those placements.
// A benchmark's report may panic on a closed stdout.
#![allow(clippy::disallowed_macros)]

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("echo") {
        linux::echo(&args[2]);
    } else {
        linux::main();
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the benchmarks need the Linux backend");
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    use std::hint::black_box;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use filemap::{Access, WaitStrategy};

    use super::common::{self, median, RemoveOnDrop};

    const ROUNDS: usize = 11;
    const BATCHES: usize = 10;
    const PAGE: usize = 4096;

    /// The best time per call of `f` over the batches, in nanoseconds.
    fn best(n: usize, f: impl FnMut()) -> f64 {
        common::best(BATCHES, n, f)
    }

    const TRIP: usize = 65536;

    fn pin(cpu: usize) {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }

    fn options(dir: &std::path::Path) -> filemap::Options {
        let mut opts = filemap::Options::new();
        opts.namespace(filemap::Namespace::at(dir));
        opts
    }

    /// The child: echoes every message on `ping` back on `pong` until `ping` closes.
    pub fn echo(dir: &str) {
        pin(1);
        let opts = options(dir.as_ref());
        let mut rx = opts.open_stream("Local\\ping").unwrap().receiver().unwrap();
        let mut tx = opts.open_stream("Local\\pong").unwrap().sender().unwrap();
        rx.set_wait_strategy(WaitStrategy::BusyPoll);
        tx.set_wait_strategy(WaitStrategy::BusyPoll);
        let mut buf = vec![0u8; TRIP];
        println!("ready");
        std::io::stdout().flush().unwrap();
        loop {
            match rx.recv() {
                Ok(m) => m.read_at(0, &mut buf).unwrap(),
                Err(_) => return,
            }
            tx.send(&buf).unwrap();
        }
    }

    /// Round trips with the send buffer at page offset `at`: median and p99, in µs.
    fn round_trips(dir: &std::path::Path, at: usize) -> (f64, f64) {
        let opts = options(dir);
        let mut tx = opts
            .create_stream("Local\\ping", 1 << 18, 65536)
            .unwrap()
            .sender()
            .unwrap();
        let mut rx = opts
            .create_stream("Local\\pong", 1 << 18, 65536)
            .unwrap()
            .receiver()
            .unwrap();
        tx.set_wait_strategy(WaitStrategy::BusyPoll);
        rx.set_wait_strategy(WaitStrategy::BusyPoll);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["echo", &dir.display().to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let mut heap = vec![1u8; 3 * TRIP];
        let send = (PAGE - heap.as_ptr() as usize % PAGE) % PAGE + at;
        let (front, back) = heap.split_at_mut(send + TRIP + 2048);
        let payload = &front[send..send + TRIP];
        let back = &mut back[..TRIP];
        let mut v = Vec::with_capacity(10_000);
        for i in 0..12_000 {
            let t = Instant::now();
            tx.send(payload).unwrap();
            rx.recv().unwrap().read_at(0, back).unwrap();
            if i >= 2_000 {
                v.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        drop(tx);
        let _ = child.wait();
        for name in ["Local\\ping", "Local\\pong"] {
            let _ = filemap::Namespace::at(dir).remove(name);
        }
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() * 99 / 100])
    }

    pub fn main() {
        let dir = common::shm_root("copy");
        let _clean = RemoveOnDrop(vec![dir.clone()]);
        let opts = options(&dir);
        let mapping = opts.create("Local\\copy", 1 << 18).unwrap();
        let view = mapping.map_view(Access::ReadWrite, 0, 0).unwrap();
        let base = view.as_mut_ptr().unwrap();
        // A heap buffer with a page-aligned stretch: the source of writes and the
        // destination of reads. The view's base is page-aligned too.
        let mut heap = vec![1u8; (1 << 17) + 2 * PAGE];
        let aligned = (PAGE - heap.as_ptr() as usize % PAGE) % PAGE;
        println!("| size | apart | write: memcpy ns | `write_at` ns | / memcpy | read: memcpy ns | `read_at` ns | / memcpy |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for size in [4096usize, 65536] {
            let n = ((1 << 20) / size).max(8);
            for apart in [0usize, 8, 16, 24, 31, 32, 64, 2048, 4088] {
                // Writes: heap at page offset 0 to the view at `apart`. Reads: the view at
                // page offset 0 to the heap at `apart`.
                let (w_src, w_off) = (aligned, apart);
                let (r_off, r_dst) = (0, aligned + apart);
                let mut rows = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
                for _ in 0..ROUNDS {
                    let src = &heap[w_src..w_src + size];
                    rows[0].push(best(n, || {
                        // SAFETY: `w_off + size` is inside the view (256 KiB), which
                        // nothing else uses; the source is a distinct heap buffer.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                black_box(src.as_ptr()),
                                base.add(w_off),
                                size,
                            )
                        }
                    }));
                    rows[1].push(best(n, || view.write_at(w_off, black_box(src)).unwrap()));
                    let dst = &mut heap[r_dst..r_dst + size];
                    rows[2].push(best(n, || {
                        // SAFETY: as above, the other way.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                base.add(r_off),
                                black_box(dst.as_mut_ptr()),
                                size,
                            )
                        }
                    }));
                    rows[3].push(best(n, || {
                        view.read_at(r_off, black_box(&mut *dst)).unwrap()
                    }));
                }
                let [wm, wf, rm, rf] = rows.map(median);
                println!(
                    "| {size} | {apart} | {wm:.0} | {wf:.0} | {:.2}x | {rm:.0} | {rf:.0} | {:.2}x |",
                    wf / wm,
                    rf / rm
                );
            }
        }
        pin(0);
        println!();
        println!("| 64 KiB round trip, send buffer at page offset | median µs | p99 µs | / offset 2560 |");
        println!("|---:|---:|---:|---:|");
        let rows: Vec<_> = [0usize, 16, 2560]
            .map(|at| (at, round_trips(&dir, at)))
            .into();
        let base = rows[2].1 .0;
        for (at, (median, p99)) in rows {
            println!("| {at} | {median:.2} | {p99:.2} | {:.2}x |", median / base);
        }
    }
}
