//! `filemap bench`: stream channels against their baselines, measured in one run, with
//! processes (this program re-run as `filemap bench-child ROLE ...`), not threads.
//!
//! Latency: round trips of 64 B, 4 KiB and 64 KiB through filemap (busy-poll, default, and
//! default with the peer idle), against a raw atomic ping-pong on one cache line (with the
//! same payload copies: the hardware's limit), a raw futex ping-pong, a pipe and a Unix
//! socket. Throughput: messages per second one way, copied, zero-copy and (64 B) batched,
//! against a raw single-producer ring, a pipe and a Unix socket. Both go round by round,
//! each round taking every contender in turn with new processes, and each ratio is the
//! median of the rounds' ratios to the baseline's result in the same round (the raw atomic
//! ping-pong's median round trip, or the raw ring's rate).
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]
// The raw baselines are atomics and copies on a shared mapping.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use filemap::{Access, Namespace, Options, WaitStrategy};

use crate::{CmdResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Print JSON instead of Markdown tables.
    #[arg(long)]
    json: bool,
    /// Fewer samples (a quick look; the figures are noisier).
    #[arg(long)]
    quick: bool,
    /// Measure only messages of this size (repeatable; default: all three).
    #[arg(
        long = "size",
        value_name = "BYTES",
        value_parser = PossibleValuesParser::new(["64", "4096", "65536"])
            .map(|s| s.parse::<usize>().unwrap_or(0)),
    )]
    sizes: Vec<usize>,
    /// Measure only round trips or only one-way rates (repeatable; default: both).
    #[arg(long = "test", value_enum, value_name = "TEST")]
    tests: Vec<Part>,
}

/// The two halves of `filemap bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Part {
    /// Round trips.
    Latency,
    /// Messages per second, one way.
    Throughput,
}

impl BenchArgs {
    /// The sizes to measure, in the tables' order.
    fn sizes(&self) -> Vec<usize> {
        SIZES
            .into_iter()
            .filter(|s| self.sizes.is_empty() || self.sizes.contains(s))
            .collect()
    }

    fn runs(&self, part: Part) -> bool {
        self.tests.is_empty() || self.tests.contains(&part)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ChildArgs {
    role: String,
    args: Vec<String>,
}

const SIZES: [usize; 3] = [64, 4096, 65536];

/// One measured row.
struct Row {
    test: &'static str,
    size: usize,
    contender: String,
    /// Latency: microseconds per round trip (the median of every round's round trips);
    /// throughput: million messages per second (the median run).
    median: f64,
    /// Latency: p99 of every round's round trips; throughput: the slowest run.
    tail: f64,
    /// Against the baseline: the median over rounds of this contender's result divided by
    /// the baseline's in the same round (the rounds take the contenders in turn, so that
    /// this VM's slow phases hit them alike). Latency: each round's median over the raw
    /// atomic ping-pong's. Throughput: each run's rate over the raw ring's.
    ratio: f64,
    /// The contender that `ratio` is against.
    baseline: &'static str,
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn bench(_: BenchArgs) -> CmdResult {
    Err(
        "filemap bench needs Linux (channels and the baselines are Linux-only so far)"
            .to_owned()
            .into(),
    )
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn child(_: &Path, _: ChildArgs) -> CmdResult {
    Err("filemap bench-child needs Linux".to_owned().into())
}

#[cfg(target_os = "linux")]
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

#[cfg(target_os = "linux")]
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A bench child: this program, in `role`, on the second CPU.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Kid {
    fn spawn(root: &Path, role: &str, args: &[String]) -> Result<Kid, Failure> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let child = Command::new(exe)
            .arg("--root")
            .arg(root)
            .arg("bench-child")
            .arg(role)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting a benchmark process: {e}"))?;
        Ok(Kid(child))
    }

    /// Waits for the child's "ready" line.
    fn ready(&mut self) -> Result<(), Failure> {
        let out = self.0.stdout.as_mut().ok_or("no stdout".to_owned())?;
        let mut line = [0u8; 6];
        out.read_exact(&mut line)
            .map_err(|e| format!("the benchmark process did not start: {e}"))?;
        Ok(())
    }
}

fn median_and_tail(mut v: Vec<f64>, tail_is_high: bool) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    let tail = if tail_is_high {
        v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
    } else {
        v[0]
    };
    (median, tail)
}

/// Memory shared by the raw baselines: a flag word on its own cache line, then buffers.
#[cfg(target_os = "linux")]
struct Raw {
    view: filemap::View,
    _mapping: filemap::FileMapping,
}

#[cfg(target_os = "linux")]
const RAW_BUF: usize = 4096;
/// The raw ring's area: 128 KiB of slots, or as many slots of a stream frame's stride
/// (at most 144 KiB: 2,048 slots of 72 bytes).
#[cfg(target_os = "linux")]
const RAW_RING: usize = 3 * 65536;
#[cfg(target_os = "linux")]
const RAW_LEN: u64 = (RAW_BUF + RAW_RING) as u64;

#[cfg(target_os = "linux")]
impl Raw {
    fn create(opts: &Options, name: &str) -> Result<Raw, Failure> {
        let m = opts.create(name, RAW_LEN)?;
        let view = m.map_view(Access::ReadWrite, 0, 0)?;
        Ok(Raw { view, _mapping: m })
    }

    fn open(opts: &Options, name: &str) -> Result<Raw, Failure> {
        let m = opts.open(name, Access::ReadWrite)?;
        let view = m.map_view(Access::ReadWrite, 0, 0)?;
        Ok(Raw { view, _mapping: m })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < 16);
        // SAFETY: the view is page-aligned and at least RAW_LEN bytes long, so the word is
        // in bounds and aligned; every bit pattern is a valid AtomicU32; the view lives as
        // long as `self`.
        unsafe { &*self.view.as_ptr().cast::<AtomicU32>().add(i * 16) }
    }

    fn word64(&self, i: usize) -> &AtomicU64 {
        assert!(i < 8);
        // SAFETY: as in `word`, 8-aligned (offset 1024 + 128 i).
        unsafe { &*self.view.as_ptr().add(1024 + 128 * i).cast::<AtomicU64>() }
    }

    /// Copies `src` into buffer `which` (0 or 1) of 64 KiB.
    fn put(&self, which: usize, src: &[u8]) {
        assert!(src.len() <= 65536 && which < 2);
        // SAFETY: inside the view; the other side does not touch the buffer until the flag
        // says so (the flag's Release/Acquire orders the copies).
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                (self.view.as_ptr() as *mut u8).add(RAW_BUF + which * 65536),
                src.len(),
            )
        }
    }

    fn get(&self, which: usize, dst: &mut [u8]) {
        assert!(dst.len() <= 65536 && which < 2);
        // SAFETY: as in `put`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.view.as_ptr().add(RAW_BUF + which * 65536),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    /// The raw ring's slot at byte `off` of its area.
    fn slot(&self, off: usize) -> *mut u8 {
        assert!(off < RAW_RING);
        // SAFETY: inside the view.
        unsafe { (self.view.as_ptr() as *mut u8).add(RAW_BUF + off) }
    }
}

#[cfg(target_os = "linux")]
fn wait_for(word: &AtomicU32, want: u32, futex: bool) {
    loop {
        let v = word.load(Acquire);
        if v == want {
            return;
        }
        if futex {
            let _ =
                rustix::thread::futex::wait(word, rustix::thread::futex::Flags::empty(), v, None);
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(target_os = "linux")]
fn set_and_wake(word: &AtomicU32, v: u32, futex: bool) {
    word.store(v, Release);
    if futex {
        let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
    }
}

#[cfg(target_os = "linux")]
fn strategy(s: &str) -> WaitStrategy {
    match s {
        "busy" => WaitStrategy::BusyPoll,
        "park" => WaitStrategy::Park,
        _ => WaitStrategy::SpinThenPark,
    }
}

#[cfg(target_os = "linux")]
fn ready() {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"ready\n");
    let _ = out.flush();
}

#[cfg(target_os = "linux")]
pub(crate) fn child(root: &Path, a: ChildArgs) -> CmdResult {
    // Not `cpus() > 1`: this process inherits the parent's pinning to CPU 0, under which
    // the count is 1. On a one-CPU machine the call fails and changes nothing.
    pin(1);
    let mut opts = Options::new();
    opts.namespace(Namespace::at(root));
    let arg = |i: usize| a.args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<usize>().unwrap_or(0);
    match a.role.as_str() {
        // Echo every message of stream `ping` back on `pong`.
        "echo-filemap" => {
            let ping = opts.open_stream(&arg(0))?;
            let pong = opts.open_stream(&arg(1))?;
            let mut rx = ping.receiver()?;
            let mut tx = pong.sender()?;
            rx.set_wait_strategy(strategy(&arg(2)));
            tx.set_wait_strategy(strategy(&arg(2)));
            ready();
            let mut buf = Vec::with_capacity(65536);
            loop {
                buf.clear();
                match rx.recv() {
                    Ok(m) => m.append_to(&mut buf),
                    Err(filemap::Error::Disconnected { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                tx.send(&buf)?;
            }
        }
        // Echo through the raw shared buffers: wait for an odd flag, answer with the even.
        "echo-raw" => {
            let raw = Raw::open(&opts, &arg(0))?;
            let (size, futex) = (num(1), arg(2) == "futex");
            ready();
            let mut buf = vec![0u8; size];
            let flag = raw.word(0);
            let mut k = 1u32;
            loop {
                wait_for_any(flag, k, futex);
                if flag.load(Acquire) == u32::MAX {
                    return Ok(());
                }
                raw.get(0, &mut buf);
                raw.put(1, &buf);
                set_and_wake(flag, k + 1, futex);
                k += 2;
            }
        }
        "echo-stream" => {
            // Pipes (stdin/stdout) or a Unix socket at arg 1.
            let size = num(0);
            let mut buf = vec![0u8; size];
            if let Some(path) = a.args.get(1) {
                let mut s = std::os::unix::net::UnixStream::connect(path)
                    .map_err(|e| format!("connecting to {path}: {e}"))?;
                ready();
                while s.read_exact(&mut buf).is_ok() {
                    s.write_all(&buf).map_err(|e| e.to_string())?;
                }
            } else {
                let mut input = std::io::stdin().lock();
                let mut out = std::io::stdout().lock();
                while input.read_exact(&mut buf).is_ok() {
                    out.write_all(&buf).map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        // Send `count` messages of `size` bytes on stream arg 0: copied, zero-copy or batched.
        "produce-filemap" => {
            let s = opts.open_stream(&arg(0))?;
            let (size, count, mode) = (num(1), num(2), arg(3));
            let mut tx = s.sender()?;
            tx.set_wait_strategy(WaitStrategy::BusyPoll);
            ready();
            let payload = vec![7u8; size];
            match mode.as_str() {
                "zero" => {
                    for i in 0..count {
                        let mut loan = tx.loan(size)?;
                        loan.write_at(0, &(i as u64).to_le_bytes())?;
                        loan.commit();
                    }
                }
                "batch" => {
                    let mut sent = 0;
                    while sent < count {
                        let n = (count - sent).min(64);
                        sent += tx.send_all(std::iter::repeat_n(&payload[..], n))?;
                    }
                }
                "typed" => {
                    let value = [7u64; 8];
                    for _ in 0..count {
                        tx.send_value(&value)?;
                    }
                }
                _ => {
                    for _ in 0..count {
                        tx.send(&payload)?;
                    }
                }
            }
            Ok(())
        }
        // The raw ring: fixed slots of `size` bytes, head and tail words, busy polling.
        "produce-raw" => {
            let raw = Raw::open(&opts, &arg(0))?;
            let (size, count, stride, layout) = (num(1), num(2), num(3), num(4));
            let (framed, fixed) = (layout == 1, layout == 2);
            if fixed && size != 64 {
                return Err(
                    String::from("the raw ring's fixed-size copies are of 64 bytes").into(),
                );
            }
            ready();
            // A power of two (the sizes are): a mask, not a division, finds the slot (a
            // division per message cost this baseline 16% at 64 B; docs/BENCHMARKS.md).
            let mask = (2 * 65536 / size) as u64 - 1;
            let (head, tail) = (raw.word64(0), raw.word64(1));
            let payload = vec![7u8; size];
            let mut t = 0u64;
            let mut h = head.load(Acquire);
            for _ in 0..count {
                while t - h > mask {
                    std::hint::spin_loop();
                    h = head.load(Acquire);
                }
                let off = (t & mask) as usize * stride;
                if framed {
                    // SAFETY: the slot is inside the ring and free (the consumer is past
                    // it), its first 8 bytes aligned, and the payload fits after them.
                    unsafe {
                        raw.slot(off).cast::<u64>().write(size as u64);
                        std::ptr::copy_nonoverlapping(payload.as_ptr(), raw.slot(off + 8), size);
                    }
                } else if fixed {
                    // SAFETY: as below; `size` is 64 (checked above).
                    unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), raw.slot(off), 64) };
                } else {
                    // SAFETY: the slot is inside the ring and free (the consumer is past it).
                    unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), raw.slot(off), size) };
                }
                t += 1;
                tail.store(t, Release);
            }
            Ok(())
        }
        "produce-stream" => {
            let (size, count) = (num(0), num(1));
            let payload = vec![7u8; size];
            let mut w: Box<dyn Write> = if let Some(path) = a.args.get(2) {
                let s = std::os::unix::net::UnixStream::connect(path)
                    .map_err(|e| format!("connecting to {path}: {e}"))?;
                ready();
                Box::new(s)
            } else {
                Box::new(std::io::stdout().lock())
            };
            for _ in 0..count {
                w.write_all(&payload).map_err(|e| e.to_string())?;
            }
            w.flush().map_err(|e| e.to_string())?;
            Ok(())
        }
        other => Err(format!("unknown benchmark role {other}").into()),
    }
}

#[cfg(target_os = "linux")]
fn wait_for_any(flag: &AtomicU32, want: u32, futex: bool) {
    loop {
        let v = flag.load(Acquire);
        if v == want || v == u32::MAX {
            return;
        }
        if futex {
            let _ =
                rustix::thread::futex::wait(flag, rustix::thread::futex::Flags::empty(), v, None);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The benchmark's own namespace root (or socket), removed at the end.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.0).is_err() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn bench(a: BenchArgs) -> CmdResult {
    let root = Root(PathBuf::from(format!(
        "/dev/shm/filemap-bench-{}",
        std::process::id()
    )));
    let sock = Root(PathBuf::from(format!(
        "/tmp/filemap-bench-{}.sock",
        std::process::id()
    )));
    if cpus() > 1 {
        pin(0);
    }
    let mut opts = Options::new();
    opts.namespace(Namespace::at(&root.0));
    let runs = if a.quick { 3 } else { 7 };
    // Round trips per contender and round: about 20,000 in all (2,000 with --quick), and
    // about 500 (100) with the peer idle, a millisecond apart.
    let busy_samples = if a.quick { 700 } else { 3_000 };
    let idle_samples = if a.quick { 34 } else { 72 };
    let sizes = a.sizes();
    let mut rows = Vec::new();
    for &size in sizes.iter().filter(|_| a.runs(Part::Latency)) {
        let idle = Some(Duration::from_millis(1));
        let contenders = [
            (
                "raw atomic ping-pong + copies",
                Lat::Raw { futex: false },
                None,
            ),
            (
                "raw futex ping-pong + copies",
                Lat::Raw { futex: true },
                None,
            ),
            ("pipe", Lat::Pipe, None),
            ("Unix socket", Lat::Unix, None),
            ("filemap stream, busy-poll", Lat::Filemap("busy"), None),
            (
                "filemap stream, default (spin, then park)",
                Lat::Filemap("default"),
                None,
            ),
            ("raw futex ping-pong, idle", Lat::Raw { futex: true }, idle),
            (
                "filemap stream, default, idle",
                Lat::Filemap("default"),
                idle,
            ),
        ];
        // As for throughput: round by round, every contender in turn, in an order that
        // rotates, each with a new pair of processes. A ratio is the median over rounds of
        // the contender's median to its baseline's in the same round. A pair of processes,
        // or a stretch of a few hundred milliseconds, can run 2–4x slow here (on the AMD
        // EPYC, a 64 B raw ping-pong at 0.15–0.19 µs, or at 0.4–0.64), so a ratio from a
        // single pair could be off by 3x either way (docs/BENCHMARKS.md, 2026-11-29, late).
        // The idle rows' baseline is the raw futex ping-pong, idle (the first idle row);
        // the others' the raw atomic ping-pong (the first row).
        let first_idle = contenders.iter().position(|c| c.2.is_some()).unwrap_or(0);
        let baseline = |i: usize| {
            if contenders[i].2.is_some() {
                first_idle
            } else {
                0
            }
        };
        let mut samples = vec![Vec::new(); contenders.len()];
        let mut medians = vec![Vec::new(); contenders.len()];
        for round in 0..runs {
            for k in 0..contenders.len() {
                let i = (round + k) % contenders.len();
                let (_, contender, gap) = contenders[i];
                let n = if gap.is_some() {
                    idle_samples
                } else {
                    busy_samples
                };
                let mut v = latency(&opts, &root.0, &sock.0, contender, size, n, gap)?;
                medians[i].push(median_and_tail(v.clone(), true).0);
                samples[i].append(&mut v);
            }
        }
        for (i, v) in samples.into_iter().enumerate() {
            let base = baseline(i);
            let ratios = medians[i]
                .iter()
                .zip(&medians[base])
                .map(|(x, r)| x / r)
                .collect();
            let (ratio, _) = median_and_tail(ratios, false);
            let (median, tail) = median_and_tail(v, true);
            rows.push(Row {
                test: "latency",
                size,
                contender: contenders[i].0.into(),
                median,
                tail,
                ratio,
                baseline: contenders[base].0,
            });
        }
    }
    for &size in sizes.iter().filter(|_| a.runs(Part::Throughput)) {
        let count = match size {
            64 => 2_000_000,
            4096 => 200_000,
            _ => 20_000,
        } / if a.quick { 4 } else { 1 };
        let mut modes = vec![
            ("raw SPSC ring", Thr::Raw(Slots::Packed)),
            ("pipe", Thr::Pipe),
            ("Unix socket", Thr::Unix),
            ("filemap stream, copied", Thr::Filemap("copy")),
            ("filemap stream, zero-copy", Thr::Filemap("zero")),
        ];
        if size == 64 {
            modes.push(("filemap stream, batched (64)", Thr::Filemap("batch")));
            // The same raw ring with its slots a stream frame apart (an 8-byte header and
            // the payload), so that 64-byte messages cross cache lines as the stream's do:
            // what the frame format costs, apart from the code.
            modes.push((
                "raw SPSC ring, 72-byte slots (a stream frame's stride)",
                Thr::Raw(Slots::Strided),
            ));
            // And with a length in each slot, written and read: a frame without the rest
            // of a stream's work.
            modes.push((
                "raw SPSC ring, 72-byte slots with a length header",
                Thr::Raw(Slots::Framed),
            ));
            // Messages of a type: a stream's `send_value` and `recv_value` of `[u64; 8]`,
            // and the raw ring whose copies also know their size when compiling.
            modes.push((
                "filemap stream, typed (`[u64; 8]` values)",
                Thr::Filemap("typed"),
            ));
            modes.push((
                "raw SPSC ring, size known when compiling",
                Thr::Raw(Slots::Fixed),
            ));
        }
        // Round by round, every contender in turn: a slow phase of the machine then costs
        // every contender alike, and each run is compared with the raw ring's in its round.
        // The order rotates from round to round, so that no contender always runs right
        // after the pipe and the socket (whose runs left the next one's 4 KiB rate about
        // 20% lower; docs/BENCHMARKS.md, 2026-11-28).
        let mut results = vec![Vec::new(); modes.len()];
        for round in 0..runs {
            for k in 0..modes.len() {
                let i = (round + k) % modes.len();
                let r = throughput(&opts, &root.0, &sock.0, modes[i].1, size, count)?;
                results[i].push(r);
            }
        }
        let raw = results[0].clone();
        for (v, &(label, _)) in results.into_iter().zip(&modes) {
            let ratios = v.iter().zip(&raw).map(|(x, r)| x / r).collect();
            let (ratio, _) = median_and_tail(ratios, false);
            let (median, tail) = median_and_tail(v, false);
            rows.push(Row {
                test: "throughput",
                size,
                contender: label.into(),
                median,
                tail,
                ratio,
                baseline: modes[0].0,
            });
        }
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "test": r.test, "size": r.size, "contender": r.contender,
                    "median": r.median, "tail": r.tail, "ratio": r.ratio,
                    "baseline": r.baseline,
                    "unit": if r.test == "latency" { "us per round trip (tail: p99)" }
                        else { "million messages per second (tail: slowest run)" },
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(v));
    } else {
        print_tables(&rows);
    }
    Ok(())
}

/// Receives `n` messages, copying the start of each into `buf`: the copied and zero-copy
/// consumers' loop. In a function of its own that returns filemap's `Result`, as an
/// application's receive loop should be: where `?` converts the error into another type
/// (the CLI's) while the message lives, the compiler keeps every message in memory for the
/// unwinding, which cost a 64 B receive 6.3 ns against 4.7 in one thread (before
/// 2026-11-30 this bench's loops did; docs/BENCHMARKS.md).
#[cfg(target_os = "linux")]
#[inline(never)]
fn drain(rx: &mut filemap::Receiver, buf: &mut [u8], n: usize) -> filemap::Result<()> {
    for _ in 0..n {
        rx.recv()?.read_at(0, buf)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn print_tables(rows: &[Row]) {
    for size in SIZES {
        let lat: Vec<&Row> = rows
            .iter()
            .filter(|r| r.test == "latency" && r.size == size)
            .collect();
        if lat.is_empty() {
            continue;
        }
        outln!("### Round trip, {size} B (median and p99 of every round's round trips; ratio: median of the rounds' medians over the baseline's in the same round)\n");
        outln!("| contender | median µs | p99 µs | ratio | baseline |");
        outln!("|---|---:|---:|---:|---|");
        for r in &lat {
            outln!(
                "| {} | {:.2} | {:.2} | {:.2}x | {} |",
                r.contender,
                r.median,
                r.tail,
                r.ratio,
                r.baseline
            );
        }
        outln!();
    }
    for size in SIZES {
        let thr: Vec<&Row> = rows
            .iter()
            .filter(|r| r.test == "throughput" && r.size == size)
            .collect();
        if thr.is_empty() {
            continue;
        }
        outln!("### One way, {size} B messages (median and slowest run; ratio: median of the runs' ratios to the raw ring's run in the same round)\n");
        outln!("| contender | median M msg/s | GB/s | slowest M msg/s | / raw ring |");
        outln!("|---|---:|---:|---:|---:|");
        for r in &thr {
            outln!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2}x |",
                r.contender,
                r.median,
                r.median * size as f64 / 1e3,
                r.tail,
                r.ratio
            );
        }
        outln!();
    }
}

#[derive(Clone, Copy)]
enum Lat {
    Raw { futex: bool },
    Pipe,
    Unix,
    Filemap(&'static str),
}

#[derive(Clone, Copy)]
enum Thr {
    Raw(Slots),
    Pipe,
    Unix,
    Filemap(&'static str),
}

/// How the raw ring lays out its messages.
#[derive(Clone, Copy, PartialEq)]
enum Slots {
    /// Fixed slots of the message's size.
    Packed,
    /// Slots a stream frame apart (8 bytes more, the payload rounded up to 8), so that
    /// 64-byte messages cross cache lines as the stream's do.
    Strided,
    /// As `Strided`, with each message's length written in those 8 bytes and read back
    /// by the consumer, which copies that many: the least that a ring of messages of any
    /// size does.
    Framed,
    /// As `Packed`, for 64-byte messages, with the size known when compiling (a few moves
    /// per copy, not a call to `memcpy`), as a typed channel's is.
    Fixed,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!("Local\\bench-{tag}-{}", SEQ.fetch_add(1, Relaxed))
}

/// Microseconds per round trip, one per sample, after a warm-up; `gap` between them.
#[cfg(target_os = "linux")]
fn latency(
    opts: &Options,
    root: &Path,
    sock: &Path,
    contender: Lat,
    size: usize,
    samples: usize,
    gap: Option<Duration>,
) -> Result<Vec<f64>, Failure> {
    let payload = vec![1u8; size];
    let mut back = vec![0u8; size];
    let warm = if gap.is_some() { 20 } else { 1000 };
    let mut out = Vec::with_capacity(samples);
    let time = |out: &mut Vec<f64>, mut one: Box<dyn FnMut() -> Result<(), Failure> + '_>| {
        for i in 0..warm + samples {
            if let Some(g) = gap {
                std::thread::sleep(g);
            }
            let t = Instant::now();
            one()?;
            if i >= warm {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok::<(), Failure>(())
    };
    match contender {
        Lat::Raw { futex } => {
            let name = unique("raw");
            let raw = Raw::create(opts, &name)?;
            let how = if futex { "futex" } else { "spin" };
            let mut kid = Kid::spawn(root, "echo-raw", &[name, size.to_string(), how.into()])?;
            kid.ready()?;
            let flag = raw.word(0);
            let mut k = 1u32;
            time(
                &mut out,
                Box::new(|| {
                    raw.put(0, &payload);
                    set_and_wake(flag, k, futex);
                    wait_for(flag, k + 1, futex);
                    raw.get(1, &mut back);
                    k += 2;
                    Ok(())
                }),
            )?;
            set_and_wake(flag, u32::MAX, futex);
            let _ = kid.0.wait();
        }
        Lat::Pipe => {
            let mut kid = Kid::spawn(root, "echo-stream", &[size.to_string()])?;
            let mut w = kid.0.stdin.take().ok_or("no stdin".to_owned())?;
            let mut r = kid.0.stdout.take().ok_or("no stdout".to_owned())?;
            time(
                &mut out,
                Box::new(|| {
                    w.write_all(&payload).map_err(|e| e.to_string())?;
                    r.read_exact(&mut back).map_err(|e| e.to_string())?;
                    Ok(())
                }),
            )?;
        }
        Lat::Unix => {
            let _ = std::fs::remove_file(sock);
            let listener = std::os::unix::net::UnixListener::bind(sock)
                .map_err(|e| format!("binding {}: {e}", sock.display()))?;
            let path = sock.display().to_string();
            let mut kid = Kid::spawn(root, "echo-stream", &[size.to_string(), path])?;
            let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
            kid.ready()?;
            time(
                &mut out,
                Box::new(|| {
                    s.write_all(&payload).map_err(|e| e.to_string())?;
                    s.read_exact(&mut back).map_err(|e| e.to_string())?;
                    Ok(())
                }),
            )?;
            drop(s);
            let _ = kid.0.wait();
        }
        Lat::Filemap(mode) => {
            let (ping_name, pong_name) = (unique("ping"), unique("pong"));
            let ping = opts.create_stream(&ping_name, 1 << 18, 65536)?;
            let pong = opts.create_stream(&pong_name, 1 << 18, 65536)?;
            let mut tx = ping.sender()?;
            let mut rx = pong.receiver()?;
            tx.set_wait_strategy(strategy(mode));
            rx.set_wait_strategy(strategy(mode));
            let args = [ping_name, pong_name, mode.to_owned()];
            let mut kid = Kid::spawn(root, "echo-filemap", &args)?;
            kid.ready()?;
            time(
                &mut out,
                Box::new(|| {
                    tx.send(&payload)?;
                    rx.recv()?.read_at(0, &mut back)?;
                    Ok(())
                }),
            )?;
            drop(tx);
            let _ = kid.0.wait();
        }
    }
    Ok(out)
}

/// Million messages per second, one way, counted at the receiver from its first message.
#[cfg(target_os = "linux")]
fn throughput(
    opts: &Options,
    root: &Path,
    sock: &Path,
    contender: Thr,
    size: usize,
    count: usize,
) -> Result<f64, Failure> {
    let mut buf = vec![0u8; size];
    let args = |extra: &[String]| -> Vec<String> {
        let mut v = extra.to_vec();
        v.extend([size.to_string(), count.to_string()]);
        v
    };
    let start;
    match contender {
        Thr::Raw(slots) => {
            let name = unique("ring");
            let raw = Raw::create(opts, &name)?;
            // A stream frame's stride: the payload rounded up to 8 bytes, and the header.
            let stride = match slots {
                Slots::Packed | Slots::Fixed => size,
                Slots::Strided | Slots::Framed => size.next_multiple_of(8) + 8,
            };
            let (framed, fixed) = (slots == Slots::Framed, slots == Slots::Fixed);
            if fixed && size != 64 {
                return Err(
                    String::from("the raw ring's fixed-size copies are of 64 bytes").into(),
                );
            }
            let mut kid = Kid::spawn(root, "produce-raw", &{
                let mut v = args(&[name]);
                v.push(stride.to_string());
                v.push(
                    match slots {
                        Slots::Framed => "1",
                        Slots::Fixed => "2",
                        Slots::Packed | Slots::Strided => "0",
                    }
                    .to_string(),
                );
                v
            })?;
            kid.ready()?;
            let mask = (2 * 65536 / size) as u64 - 1;
            let (head, tail) = (raw.word64(0), raw.word64(1));
            let mut h = 0u64;
            let mut t = 0u64;
            let mut first = None;
            while h < count as u64 {
                while t == h {
                    std::hint::spin_loop();
                    t = tail.load(Acquire);
                }
                first.get_or_insert_with(Instant::now);
                while h < t {
                    let off = (h & mask) as usize * stride;
                    if framed {
                        // SAFETY: the slot is published (tail is past it) and inside the
                        // ring, its first 8 bytes aligned (strides are multiples of 8); the
                        // copy is of at most the slot's payload.
                        unsafe {
                            let len = raw.slot(off).cast::<u64>().read() as usize;
                            let len = len.min(size);
                            std::ptr::copy_nonoverlapping(raw.slot(off + 8), buf.as_mut_ptr(), len);
                        }
                    } else if fixed {
                        // SAFETY: as below; `size` is 64 (checked above), and so is `buf`.
                        unsafe {
                            std::ptr::copy_nonoverlapping(raw.slot(off), buf.as_mut_ptr(), 64)
                        };
                    } else {
                        // SAFETY: the slot is published (tail is past it) and inside the ring.
                        unsafe {
                            std::ptr::copy_nonoverlapping(raw.slot(off), buf.as_mut_ptr(), size)
                        };
                    }
                    h += 1;
                    head.store(h, Release);
                }
            }
            start = first.unwrap_or_else(Instant::now);
            let _ = kid.0.wait();
        }
        Thr::Pipe | Thr::Unix => {
            let (mut kid, mut r): (Kid, Box<dyn Read>) = if let Thr::Unix = contender {
                let _ = std::fs::remove_file(sock);
                let listener = std::os::unix::net::UnixListener::bind(sock)
                    .map_err(|e| format!("binding {}: {e}", sock.display()))?;
                let mut a = args(&[]);
                a.push(sock.display().to_string());
                let kid = Kid::spawn(root, "produce-stream", &a)?;
                let (s, _) = listener.accept().map_err(|e| e.to_string())?;
                (kid, Box::new(s))
            } else {
                let mut kid = Kid::spawn(root, "produce-stream", &args(&[]))?;
                let out = kid.0.stdout.take().ok_or("no stdout".to_owned())?;
                (kid, Box::new(out))
            };
            if let Thr::Unix = contender {
                kid.ready()?;
            }
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            start = Instant::now();
            for _ in 1..count {
                r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            }
            let _ = kid.0.wait();
        }
        Thr::Filemap(mode) => {
            let name = unique("thr");
            // 512 KiB (the raw ring has 128 KiB): with a ring the size of this CPU's L2
            // (1 MiB), about one run in seven of 4 KiB copies ran at half speed for the
            // whole run (docs/BENCHMARKS.md, 2026-11-28); at 512 KiB none did. 64 B and
            // 64 KiB measure the same with either.
            let s = opts.create_stream(&name, 1 << 19, 65536)?;
            let mut rx = s.receiver()?;
            rx.set_wait_strategy(WaitStrategy::BusyPoll);
            let mut kid = Kid::spawn(root, "produce-filemap", &{
                let mut v = args(&[name]);
                v.push(mode.to_owned());
                v
            })?;
            kid.ready()?;
            // The clock starts at the first message, as for the raw ring; each mode has a
            // loop of its own, so that no message pays for telling the modes apart.
            let mut word = [0u8; 8];
            // A batch's copies keep their first error here (`let _ =` on each result would
            // call the error's drop for every message: it is not inlined).
            let mut failed = None;
            let mut got = match mode {
                "batch" => rx.recv_batch(256, |m| {
                    if let Err(e) = m.read_at(0, &mut buf) {
                        failed = Some(e);
                    }
                })?,
                _ => {
                    rx.recv()?.read_at(0, &mut word)?;
                    1
                }
            };
            start = Instant::now();
            match mode {
                "zero" => drain(&mut rx, &mut word, count - got)?,
                "batch" => {
                    while got < count {
                        got += rx.recv_batch(256, |m| {
                            if let Err(e) = m.read_at(0, &mut buf) {
                                failed = Some(e);
                            }
                        })?;
                    }
                    if let Some(e) = failed {
                        return Err(e.into());
                    }
                }
                "typed" => {
                    let mut x = 0;
                    for _ in got..count {
                        // Every word: with only one used, the compiler may copy only that
                        // one.
                        x ^= rx.recv_value::<[u64; 8]>()?.iter().fold(0, |a, w| a ^ w);
                    }
                    std::hint::black_box(x);
                }
                _ => drain(&mut rx, &mut buf, count - got)?,
            }
            let _ = kid.0.wait();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((count - 1) as f64 / secs / 1e6)
}
