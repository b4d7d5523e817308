//! Benchmarks with their baselines, measured side by side in one run.
//!
//! `cargo bench -p filemap --bench cycle` prints a Markdown table for docs/BENCHMARKS.md.
//!
//! 1. Lifecycle: create + map + unmap + close of a 64 KiB mapping, against raw
//!    `shm_open`/`ftruncate`/`mmap`/`munmap`/`close`/`shm_unlink`, and against the same
//!    raw sequence with `posix_fallocate` instead of `ftruncate` (filemap reserves the
//!    storage, so this is the like-for-like baseline).
//!    The same three again with every page written once, as any real use of the memory
//!    does: raw `ftruncate` then pays for the pages at the first touch, and filemap has
//!    already paid for them in `posix_fallocate`.
//!    And for small objects (4 KiB): the create cycle against the raw `posix_fallocate`
//!    sequence, and an attach cycle (open + map + unmap + close of a live object) against
//!    raw `shm_open` + `mmap` + `munmap` + `close`.
//! 2. Large mappings: create + map + write the first 64 KiB + unmap + close of 1 GiB, reserved
//!    and sparse ([`Options::sparse`]), against the raw sequence with `posix_fallocate`
//!    and with `ftruncate`.
//! 3. Copies: `View::read_at`/`write_at` against `memcpy` (`ptr::copy_nonoverlapping`)
//!    on the same mapped memory.
//!
//! Rounds alternate between the contenders, and medians over rounds are reported, because
//! these machines are noisy.
// A benchmark's report may panic on a closed stdout; the CLI's rule does not apply.
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
    use super::common::{self, median, RemoveOnDrop};
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use filemap::{Access, Namespace, Options};
    use rustix::fs::{FallocateFlags, Mode};
    use rustix::mm::{MapFlags, ProtFlags};
    use rustix::shm;

    const SIZE: usize = 64 * 1024;

    /// Nanoseconds per iteration of `f`, over `iters` iterations.
    fn time_per_iter(iters: u32, mut f: impl FnMut(u32)) -> f64 {
        let start = Instant::now();
        for i in 0..iters {
            f(i);
        }
        start.elapsed().as_nanos() as f64 / f64::from(iters)
    }

    fn raw_cycle(name: &str, reserve: bool, touch: bool) {
        raw_sized(name, SIZE, reserve, touch)
    }

    fn raw_sized(name: &str, size: usize, reserve: bool, touch: bool) {
        let fd = shm::open(
            name,
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        if reserve {
            rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, size as u64).unwrap();
        } else {
            rustix::fs::ftruncate(&fd, size as u64).unwrap();
        }
        map_unmap(&fd, size, touch);
        drop(fd);
        shm::unlink(name).unwrap();
    }

    /// Open an existing object, map it, unmap, close.
    fn raw_attach(name: &str, size: usize) {
        let fd = shm::open(name, shm::OFlags::RDWR, Mode::empty()).unwrap();
        map_unmap(&fd, size, false);
    }

    /// Maps `size` bytes of `fd` shared, writes a byte in each of the first 64 KiB's pages
    /// if `touch`, and unmaps.
    fn map_unmap(fd: &rustix::fd::OwnedFd, size: usize, touch: bool) {
        // SAFETY: a fresh shared mapping of a file of at least `size` bytes, which nothing
        // else in this process uses; the writes stay inside it; unmapped right away.
        unsafe {
            let p = rustix::mm::mmap(
                std::ptr::null_mut(),
                size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
            .unwrap();
            black_box(p);
            if touch {
                for page in (0..size.min(SIZE)).step_by(4096) {
                    p.cast::<u8>().add(page).write_volatile(1);
                }
            }
            rustix::mm::munmap(p, size).unwrap();
        }
    }

    fn filemap_attach(opts: &Options, name: &str) {
        let m = opts.open(name, Access::ReadWrite).unwrap();
        let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
        black_box(v.as_ptr());
    }

    fn filemap_cycle(opts: &Options, name: &str, touch: bool) {
        filemap_sized(opts, name, SIZE, touch)
    }

    fn filemap_sized(opts: &Options, name: &str, size: usize, touch: bool) {
        let m = opts.create(name, size as u64).unwrap();
        let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
        black_box(v.as_ptr());
        if touch {
            for page in (0..size.min(SIZE)).step_by(4096) {
                v.write_at(page, &[1]).unwrap();
            }
        }
        drop(v);
        drop(m);
    }

    pub(super) fn main() {
        let root = common::shm_root("cycle");
        let mut opts = Options::new();
        opts.namespace(Namespace::at(&root));
        let raw_name = format!("/filemap-bench-raw-{}", std::process::id());
        // Removed last, also when a panic (a closed stdout, say) unwinds.
        let _cleanup = RemoveOnDrop(vec![
            root.clone(),
            std::path::PathBuf::from(format!("/dev/shm{raw_name}")),
        ]);
        let rounds = 21;
        let iters = 1000;

        // Warm up every path (namespace directories, page cache, CPU frequency).
        for touch in [false, true] {
            for _ in 0..500 {
                raw_cycle(&raw_name, false, touch);
                raw_cycle(&raw_name, true, touch);
                filemap_cycle(&opts, "Local\\bench", touch);
            }
            let (mut raw, mut raw_res, mut fm) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                raw.push(time_per_iter(iters, |_| raw_cycle(&raw_name, false, touch)));
                raw_res.push(time_per_iter(iters, |_| raw_cycle(&raw_name, true, touch)));
                fm.push(time_per_iter(iters, |_| {
                    filemap_cycle(&opts, "Local\\bench", touch)
                }));
            }
            let (raw, raw_res, fm) = (median(raw), median(raw_res), median(fm));

            let what = if touch {
                "create + map + write one byte per page + unmap + close"
            } else {
                "create + map + unmap + close"
            };
            println!("### Lifecycle: {what}, 64 KiB ({rounds} rounds x {iters}, median)\n");
            println!("| contender | µs per cycle | filemap / contender |");
            println!("|---|---:|---:|");
            println!(
                "| raw shm_open + ftruncate + mmap + munmap + close + shm_unlink | {:.2} | {:.2}x |",
                raw / 1e3,
                fm / raw
            );
            println!(
                "| raw, with posix_fallocate instead of ftruncate | {:.2} | {:.2}x |",
                raw_res / 1e3,
                fm / raw_res
            );
            println!(
                "| filemap create + map_view + drop view + drop mapping | {:.2} | 1.00x |\n",
                fm / 1e3
            );
        }

        // Small objects: create and attach cycles of 4 KiB.
        {
            let small = 4096;
            let attach_raw = format!("{raw_name}-attach");
            let _keep_raw = RemoveOnDrop(vec![std::path::PathBuf::from(format!(
                "/dev/shm{attach_raw}"
            ))]);
            let held_raw = shm::open(
                attach_raw.as_str(),
                shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
                Mode::from_raw_mode(0o600),
            )
            .unwrap();
            rustix::fs::fallocate(&held_raw, FallocateFlags::empty(), 0, small as u64).unwrap();
            let held = opts.create("Local\\held", small as u64).unwrap();
            for _ in 0..500 {
                raw_sized(&raw_name, small, true, false);
                filemap_sized(&opts, "Local\\small", small, false);
                raw_attach(&attach_raw, small);
                filemap_attach(&opts, "Local\\held");
            }
            let (mut rc, mut fc, mut ra, mut fa) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                rc.push(time_per_iter(iters, |_| {
                    raw_sized(&raw_name, small, true, false)
                }));
                fc.push(time_per_iter(iters, |_| {
                    filemap_sized(&opts, "Local\\small", small, false)
                }));
                ra.push(time_per_iter(iters, |_| raw_attach(&attach_raw, small)));
                fa.push(time_per_iter(iters, |_| {
                    filemap_attach(&opts, "Local\\held")
                }));
            }
            let (rc, fc, ra, fa) = (median(rc), median(fc), median(ra), median(fa));
            println!("### Small objects, 4 KiB ({rounds} rounds x {iters}, median)\n");
            println!("| cycle | raw µs | filemap µs | filemap / raw |");
            println!("|---|---:|---:|---:|");
            println!(
                "| create + map + unmap + close (raw: shm_open + posix_fallocate + mmap + munmap + close + shm_unlink) | {:.2} | {:.2} | {:.2}x |",
                rc / 1e3,
                fc / 1e3,
                fc / rc
            );
            println!(
                "| attach a live object: open + map + unmap + close (raw: shm_open + mmap + munmap + close) | {:.2} | {:.2} | {:.2}x |\n",
                ra / 1e3,
                fa / 1e3,
                fa / ra
            );
            drop((held, held_raw));
        }

        // Large mappings: reserving 1 GiB against leaving it sparse, one page touched.
        let gib = 1usize << 30;
        let mut sparse = opts.clone();
        sparse.sparse(true);
        let (big_rounds, sparse_iters) = (11, 100);
        let (mut raw_res, mut raw_sp, mut fm_res, mut fm_sp) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..=big_rounds {
            let a = time_per_iter(1, |_| raw_sized(&raw_name, gib, true, true));
            let b = time_per_iter(sparse_iters, |_| raw_sized(&raw_name, gib, false, true));
            let c = time_per_iter(1, |_| filemap_sized(&opts, "Local\\big", gib, true));
            let d = time_per_iter(sparse_iters, |_| {
                filemap_sized(&sparse, "Local\\big", gib, true)
            });
            // The first round warms up.
            if round > 0 {
                raw_res.push(a);
                raw_sp.push(b);
                fm_res.push(c);
                fm_sp.push(d);
            }
        }
        let (raw_res, raw_sp, fm_res, fm_sp) = (
            median(raw_res),
            median(raw_sp),
            median(fm_res),
            median(fm_sp),
        );
        println!("### Large mappings: create + map + write the first 64 KiB + unmap + close, 1 GiB ({big_rounds} rounds, median; sparse rows x {sparse_iters})\n");
        println!("| contender | µs per cycle | filemap / raw |");
        println!("|---|---:|---:|");
        println!(
            "| raw shm_open + posix_fallocate + mmap + ... | {:.0} | |",
            raw_res / 1e3
        );
        println!(
            "| filemap create (reserved, the default) | {:.0} | {:.2}x |",
            fm_res / 1e3,
            fm_res / raw_res
        );
        println!(
            "| raw shm_open + ftruncate + mmap + ... | {:.1} | |",
            raw_sp / 1e3
        );
        println!(
            "| filemap create with Options::sparse(true) | {:.1} | {:.2}x |\n",
            fm_sp / 1e3,
            fm_sp / raw_sp
        );
        println!(
            "A sparse 1 GiB create is {:.0}x faster than a reserved one.\n",
            fm_res / fm_sp
        );

        // Copies through a view against memcpy on the same mapping.
        let big = 4 << 20;
        let m = opts.create("Local\\bench-copy", big as u64).unwrap();
        let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
        let p = v.as_mut_ptr().unwrap();
        println!("### Copies: View::read_at / write_at against memcpy on the same mapped memory ({rounds} rounds, median)\n");
        println!("| size | memcpy in GB/s | write_at GB/s | write_at / memcpy | memcpy out GB/s | read_at GB/s | read_at / memcpy |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for size in [64usize, 4096, 1 << 20] {
            let src = vec![0xa5u8; size];
            let mut dst = vec![0u8; size];
            let n = ((64 << 20) / size).clamp(16, 200_000) as u32;
            let span = big / size;
            let (mut mi, mut wa, mut mo, mut ra) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                // SAFETY: every offset is inside the 4 MiB view; nobody else uses it.
                mi.push(time_per_iter(n, |i| unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        p.add((i as usize % span) * size),
                        size,
                    )
                }));
                wa.push(time_per_iter(n, |i| {
                    v.write_at((i as usize % span) * size, &src).unwrap()
                }));
                // SAFETY: as above.
                mo.push(time_per_iter(n, |i| unsafe {
                    std::ptr::copy_nonoverlapping(
                        p.add((i as usize % span) * size),
                        dst.as_mut_ptr(),
                        size,
                    )
                }));
                black_box(&dst);
                ra.push(time_per_iter(n, |i| {
                    v.read_at((i as usize % span) * size, &mut dst).unwrap()
                }));
                black_box(&dst);
            }
            let gbps = |ns: f64| size as f64 / ns;
            let (mi, wa, mo, ra) = (median(mi), median(wa), median(mo), median(ra));
            println!(
                "| {} | {:.2} | {:.2} | {:.0}% | {:.2} | {:.2} | {:.0}% |",
                human(size),
                gbps(mi),
                gbps(wa),
                100.0 * mi / wa,
                gbps(mo),
                gbps(ra),
                100.0 * mo / ra
            );
        }
        drop(v);
        drop(m);
        let _ = std::fs::remove_dir_all(&root);
        let _ = Duration::ZERO;
    }

    fn human(n: usize) -> String {
        match n {
            n if n >= 1 << 20 => format!("{} MiB", n >> 20),
            n if n >= 1 << 10 => format!("{} KiB", n >> 10),
            n => format!("{n} B"),
        }
    }
}
