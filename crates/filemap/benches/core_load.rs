//! Whether this core is being shared right now: a check to run before trusting a benchmark
//! on a VM, and beside one to tell its slow stretches apart.
//!
//! `cargo bench -p filemap --bench core_load [SECONDS]` (default 20) times two loops on
//! CPU 0 again and again and prints their spread:
//! - **chain:** a multiply and a rotate, each step waiting for the last. Its time depends
//!   on the clock only.
//! - **wide:** six additions per step that depend on one another only across steps. Its
//!   time depends on how many instructions the core can issue for this thread.
//!
//! If chain holds steady while wide slows down, the clock did not change, but the core's
//! issue slots and buffers were shared, most likely with another guest's thread on its
//! sibling hyperthread. Such stretches are the likeliest cause of the slow phase in which
//! `hot_path`'s stream rows take half as long again while its raw ring loses a tenth to a
//! quarter (docs/BENCHMARKS.md, 2026-11-29, "What the slow phase is").
// A benchmark's report may panic on a closed stdout.
#![allow(clippy::disallowed_macros)]

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Six additions that depend on one another only across steps.
#[inline(never)]
fn wide(n: u32) -> u64 {
    let [mut a, mut b, mut c, mut d, mut e, mut f] = black_box([1u64, 2, 3, 4, 5, 6]);
    for _ in 0..n {
        a = a.wrapping_add(b ^ 1);
        b = b.wrapping_add(c ^ 3);
        c = c.wrapping_add(d ^ 5);
        d = d.wrapping_add(e ^ 7);
        e = e.wrapping_add(f ^ 9);
        f = f.wrapping_add(a ^ 11);
    }
    a ^ b ^ c ^ d ^ e ^ f
}

/// A multiply and a rotate, each step waiting for the last.
#[inline(never)]
fn chain(n: u32) -> u64 {
    let mut a = black_box(1u64);
    for _ in 0..n {
        a = a.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(7);
    }
    a
}

/// Nanoseconds per step of `f` over `n` steps.
fn per_step(f: fn(u32) -> u64, n: u32) -> f64 {
    let t = Instant::now();
    black_box(f(black_box(n)));
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The value at fraction `q` of sorted `v`.
fn at(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q) as usize]
}

fn main() {
    #[cfg(target_os = "linux")]
    {
        let mut set = rustix::thread::CpuSet::new();
        set.set(0);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
    // `cargo bench` passes `--bench`; a number is the duration.
    let secs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut chains, mut wides) = (Vec::new(), Vec::new());
    while Instant::now() < end {
        chains.push(per_step(chain, 2_000_000));
        wides.push(per_step(wide, 2_000_000));
    }
    println!("| loop | samples | min | median | p90 | max | samples over 1.3x min |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, v) in [
        ("chain (clock-bound)", &mut chains),
        ("wide (issue-bound)", &mut wides),
    ] {
        v.sort_by(f64::total_cmp);
        let over = v.iter().filter(|&&x| x > 1.3 * v[0]).count();
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0}% |",
            v.len(),
            v[0],
            at(v, 0.5),
            at(v, 0.9),
            at(v, 1.0),
            100.0 * over as f64 / v.len() as f64
        );
    }
    println!("\n(ns per step; pinned to CPU 0)");
}
