//! Synchronization benchmarks with their baselines, measured side by side in one run.
//!
//! `cargo bench -p filemap --bench sync` prints Markdown tables for docs/BENCHMARKS.md.
//!
//! 1. Uncontended lock + unlock in one process: filemap's `Mutex` against a raw
//!    process-shared pthread mutex (robust and recursive, robust, and plain).
//! 2. Cross-process round trips between two processes (this binary re-run as the peer):
//!    a raw futex ping-pong (the baseline), an auto-reset event ping-pong, a semaphore
//!    ping-pong, and a mutex hand-off (filemap's and a raw robust pthread mutex, with the
//!    same protocol).
//! 3. Two processes contending: both lock, bump a shared counter and unlock as fast as
//!    they can, filemap's `Mutex` against a raw robust pthread mutex.
//! 4. Owner death: the time from `kill(owner, SIGKILL)` to a waiter in another process
//!    holding the mutex as abandoned, filemap's against a raw robust pthread mutex's
//!    `EOWNERDEAD`.
//!
//! Round trips are measured with both processes on one core, on two different cores, and
//! where the scheduler puts them, each against its own futex baseline: on virtual machines
//! a cross-core wake-up can cost several times a same-core one, and varies a lot.
//!
//! Medians over alternating rounds; ratios against the baseline of the same run.
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
    use super::common::{self, median, RemoveOnDrop};
    use std::hint::black_box;
    use std::process::{Child, Command};
    use std::sync::atomic::{
        AtomicU32,
        Ordering::{Relaxed, SeqCst},
    };
    use std::time::Instant;

    use filemap::{Access, Namespace, Options, View};
    use rustix::thread::futex;

    const ROLE: &str = "FILEMAP_BENCH_ROLE";
    const ROUND_TRIPS: u32 = 5_000;
    const ROUNDS: usize = 11;

    // Offsets in the shared control page.
    const READY: usize = 0;
    const GO: usize = 4;
    const WORD: usize = 8;
    const QUEUED_A: usize = 12;
    const QUEUED_B: usize = 16;
    const ACQUIRED: usize = 20;
    const COUNTER: usize = 24;
    const DONE_A: usize = 28;
    const DONE_B: usize = 32;
    const OWNER_PID: usize = 36;
    const RAW_MUTEX: usize = 64;

    fn opts() -> Options {
        let mut o = Options::new();
        o.namespace(Namespace::new());
        o
    }

    fn word(v: &View, offset: usize) -> &AtomicU32 {
        v.atomic_u32(offset).unwrap()
    }

    /// Spins briefly, then yields, so that a peer on the same core gets to run.
    fn spin_until(w: &AtomicU32, value: u32) {
        let mut spins = 0u32;
        while w.load(SeqCst) != value {
            if spins < 100 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// A raw process-shared pthread mutex at RAW_MUTEX in the control page.
    fn raw_mutex_init(v: &View, robust: bool, recursive: bool) -> *mut libc::pthread_mutex_t {
        const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= 64);
        // SAFETY: RAW_MUTEX + 64 is inside the 4096-byte view, and 8-aligned.
        let m = unsafe { v.as_mut_ptr().unwrap().add(RAW_MUTEX) }.cast();
        // SAFETY: attr is initialised by pthread_mutexattr_init before use; m points at 64
        // unused, aligned bytes of the shared page that no one else touches before the peer
        // starts.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            if robust {
                assert_eq!(
                    libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                    0
                );
            }
            if recursive {
                assert_eq!(
                    libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_RECURSIVE),
                    0
                );
            }
            assert_eq!(libc::pthread_mutex_init(m, &attr), 0);
            libc::pthread_mutexattr_destroy(&mut attr);
        }
        m
    }

    fn raw_mutex(v: &View) -> *mut libc::pthread_mutex_t {
        // SAFETY: RAW_MUTEX + 64 is inside the 4096-byte view.
        unsafe { v.as_mut_ptr().unwrap().add(RAW_MUTEX) }.cast()
    }

    /// Locks a raw robust mutex; `true` if its owner had died (and it was made
    /// consistent).
    fn raw_lock(m: *mut libc::pthread_mutex_t) -> bool {
        // SAFETY: an initialised process-shared mutex in a live shared mapping.
        match unsafe { libc::pthread_mutex_lock(m) } {
            0 => false,
            // SAFETY: as above; EOWNERDEAD means we hold it.
            libc::EOWNERDEAD => unsafe { libc::pthread_mutex_consistent(m) == 0 },
            e => panic!("pthread_mutex_lock: {e}"),
        }
    }

    fn raw_unlock(m: *mut libc::pthread_mutex_t) {
        // SAFETY: as above; held by this thread.
        assert_eq!(unsafe { libc::pthread_mutex_unlock(m) }, 0);
    }

    fn futex_wait_for(w: &AtomicU32, value: u32) {
        loop {
            let cur = w.load(SeqCst);
            if cur == value {
                return;
            }
            let _ = futex::wait(w, futex::Flags::empty(), cur, None);
        }
    }

    fn futex_set(w: &AtomicU32, value: u32) {
        w.store(value, SeqCst);
        let _ = futex::wake(w, futex::Flags::empty(), 1);
    }

    /// Whole views of the two one-page files of the file-based contenders, as two named
    /// objects would have their states.
    fn word_views() -> (View, View) {
        let view = |name| {
            let m = opts().open(name, Access::ReadWrite).unwrap();
            m.map_view(Access::ReadWrite, 0, 0).unwrap()
        };
        (view("Local\\bench-word1"), view("Local\\bench-word2"))
    }

    /// One side of a cross-process contender; `a` is the measuring parent.
    fn run_side(contender: &str, a: bool, ctl: &View, n: u32) {
        let w = word(ctl, WORD);
        match contender {
            "futex" => {
                for i in 0..n {
                    if a {
                        futex_set(w, 2 * i + 1);
                        futex_wait_for(w, 2 * i + 2);
                    } else {
                        futex_wait_for(w, 2 * i + 1);
                        futex_set(w, 2 * i + 2);
                    }
                }
            }
            "futex-2files" => {
                // The same, with the two words in two tmpfs files, as two named objects
                // have them.
                // Zeroed by `round_trip` before the peer starts.
                let (v1, v2) = word_views();
                let (ping, pong) = (word(&v1, 0), word(&v2, 0));
                for i in 0..n {
                    if a {
                        futex_set(ping, i + 1);
                        futex_wait_for(pong, i + 1);
                    } else {
                        futex_wait_for(ping, i + 1);
                        futex_set(pong, i + 1);
                    }
                }
            }
            "futex-protocol" => {
                // filemap's waiting protocol (sync::algo) for an auto-reset event, written
                // with raw atomics and futex calls, on two words in two files: what the
                // library's layers add shows as the gap between this and `event`.
                let (v1, v2) = word_views();
                // (signalled, waiters) in each file, zeroed by `round_trip`.
                let ping = (word(&v1, 0), word(&v1, 8));
                let pong = (word(&v2, 0), word(&v2, 8));
                let set = |(sig, waiters): (&AtomicU32, &AtomicU32)| {
                    sig.store(1, SeqCst);
                    if waiters.load(SeqCst) != 0 {
                        let _ = futex::wake(sig, futex::Flags::empty(), 1);
                    }
                };
                let take = |sig: &AtomicU32| sig.compare_exchange(1, 0, SeqCst, SeqCst).is_ok();
                let wait = |(sig, waiters): (&AtomicU32, &AtomicU32)| {
                    while !take(sig) {
                        waiters.fetch_add(1, SeqCst);
                        if !take(sig) {
                            let _ = futex::wait(sig, futex::Flags::empty(), 0, None);
                            waiters.fetch_sub(1, SeqCst);
                            continue;
                        }
                        waiters.fetch_sub(1, SeqCst);
                        return;
                    }
                };
                for _ in 0..n {
                    if a {
                        set(ping);
                        wait(pong);
                    } else {
                        wait(ping);
                        set(pong);
                    }
                }
            }
            "event" => {
                let (ping, pong) = (
                    opts().open_event("Local\\bench-ping").unwrap(),
                    opts().open_event("Local\\bench-pong").unwrap(),
                );
                for _ in 0..n {
                    if a {
                        ping.set().unwrap();
                        pong.wait().unwrap();
                    } else {
                        ping.wait().unwrap();
                        pong.set().unwrap();
                    }
                }
            }
            "semaphore" => {
                let (ping, pong) = (
                    opts().open_semaphore("Local\\bench-sping").unwrap(),
                    opts().open_semaphore("Local\\bench-spong").unwrap(),
                );
                for _ in 0..n {
                    if a {
                        ping.release(1).unwrap();
                        pong.acquire().unwrap();
                    } else {
                        ping.acquire().unwrap();
                        pong.release(1).unwrap();
                    }
                }
            }
            "mutex" | "raw-mutex" => {
                // Strict alternation: the holder releases only once the other side has
                // said it is about to block on the mutex, and waits until it has taken it.
                let m = opts().open_mutex("Local\\bench-mutex").unwrap();
                let raw = raw_mutex(ctl);
                let filemap_mutex = contender == "mutex";
                let lock = || {
                    if filemap_mutex {
                        assert!(!m.acquire(None).unwrap());
                    } else {
                        assert!(!raw_lock(raw));
                    }
                };
                let unlock = || {
                    if filemap_mutex {
                        m.release().unwrap();
                    } else {
                        raw_unlock(raw);
                    }
                };
                let (mine, theirs) = if a {
                    (QUEUED_A, QUEUED_B)
                } else {
                    (QUEUED_B, QUEUED_A)
                };
                let acquired = word(ctl, ACQUIRED);
                if a {
                    lock();
                    acquired.store(1, SeqCst);
                } else {
                    // A holds it first.
                    spin_until(acquired, 1);
                }
                for i in 0..n {
                    // Acquisitions so far: A starts with 1; each round trip adds B's and A's.
                    if a {
                        spin_until(word(ctl, theirs), i + 1);
                        unlock();
                        spin_until(acquired, 2 * i + 2);
                        word(ctl, mine).store(i + 1, SeqCst);
                        lock();
                        acquired.store(2 * i + 3, SeqCst);
                    } else {
                        word(ctl, mine).store(i + 1, SeqCst);
                        lock();
                        acquired.store(2 * i + 2, SeqCst);
                        spin_until(word(ctl, theirs), i + 1);
                        unlock();
                        // Let A take it before queueing again, or we could barge in.
                        spin_until(acquired, 2 * i + 3);
                    }
                }
                if a {
                    unlock();
                }
            }
            "contend" | "raw-contend" => {
                // Both sides lock, bump the counter and unlock n times; the parent's time
                // ends when both are done.
                let m = opts().open_mutex("Local\\bench-mutex").unwrap();
                let raw = raw_mutex(ctl);
                let counter = word(ctl, COUNTER);
                for _ in 0..n {
                    if contender == "contend" {
                        let lock = m.lock().unwrap();
                        counter.store(counter.load(Relaxed) + 1, Relaxed);
                        drop(lock);
                    } else {
                        raw_lock(raw);
                        counter.store(counter.load(Relaxed) + 1, Relaxed);
                        raw_unlock(raw);
                    }
                }
                word(ctl, if a { DONE_A } else { DONE_B }).store(1, SeqCst);
                if a {
                    spin_until(word(ctl, DONE_B), 1);
                    assert_eq!(counter.load(SeqCst), 2 * n, "{contender} lost updates");
                }
            }
            other => panic!("unknown contender {other}"),
        }
    }

    /// Pins the calling process to one CPU.
    fn pin(cpu: usize) {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
    }

    /// The CPUs the benchmark may use, as it started (before any pinning: afterwards the
    /// affinity mask, and `available_parallelism`, say one CPU).
    fn all_cpus() -> rustix::thread::CpuSet {
        static ALL: std::sync::OnceLock<rustix::thread::CpuSet> = std::sync::OnceLock::new();
        *ALL.get_or_init(|| rustix::thread::sched_getaffinity(None).expect("sched_getaffinity"))
    }

    /// Allows the calling process on every CPU it started with again.
    fn unpin() {
        let _ = rustix::thread::sched_setaffinity(None, &all_cpus());
    }

    fn child_main(contender: String) {
        if let Ok(cpu) = std::env::var("FILEMAP_BENCH_CPU") {
            pin(cpu.parse().unwrap());
        }
        let ctl_map = opts().open("Local\\bench-ctl", Access::ReadWrite).unwrap();
        let ctl = ctl_map.map_view(Access::ReadWrite, 0, 0).unwrap();
        let n: u32 = std::env::var("FILEMAP_BENCH_N").unwrap().parse().unwrap();
        word(&ctl, READY).store(1, SeqCst);
        spin_until(word(&ctl, GO), 1);
        run_side(&contender, false, &ctl, n);
    }

    /// Nanoseconds per round trip of `contender`, measured in the parent.
    fn round_trip(contender: &str, ctl: &View, n: u32, child_cpu: Option<usize>) -> f64 {
        for off in [
            READY, GO, WORD, QUEUED_A, QUEUED_B, ACQUIRED, COUNTER, DONE_A, DONE_B,
        ] {
            word(ctl, off).store(0, SeqCst);
        }
        // The words of the file-based contenders start at 0 before the peer runs.
        let (v1, v2) = word_views();
        for v in [v1, v2] {
            v.write_at(0, &[0; 16]).unwrap();
        }
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(ROLE, contender)
            .env("FILEMAP_BENCH_N", n.to_string());
        if let Some(cpu) = child_cpu {
            cmd.env("FILEMAP_BENCH_CPU", cpu.to_string());
        }
        let mut child = Reap(cmd.spawn().unwrap());
        spin_until(word(ctl, READY), 1);
        let start = Instant::now();
        word(ctl, GO).store(1, SeqCst);
        run_side(contender, true, ctl, n);
        let elapsed = start.elapsed();
        assert!(child.0.wait().unwrap().success());
        elapsed.as_nanos() as f64 / f64::from(n)
    }

    struct Reap(Child);

    impl Drop for Reap {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    /// `FILEMAP_BENCH_SECTIONS=uncontended,round-trips,contended,abandoned` runs only those
    /// sections (default: all).
    fn section(name: &str) -> bool {
        match std::env::var("FILEMAP_BENCH_SECTIONS") {
            Ok(only) => only.split(',').any(|c| c.trim() == name),
            Err(_) => true,
        }
    }

    /// `FILEMAP_BENCH_ONLY=event,semaphore` runs only those contenders, besides the two
    /// baselines (the first two), which every table needs.
    fn selected(index: usize, contender: &str) -> bool {
        match std::env::var("FILEMAP_BENCH_ONLY") {
            Ok(only) => index < 2 || only.split(',').any(|c| c.trim() == contender),
            Err(_) => true,
        }
    }

    pub(super) fn main() {
        // Remember every CPU we may use before anything is pinned.
        all_cpus();
        if let Ok(contender) = std::env::var(ROLE) {
            if contender == "own" || contender.starts_with("raw-own") {
                return owner_main(&contender);
            }
            return child_main(contender);
        }
        let root = common::shm_root("sync");
        // Removed last, also when a panic (a closed stdout, say) unwinds.
        let _cleanup = RemoveOnDrop(vec![root.clone()]);
        // The peer process finds the namespace through the environment.
        std::env::set_var("FILEMAP_ROOT", &root);
        let o = opts();
        let ctl_map = o.create("Local\\bench-ctl", 4096).unwrap();
        let ctl = ctl_map.map_view(Access::ReadWrite, 0, 0).unwrap();
        let _objects = (
            o.create_event("Local\\bench-ping", false, false).unwrap(),
            o.create_event("Local\\bench-pong", false, false).unwrap(),
            o.create_semaphore("Local\\bench-sping", 0, 1).unwrap(),
            o.create_semaphore("Local\\bench-spong", 0, 1).unwrap(),
        );
        let mutex = o.create_mutex("Local\\bench-mutex").unwrap();
        let _words = (
            o.create("Local\\bench-word1", 4096).unwrap(),
            o.create("Local\\bench-word2", 4096).unwrap(),
        );

        // 1. Uncontended lock + unlock.
        if section("uncontended") {
            uncontended(&mutex, &ctl);
        }
        if section("round-trips") {
            round_trips(&ctl);
        }
        if section("contended") {
            contended(&ctl);
        }
        if section("abandoned") {
            abandoned(&mutex, &ctl);
        }
        drop(_objects);
        drop(mutex);
        drop(ctl);
        drop(ctl_map);
        let _ = std::fs::remove_dir_all(&root);
    }

    fn uncontended(mutex: &filemap::Mutex, ctl: &View) {
        let iters = 1_000_000u32;
        let time = |f: &mut dyn FnMut()| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iters)
        };
        let (mut fm, mut recursive, mut robust, mut plain) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            fm.push(time(&mut || drop(black_box(mutex.lock().unwrap()))));
            let m = raw_mutex_init(ctl, true, true);
            recursive.push(time(&mut || {
                raw_lock(m);
                raw_unlock(m);
            }));
            let m = raw_mutex_init(ctl, true, false);
            robust.push(time(&mut || {
                raw_lock(m);
                raw_unlock(m);
            }));
            let m = raw_mutex_init(ctl, false, false);
            plain.push(time(&mut || {
                raw_lock(m);
                raw_unlock(m);
            }));
        }
        let (fm, recursive, robust, plain) =
            (median(fm), median(recursive), median(robust), median(plain));
        println!(
            "### Uncontended lock + unlock, one process ({ROUNDS} rounds x {iters}, median)\n"
        );
        println!("| contender | ns per lock + unlock | filemap / contender |");
        println!("|---|---:|---:|");
        println!(
            "| raw pthread mutex, process-shared, robust, recursive (filemap's kind) | {recursive:.1} | {:.2}x |",
            fm / recursive
        );
        println!(
            "| raw pthread mutex, process-shared, robust | {robust:.1} | {:.2}x |",
            fm / robust
        );
        println!(
            "| raw pthread mutex, process-shared | {plain:.1} | {:.2}x |",
            fm / plain
        );
        println!("| filemap `Mutex::lock` + drop of the guard | {fm:.1} | 1.00x |");
    }

    /// The placements of the peer process: (label, (parent CPU, child CPU) or unpinned).
    fn placements() -> Vec<(&'static str, Option<(usize, usize)>)> {
        let all = all_cpus();
        let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| all.is_set(c))
            .collect();
        let mut placements = vec![("both processes on one core", Some((cpus[0], cpus[0])))];
        if cpus.len() > 1 {
            placements.push(("each process on its own core", Some((cpus[0], cpus[1]))));
        }
        placements.push(("unpinned", None));
        placements
    }

    fn round_trips(ctl: &View) {
        let contenders = [
            "futex",
            "futex-2files",
            "futex-protocol",
            "event",
            "semaphore",
            "mutex",
            "raw-mutex",
        ];
        let labels = [
            "raw futex ping-pong, one word (baseline)",
            "raw futex ping-pong, two words in two tmpfs files (baseline 2)",
            "raw atomics running filemap's event protocol, two files (baseline 3)",
            "filemap auto-reset `Event`: set, then wait for the reply",
            "filemap `Semaphore`: release, then acquire the reply",
            "filemap `Mutex` hand-off there and back (both sides spin until the other queues)",
            "raw robust pthread mutex, same hand-off protocol",
        ];
        raw_mutex_init(ctl, true, false);
        for (placement, cpus) in placements() {
            match cpus {
                Some((parent, _)) => pin(parent),
                None => unpin(),
            }
            let mut results: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
            for _ in 0..ROUNDS {
                for (i, c) in contenders.iter().enumerate() {
                    if selected(i, c) {
                        results[i].push(round_trip(c, ctl, ROUND_TRIPS, cpus.map(|c| c.1)));
                    }
                }
            }
            // Contenders left out by FILEMAP_BENCH_ONLY have no rounds (and no row).
            let med: Vec<f64> = results
                .into_iter()
                .map(|v| if v.is_empty() { f64::NAN } else { median(v) })
                .collect();
            let (base, base2) = (med[0], med[1]);
            println!("\n### Cross-process round trips, {placement} ({ROUNDS} rounds x {ROUND_TRIPS}, median)\n");
            println!("| contender | µs per round trip | / baseline | / baseline 2 |");
            println!("|---|---:|---:|---:|");
            for (i, (label, v)) in labels.iter().zip(&med).enumerate() {
                if !selected(i, contenders[i]) {
                    continue;
                }
                println!(
                    "| {label} | {:.2} | {:.2}x | {:.2}x |",
                    v / 1e3,
                    v / base,
                    v / base2
                );
            }
        }
        unpin();
    }

    /// 3. Both processes lock, bump a counter and unlock as fast as they can.
    fn contended(ctl: &View) {
        const OPS: u32 = 200_000;
        println!("\n### Two processes contending: lock, bump a shared counter, unlock ({ROUNDS} rounds x {OPS} per process, median)\n");
        println!("| placement | raw robust pthread mutex, ns per lock + unlock | filemap `Mutex`, ns | filemap / raw |");
        println!("|---|---:|---:|---:|");
        raw_mutex_init(ctl, true, false);
        for (placement, cpus) in placements() {
            match cpus {
                Some((parent, _)) => pin(parent),
                None => unpin(),
            }
            let (mut raw, mut fm) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                // Per lock + unlock: the round's time over both processes' operations.
                raw.push(round_trip("raw-contend", ctl, OPS, cpus.map(|c| c.1)) / 2.0);
                fm.push(round_trip("contend", ctl, OPS, cpus.map(|c| c.1)) / 2.0);
            }
            let (raw, fm) = (median(raw), median(fm));
            println!("| {placement} | {raw:.1} | {fm:.1} | {:.2}x |", fm / raw);
        }
        unpin();
    }

    /// The peer that owns the mutex until it is killed.
    fn owner_main(kind: &str) {
        let ctl_map = opts().open("Local\\bench-ctl", Access::ReadWrite).unwrap();
        let ctl = ctl_map.map_view(Access::ReadWrite, 0, 0).unwrap();
        let m = opts().open_mutex("Local\\bench-mutex").unwrap();
        if kind == "own" {
            std::mem::forget(m.lock().unwrap());
        } else {
            match kind {
                // A second, idle thread, as filemap's sentinel is.
                "raw-own-idle-thread" => {
                    std::thread::spawn(|| loop {
                        std::thread::park();
                    });
                    raw_lock(raw_mutex(&ctl));
                }
                // Owned by a second thread: the kernel then walks the robust list of a thread
                // other than the main one, as it walks filemap's sentinel's.
                "raw-own-other-thread" => {
                    let m = raw_mutex(&ctl) as usize;
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        raw_lock(m as *mut libc::pthread_mutex_t);
                        tx.send(()).unwrap();
                        loop {
                            std::thread::park();
                        }
                    });
                    rx.recv().unwrap();
                }
                _ => {
                    raw_lock(raw_mutex(&ctl));
                }
            }
        }
        word(&ctl, OWNER_PID).store(std::process::id(), SeqCst);
        word(&ctl, READY).store(1, SeqCst);
        loop {
            std::thread::park();
        }
    }

    /// 4. From `kill(owner, SIGKILL)` to a waiter in another process holding the mutex as
    ///    abandoned: microseconds, one sample per round.
    fn abandoned(mutex: &filemap::Mutex, ctl: &View) {
        const SAMPLES: usize = 61;
        let raw = raw_mutex_init(ctl, true, false) as usize;
        let sample = |kind: &str| -> f64 {
            word(ctl, READY).store(0, SeqCst);
            let mut child = Reap(
                Command::new(std::env::current_exe().unwrap())
                    .env(ROLE, kind)
                    .spawn()
                    .unwrap(),
            );
            spin_until(word(ctl, READY), 1);
            std::thread::scope(|s| {
                let waiter = s.spawn(|| {
                    let abandoned = if kind == "own" {
                        let a = mutex.acquire(None).unwrap();
                        mutex.release().unwrap();
                        a
                    } else {
                        let m = raw as *mut libc::pthread_mutex_t;
                        let a = raw_lock(m);
                        raw_unlock(m);
                        a
                    };
                    (Instant::now(), abandoned)
                });
                // Let the waiter fall asleep on the mutex.
                std::thread::sleep(std::time::Duration::from_millis(20));
                let start = Instant::now();
                child.0.kill().unwrap();
                let (end, abandoned) = waiter.join().unwrap();
                assert!(abandoned, "{kind}: the waiter was not told");
                let _ = child.0.wait();
                end.duration_since(start).as_nanos() as f64 / 1e3
            })
        };
        let kinds = [
            (
                "raw-own",
                "raw robust pthread mutex (`EOWNERDEAD`), owned by the main thread",
            ),
            (
                "raw-own-idle-thread",
                "the same, with a second, idle thread in the owner process",
            ),
            (
                "raw-own-other-thread",
                "the same, owned by a second thread (its robust list is that thread's)",
            ),
            (
                "own",
                "filemap `Mutex` (`Lock::Abandoned`; the robust list is the sentinel's)",
            ),
        ];
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        for _ in 0..SAMPLES {
            for (i, (kind, _)) in kinds.iter().enumerate() {
                samples[i].push(sample(kind));
            }
        }
        let med: Vec<f64> = samples.into_iter().map(median).collect();
        println!("\n### Owner killed: from kill(owner, SIGKILL) to the waiter holding the mutex as abandoned ({SAMPLES} samples, median)\n");
        println!("| contender | µs | / raw, main thread |");
        println!("|---|---:|---:|");
        for ((_, label), m) in kinds.iter().zip(&med) {
            println!("| {label} | {m:.1} | {:.2}x |", m / med[0]);
        }
    }
}
