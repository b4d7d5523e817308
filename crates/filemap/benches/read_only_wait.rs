//! How soon a waiting latest-value reader gets a new value, read-write (woken by the
//! writer's futex wake) against read-only (which cannot ask to be woken, and looks every
//! millisecond), and what an idle read-only reader costs in CPU time. The writer is a
//! second process (this benchmark, run again), which publishes its clock at random
//! intervals; the reader takes the difference to its own clock (both `CLOCK_MONOTONIC`).
//!
//! `cargo bench -p filemap --bench read_only_wait` prints a Markdown table for
//! docs/BENCHMARKS.md: per reader, the median and p99 of the wake-up latency over the
//! values it saw of 500 published, and the CPU time of a reader that waits 2 s for nothing.
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
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::common::{self, median, RemoveOnDrop};

    const VALUES: usize = 500;
    const ROLE: &str = "FILEMAP_BENCH_WRITER";

    /// `CLOCK_MONOTONIC` in nanoseconds: one clock for both processes.
    fn now_ns() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    /// This process's CPU time (user and system) in nanoseconds.
    fn cpu_ns() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    fn opts(dir: &std::path::Path) -> filemap::Options {
        let mut o = filemap::Options::new();
        o.namespace(filemap::Namespace::at(dir));
        o
    }

    /// The writer: publishes its clock `VALUES` times, 0.2 to 2 ms apart (a cheap
    /// pseudo-random spacing, so that the reader's polls fall anywhere in between), for
    /// each of the readers in turn; it starts a run when a line comes on stdin.
    fn writer(dir: &std::path::Path) {
        let l = opts(dir).open_latest("clock").unwrap();
        let mut w = l.writer().unwrap();
        println!("ready");
        let mut input = BufReader::new(std::io::stdin().lock());
        let mut line = String::new();
        let mut x = 0x9e37_79b9_u64;
        while input.read_line(&mut line).unwrap_or(0) > 0 {
            for _ in 0..VALUES {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::thread::sleep(Duration::from_micros(200 + x % 1800));
                w.publish(&now_ns().to_le_bytes()).unwrap();
            }
            line.clear();
        }
    }

    /// The median and 99th percentile of `v`, in microseconds.
    fn median_p99(v: Vec<u64>) -> (f64, f64) {
        let mut us: Vec<f64> = v.iter().map(|&ns| ns as f64 / 1000.0).collect();
        us.sort_by(f64::total_cmp);
        (median(us.clone()), us[us.len() * 99 / 100])
    }

    pub fn main() {
        if let Some(dir) = std::env::var_os(ROLE) {
            writer(std::path::Path::new(&dir));
            return;
        }
        let dir = common::shm_root("read-only-wait");
        let _clean = RemoveOnDrop(vec![dir.clone()]);
        let o = opts(&dir);
        let l = o.create_latest("clock", 8).unwrap();
        let mut kid = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut go = kid.stdin.take().unwrap();
        // The writer holds its role once it says so.
        let mut ready = String::new();
        BufReader::new(kid.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        println!("| reader | wake-up median µs | p99 µs | CPU while idle, % of a core |");
        println!("|---|---:|---:|---:|");
        let ro = o.open_latest_read_only("clock").unwrap();
        for (what, handle) in [("read-write", &l), ("read-only", &ro)] {
            let mut r = handle.reader().unwrap();
            let mut buf = Vec::new();
            let mut last = r.read(&mut buf).unwrap().unwrap_or(0);
            let end = last + VALUES as u64;
            writeln!(go).unwrap();
            let mut lat = Vec::with_capacity(VALUES);
            while last < end {
                last = r
                    .wait_newer(last, &mut buf, Some(Duration::from_secs(10)))
                    .unwrap();
                // How long the newest value waited to be seen (a reader that polls may find
                // two at once: the older one is not counted).
                let sent = u64::from_le_bytes(buf[..8].try_into().unwrap());
                lat.push(now_ns().saturating_sub(sent));
            }
            // The writer is done with this run: an idle wait, for its CPU time.
            std::thread::sleep(Duration::from_millis(50));
            let last = r.read(&mut buf).unwrap().unwrap_or(0);
            let (c0, t0) = (cpu_ns(), now_ns());
            let _ = r.wait_newer(last, &mut buf, Some(Duration::from_secs(2)));
            let cpu = (cpu_ns() - c0) as f64 / (now_ns() - t0) as f64 * 100.0;
            let (med, p99) = median_p99(lat);
            println!("| {what} | {med:.1} | {p99:.1} | {cpu:.2} |");
        }
        drop(go);
        kid.wait().unwrap();
    }
}
