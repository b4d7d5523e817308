//! Sync objects under abuse (issue 8): owners that drop their handles or die, waiters that
//! die just after their wake-up, contenders killed at random, and shared state overwritten
//! behind the owner's back. Children are this test binary, re-run in a role (see `child`).
// Linux and Windows (under Wine in CI); Linux-only parts are marked.
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::io::Write;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{
    kill_hard, next_reports, opts, own_mutex_until_eof, read_line_within, report, role, spawn_role,
    watchdog, Reap, TestRoot,
};
#[cfg(target_os = "linux")]
use filemap::Mutex;
use filemap::{wait_any, Access, Error, Event, WaitOutcome};

const LINE: Duration = Duration::from_secs(20);

/// Pins the calling process to one CPU (Linux; elsewhere nothing).
fn pin_to(cpu: usize) {
    #[cfg(target_os = "linux")]
    {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

/// Waits as the role's arguments say: `event NAME`, `semaphore NAME` or `mutex NAME`.
fn wait_forever(kind: &str, name: &str) -> &'static str {
    match kind {
        "event" => {
            let e = opts().open_event(name).unwrap();
            report("ready");
            e.wait().unwrap();
            "woke"
        }
        "semaphore" => {
            let s = opts().open_semaphore(name).unwrap();
            report("ready");
            s.acquire().unwrap();
            "woke"
        }
        _ => {
            let m = opts().open_mutex(name).unwrap();
            report("ready");
            let abandoned = m.acquire(None).unwrap();
            // Reported while still holding it, so that a kill after the report leaves an
            // abandoned mutex behind, and a kill before it does too.
            report(if abandoned { "abandoned" } else { "acquired" });
            m.release().unwrap();
            "released"
        }
    }
}

#[test]
fn child() {
    let Some((role, args)) = role() else { return };
    match role.as_str() {
        // Wait without a timeout (optionally pinned to a CPU), report how it ended.
        "wait" => {
            if let Some(cpu) = args.get(2).filter(|a| !a.is_empty()) {
                pin_to(cpu.parse().unwrap());
            }
            report(wait_forever(&args[0], &args[1]));
        }
        // Burn a CPU until killed.
        "hog" => {
            pin_to(args[0].parse().unwrap());
            report("ready");
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        // Hold a mutex open (not owned) and answer probes from stdin: "try" reports busy,
        // acquired or abandoned (and gives back what it took).
        "probe" => {
            let m = opts().open_mutex(&args[0]).unwrap();
            report("ready");
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap() > 0 {
                let answer = match m.try_lock() {
                    Ok(lock) => {
                        if lock.is_abandoned() {
                            "abandoned"
                        } else {
                            "acquired"
                        }
                    }
                    Err(Error::Timeout { .. }) => "busy",
                    Err(e) => panic!("{e}"),
                };
                report(answer);
                line.clear();
            }
        }
        // Take the mutex and hold it until stdin closes (or the process is killed).
        "own" => own_mutex_until_eof(&args[0]),
        // Lock, bump a counter and unlock n times as fast as possible, pinned to a CPU.
        "hammer" => {
            if let Some(cpu) = args.get(3).filter(|a| !a.is_empty()) {
                pin_to(cpu.parse().unwrap());
            }
            let m = opts().open_mutex(&args[0]).unwrap();
            let map = opts().open(&args[1], Access::ReadWrite).unwrap();
            let v = map.map_view(Access::ReadWrite, 0, 8).unwrap();
            let counter = v.atomic_u64(0).unwrap();
            report("ready");
            for _ in 0..args[2].parse::<u64>().unwrap() {
                let lock = m.lock().unwrap();
                counter.store(counter.load(SeqCst) + 1, SeqCst);
                drop(lock);
            }
            report("done");
        }
        // Lock and unlock as fast as possible until killed.
        "contend" => {
            let m = opts().open_mutex(&args[0]).unwrap();
            loop {
                let lock = m.lock().unwrap();
                std::thread::yield_now();
                drop(lock);
            }
        }
        // Add 1 to a counter under the mutex until the counter's stop word is set, with a
        // racy read-yield-write; abandoned locks are fine (contenders die holding it).
        "count" => {
            let m = opts().open_mutex(&args[0]).unwrap();
            let map = opts().open(&args[1], Access::ReadWrite).unwrap();
            let v = map.map_view(Access::ReadWrite, 0, 16).unwrap();
            let stop = v.atomic_u64(8).unwrap();
            let mut mine = 0u64;
            while stop.load(SeqCst) == 0 {
                let lock = m.lock().unwrap();
                let mut b = [0u8; 8];
                v.read_at(0, &mut b).unwrap();
                std::thread::yield_now();
                v.write_at(0, &(u64::from_le_bytes(b) + 1).to_le_bytes())
                    .unwrap();
                drop(lock);
                mine += 1;
            }
            report(mine);
        }
        // Open sync object args[1] of kind args[0], and make every call of it once per line
        // on stdin (see `poke`), reporting "ok"; at the end of stdin, "bye".
        "poke" => {
            let object = Sync::open(&args[0], &args[1]);
            report("ready");
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap() > 0 {
                object.poke();
                report("ok");
                line.clear();
            }
            report("bye");
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn spawn(root: &TestRoot, role: &str, args: &[&str]) -> Reap {
    Reap(spawn_role("child", role, &root.path, args))
}

fn expect(kid: &mut Reap, line: &str) {
    assert_eq!(read_line_within(&mut kid.0, LINE), line);
}

fn ask(kid: &mut Reap, question: &str) -> String {
    let stdin = kid.0.stdin.as_mut().unwrap();
    writeln!(stdin, "{question}").unwrap();
    stdin.flush().unwrap();
    read_line_within(&mut kid.0, LINE)
}

/// Closes a child's stdin (its signal to let go).
fn let_go(kid: &mut Reap) {
    drop(kid.0.stdin.take());
}

// ---------------------------------------------------------------------------------------
// 1. Ownership outlives the handle; every close order ends in a release or an abandonment.

#[test]
fn dropping_an_owned_handle_keeps_ownership_until_the_thread_lets_go_or_exits() {
    let _w = watchdog(120);
    let root = TestRoot::new("dropowned");
    let (a_name, b_name) = (root.name("Local\\a"), root.name("Local\\b"));
    let bystander = root
        .opts()
        .create(&root.name("Local\\bystander"), 4096)
        .unwrap();
    let a = root.opts().create_mutex(&a_name).unwrap();
    // Another process holds `a` open, so that the name outlives our handles.
    let mut probe = spawn(&root, "probe", &[&a_name]);
    expect(&mut probe, "ready");

    // The repro: two mutexes owned, the first handle dropped, the second released.
    a.acquire(None).unwrap();
    let b = root.opts().create_mutex(&b_name).unwrap();
    b.acquire(None).unwrap();
    drop(a);
    b.release().unwrap();
    assert!(!b.lock().unwrap().is_abandoned());
    // The thread still owns `a`, as on Windows...
    assert_eq!(ask(&mut probe, "try"), "busy");
    // ...and can release it through a new handle.
    let a = root.opts().open_mutex(&a_name).unwrap();
    a.release().unwrap();
    assert!(matches!(a.release(), Err(Error::NotOwner { .. })));
    assert_eq!(ask(&mut probe, "try"), "acquired");

    // A thread that acquires, drops its handle and exits abandons the mutex: another
    // process is told.
    let opts = root.opts();
    let name = a_name.clone();
    std::thread::spawn(move || {
        let m = opts.open_mutex(&name).unwrap();
        m.acquire(None).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(ask(&mut probe, "try"), "abandoned");
    assert_eq!(ask(&mut probe, "try"), "acquired");

    // The same with a guard forgotten and the handle dropped, on a thread that lives on
    // for a while: the mutex stays owned until the thread ends.
    let opts = root.opts();
    let name = a_name.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let m = opts.open_mutex(&name).unwrap();
        std::mem::forget(m.lock().unwrap());
        drop(m);
        rx.recv().unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ask(&mut probe, "try"), "busy");
    tx.send(()).unwrap();
    t.join().unwrap();
    assert_eq!(ask(&mut probe, "try"), "abandoned");

    // Locks and unlocks of other mutexes meanwhile left unrelated memory alone.
    let mut bytes = vec![1u8; 4096];
    bystander
        .map_view(Access::Read, 0, 0)
        .unwrap()
        .read_at(0, &mut bytes)
        .unwrap();
    assert!(bytes.iter().all(|&x| x == 0));
    drop(b);
    let_go(&mut probe);
    assert!(probe.0.wait().unwrap().success());
}

#[test]
fn a_thread_that_exits_owning_a_mutex_abandons_it_to_other_threads_too() {
    let _w = watchdog(60);
    let root = TestRoot::new("threadexit");
    let name = root.name("Local\\m");
    let m = root.opts().create_mutex(&name).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mine = root.opts().open_mutex(&name).unwrap();
            assert!(!mine.acquire(None).unwrap());
            assert!(!mine.acquire(None).unwrap(), "recursive");
        });
    });
    let lock = m.lock_timeout(LINE).unwrap();
    assert!(lock.is_abandoned());
    drop(lock);
    assert!(!m.lock().unwrap().is_abandoned(), "told once");
}

// ---------------------------------------------------------------------------------------
// 3. A woken waiter killed before it takes the object must not strand the others.

/// Three processes waiting for one object, and a busy process.
struct Sleepers {
    /// Asleep first, so a single wake-up would go to it. It shares CPU 0 with `hog`, so it
    /// is slow to run once woken.
    first: Reap,
    /// Asleep after it, on another CPU when there is one.
    others: Vec<Reap>,
    hog: Reap,
}

fn sleepers(root: &TestRoot, kind: &str, name: &str) -> Sleepers {
    let mut first = spawn(root, "wait", &[kind, name, "0"]);
    expect(&mut first, "ready");
    std::thread::sleep(Duration::from_millis(100));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let other_cpu = if cpus > 1 { "1" } else { "" };
    let mut others: Vec<Reap> = (0..2)
        .map(|_| spawn(root, "wait", &[kind, name, other_cpu]))
        .collect();
    for k in &mut others {
        expect(k, "ready");
    }
    let mut hog = spawn(root, "hog", &["0"]);
    expect(&mut hog, "ready");
    // "ready" comes just before the wait: let them fall asleep.
    std::thread::sleep(Duration::from_millis(150));
    Sleepers { first, others, hog }
}

/// Whether the object was taken: the signal was consumed by someone.
fn consumed(kind: &str, e: Option<&Event>, s: Option<&filemap::Semaphore>) -> bool {
    match kind {
        "event" => !e.unwrap().is_set(),
        _ => s.unwrap().count() == 0,
    }
}

#[test]
fn a_waiter_killed_right_after_its_wake_up_does_not_strand_the_others() {
    let _w = watchdog(300);
    let root = TestRoot::new("wakekill");
    for kind in ["event", "semaphore"] {
        for round in 0..10 {
            let name = root.name(&format!("Local\\{kind}-{round}"));
            let (e, s) = match kind {
                "event" => (
                    Some(root.opts().create_event(&name, false, false).unwrap()),
                    None,
                ),
                _ => (
                    None,
                    Some(root.opts().create_semaphore(&name, 0, 10).unwrap()),
                ),
            };
            let Sleepers {
                mut first,
                others: _others,
                mut hog,
            } = sleepers(&root, kind, &name);
            match (&e, &s) {
                (Some(e), _) => e.set().unwrap(),
                (_, Some(s)) => assert_eq!(s.release(1).unwrap(), 0),
                _ => unreachable!(),
            }
            kill_hard(&mut first);
            kill_hard(&mut hog);
            // Either the killed waiter took it (and the state shows it), or someone else
            // does now: never a signalled object with sleepers.
            let start = Instant::now();
            while !consumed(kind, e.as_ref(), s.as_ref()) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{kind}, round {round}: still signalled after 10 s with two sleepers"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Contenders killed at random never leave a waiter asleep on a free mutex.

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small, seeded generator for kill delays (no dependency needed).
fn next_random(state: &AtomicU64) -> u64 {
    let mut x = state.load(SeqCst);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, SeqCst);
    x
}

/// One run: two processes count under the mutex while `contenders` more start one after
/// another, each killed 1 to 30 ms after its start. Returns a description of a failure.
fn contended_run(root: &TestRoot, run: u32, contenders: u32, rng: &AtomicU64) -> Option<String> {
    let (mutex, counter) = (
        root.name(&format!("Local\\m{run}")),
        root.name(&format!("Local\\c{run}")),
    );
    let m = root.opts().create_mutex(&mutex).unwrap();
    let map = root.opts().create(&counter, 16).unwrap();
    let view = map.map_view(Access::ReadWrite, 0, 16).unwrap();
    let mut counters: Vec<Reap> = (0..2)
        .map(|_| spawn(root, "count", &[&mutex, &counter]))
        .collect();
    for _ in 0..contenders {
        let mut c: Child = spawn_role("child", "contend", &root.path, &[&mutex]);
        std::thread::sleep(Duration::from_millis(1 + next_random(rng) % 30));
        let _ = c.kill();
        let _ = c.wait();
    }
    view.atomic_u64(8).unwrap().store(1, SeqCst);
    let reports = next_reports(&mut counters, LINE);
    let mut total = 0;
    for r in &reports {
        match r.parse::<u64>() {
            Ok(n) => total += n,
            Err(_) => {
                return Some(format!(
                    "run {run}: a counting process never finished (reports {reports:?})"
                ))
            }
        }
    }
    let mut b = [0u8; 8];
    view.read_at(0, &mut b).unwrap();
    if u64::from_le_bytes(b) != total {
        return Some(format!(
            "run {run}: the counter is {} but the processes counted {total}",
            u64::from_le_bytes(b)
        ));
    }
    drop(m);
    None
}

#[test]
fn contenders_killed_at_random_never_leave_a_waiter_asleep_on_a_free_mutex() {
    // FILEMAP_TEST_RUNS and FILEMAP_TEST_CONTENDERS raise the defaults, which keep the
    // suite quick: the repro is 100 runs of 100 contenders.
    let runs = env_or("FILEMAP_TEST_RUNS", 100);
    let contenders = env_or("FILEMAP_TEST_CONTENDERS", 10);
    let _w = watchdog(60 + u64::from(runs * contenders) / 2);
    let root = TestRoot::new("contenders");
    let seed = std::process::id() as u64 | 1;
    eprintln!("contenders: {runs} runs of {contenders}, seed {seed}");
    let rng = AtomicU64::new(seed);
    // Two runs at a time, each with its own mutex; the first failure stops both lanes.
    let failed = std::sync::atomic::AtomicBool::new(false);
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|lane| {
                let (root, rng, failed) = (&root, &rng, &failed);
                s.spawn(move || {
                    (0..runs)
                        .filter(|r| r % 2 == lane)
                        .take_while(|_| !failed.load(SeqCst))
                        .filter_map(|r| contended_run(root, r, contenders, rng))
                        .inspect(|_| failed.store(true, SeqCst))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Two processes on two CPUs lock and unlock in tight loops: every hand-off race between
/// a waiter's last look and its sleep happens many times (a waiter once slept on a free
/// mutex that it had seen free a moment before).
#[test]
fn two_processes_hammering_the_mutex_both_finish() {
    let _w = watchdog(300);
    let root = TestRoot::new("hammer");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mutex, counter) = (root.name("Local\\m"), root.name("Local\\c"));
    let _m = root.opts().create_mutex(&mutex).unwrap();
    let map = root.opts().create(&counter, 8).unwrap();
    // Fewer under Wine, where every contended lock is a round trip to wineserver.
    let n = if cfg!(windows) { 50_000u64 } else { 200_000 };
    for round in 0..3 {
        let mut kids: Vec<Reap> = (0..2)
            .map(|i| {
                let cpu = if cpus > 1 {
                    i.to_string()
                } else {
                    String::new()
                };
                spawn(&root, "hammer", &[&mutex, &counter, &n.to_string(), &cpu])
            })
            .collect();
        assert_eq!(next_reports(&mut kids, LINE), ["ready", "ready"]);
        // A hang detector, not a speed check: generous for a loaded machine (the test's
        // watchdog still bounds the whole).
        assert_eq!(
            next_reports(&mut kids, Duration::from_secs(90)),
            ["done", "done"],
            "round {round}"
        );
    }
    let mut b = [0u8; 8];
    map.map_view(Access::Read, 0, 8)
        .unwrap()
        .read_at(0, &mut b)
        .unwrap();
    assert_eq!(u64::from_le_bytes(b), 3 * 2 * n);
}

// ---------------------------------------------------------------------------------------
// An owner killed, and the waiter its death woke killed at once: the others carry on.

#[test]
fn the_waiter_woken_by_a_dead_owner_may_die_too() {
    let _w = watchdog(300);
    let root = TestRoot::new("doubledeath");
    for round in 0..10 {
        let name = root.name(&format!("Local\\m{round}"));
        let _mine = root.opts().create_mutex(&name).unwrap();
        let mut owner = spawn(&root, "own", &[&name]);
        expect(&mut owner, "owner");
        let Sleepers {
            mut first,
            mut others,
            mut hog,
        } = sleepers(&root, "mutex", &name);
        kill_hard(&mut owner);
        kill_hard(&mut first);
        kill_hard(&mut hog);
        // What the first waiter said before it died: nothing, or that it took the mutex.
        let first_said = read_line_within(&mut first.0, LINE);
        // Both others get the mutex, one after the other: nobody sleeps on a free mutex.
        let said = next_reports(&mut others, LINE);
        for r in &said {
            assert!(
                r == "acquired" || r == "abandoned",
                "round {round}: {said:?}"
            );
        }
        // And the owner's death was told to whoever took the mutex next.
        assert!(
            first_said == "abandoned" || said.contains(&"abandoned".to_owned()),
            "round {round}: first {first_said:?}, others {said:?}"
        );
        for k in &mut others {
            expect(k, "released");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. wait_any takes mutexes and reports abandonment by index.

#[test]
fn wait_any_takes_a_mutex_or_stops_when_quit_is_set() {
    let _w = watchdog(120);
    let root = TestRoot::new("anymutex");
    let (m_name, q_name) = (root.name("Local\\m"), root.name("Local\\quit"));
    let m = root.opts().create_mutex(&m_name).unwrap();
    let quit = root.opts().create_event(&q_name, true, false).unwrap();
    let mut owner = spawn(&root, "own", &[&m_name]);
    expect(&mut owner, "owner");
    let short = Some(Duration::from_millis(100));
    assert!(matches!(
        wait_any(&[&quit, &m], short),
        Err(Error::Timeout { .. })
    ));
    // Quit wins while another process holds the mutex; the mutex is not taken.
    quit.set().unwrap();
    assert_eq!(
        wait_any(&[&quit, &m], None).unwrap(),
        WaitOutcome::Signalled(0)
    );
    assert!(matches!(m.release(), Err(Error::NotOwner { .. })));
    quit.reset().unwrap();
    // The owner lets go while we wait: we own it then.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| wait_any(&[&quit, &m], Some(LINE)).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        let_go(&mut owner);
        expect(&mut owner, "released");
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Signalled(1));
    });
    // On this thread, not that one: the waiting thread owns it.
    let mut probe = spawn(&root, "probe", &[&m_name]);
    expect(&mut probe, "ready");
    // (The scoped thread that took it has exited, which abandoned it.)
    assert_eq!(ask(&mut probe, "try"), "abandoned");
    // Taken on this thread, then again (recursively) through wait_any.
    assert_eq!(
        wait_any(&[&quit, &m], None).unwrap(),
        WaitOutcome::Signalled(1)
    );
    assert_eq!(
        wait_any(&[&quit, &m], None).unwrap(),
        WaitOutcome::Signalled(1)
    );
    assert_eq!(ask(&mut probe, "try"), "busy");
    m.release().unwrap();
    assert_eq!(ask(&mut probe, "try"), "busy", "held once more");
    m.release().unwrap();
    assert_eq!(ask(&mut probe, "try"), "acquired");
    // An owner killed while we wait: abandoned, by index.
    let mut owner = spawn(&root, "own", &[&m_name]);
    expect(&mut owner, "owner");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let got = wait_any(&[&quit, &m], Some(LINE)).unwrap();
            m.release().unwrap();
            got
        });
        std::thread::sleep(Duration::from_millis(100));
        kill_hard(&mut owner);
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Abandoned(1));
    });
    let_go(&mut probe);
}

// ---------------------------------------------------------------------------------------
// 2. Another writer of the shared state can break the object, never the process.

/// Overwrites the first `len` bytes of an object file, as any process with write access to
/// it could (Linux: the namespace file).
#[cfg(target_os = "linux")]
fn overwrite(m: &Mutex, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.os_path())
        .unwrap();
    f.write_all_at(bytes, 0).unwrap();
}

/// The state's 32-bit words (Linux).
#[cfg(target_os = "linux")]
fn state_words(m: &Mutex) -> Vec<u32> {
    let bytes = std::fs::read(m.os_path()).unwrap();
    bytes[..4096]
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn the_shared_state_holds_no_addresses() {
    let root = TestRoot::new("noaddr");
    let name = root.name("Local\\m");
    let m = root.opts().create_mutex(&name).unwrap();
    let mut owner = spawn(&root, "own", &[&name]);
    expect(&mut owner, "owner");
    let mut waiter = spawn(&root, "wait", &["mutex", &name, ""]);
    expect(&mut waiter, "ready");
    std::thread::sleep(Duration::from_millis(100));
    // Owned, with a waiter asleep: only ids, pids and flag bits, and zeros.
    let words = state_words(&m);
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for (i, &w) in words.iter().enumerate() {
        let value = w & 0x3fff_ffff;
        assert!(value < pid_max, "word {i} is {w:#x}: not an id");
    }
    assert_eq!(words[1], owner.0.id(), "the owner's pid, for ls and info");
    assert!(
        words[130..].iter().all(|&w| w == 0),
        "the rest of the page is unused"
    );
    let_go(&mut owner);
    expect(&mut waiter, "acquired");
}

/// A sync object of any kind, for the garbage test.
enum Sync {
    Mutex(filemap::Mutex),
    Semaphore(filemap::Semaphore),
    Event(Event),
}

impl Sync {
    fn open(kind: &str, name: &str) -> Sync {
        match kind {
            "mutex" => Sync::Mutex(opts().open_mutex(name).unwrap()),
            "semaphore" => Sync::Semaphore(opts().open_semaphore(name).unwrap()),
            _ => Sync::Event(opts().open_event(name).unwrap()),
        }
    }

    #[cfg(target_os = "linux")]
    fn os_path(&self) -> std::path::PathBuf {
        match self {
            Sync::Mutex(m) => m.os_path(),
            Sync::Semaphore(s) => s.os_path(),
            Sync::Event(e) => e.os_path(),
        }
    }

    /// Makes every call of the object that returns by itself, each with a short timeout,
    /// and gives back what it took. What the calls return is not checked (garbage makes
    /// anything possible): only that they return.
    fn poke(&self) {
        let short = Duration::from_millis(1);
        match self {
            Sync::Mutex(m) => {
                if let Ok(lock) = m.try_lock() {
                    drop(lock);
                }
                if let Ok(lock) = m.lock_timeout(short) {
                    drop(lock);
                }
                if m.acquire(Some(short)).is_ok() {
                    let _ = m.release();
                }
                if wait_any(&[m], Some(short)).is_ok() {
                    let _ = m.release();
                }
                let _ = m.release();
            }
            Sync::Semaphore(s) => {
                std::hint::black_box((s.count(), s.max()));
                let _ = s.try_acquire();
                let _ = s.acquire_timeout(short);
                let _ = wait_any(&[s], Some(short));
                let _ = s.release(1);
                let _ = s.release(u32::MAX);
            }
            Sync::Event(e) => {
                let _ = (e.is_set(), e.is_manual_reset());
                let _ = e.try_wait();
                let _ = e.wait_timeout(short);
                let _ = wait_any(&[e], Some(short));
                let _ = e.set();
                let _ = e.reset();
                let _ = e.set();
            }
        }
    }
}

/// Someone who may write a sync object scribbles over its state while this process and
/// another use it: every call returns (an error, a timeout, or what it asked for), nobody
/// dies of a panic or a signal, and the name goes with the last handle. Then the same
/// while another thread scribbles all the time.
#[cfg(target_os = "linux")]
#[test]
fn garbage_in_any_sync_objects_state_never_crashes_or_hangs_its_users() {
    use common::garbage;
    let _w = watchdog(300);
    let mut rng = garbage::Rng(0x2545_f491_4f6c_dd1d);
    for kind in ["mutex", "semaphore", "event"] {
        let root = TestRoot::new("sync-garbage");
        let name = root.name("Local\\scribbled");
        let o = root.opts();
        let here = match kind {
            "mutex" => Sync::Mutex(o.create_mutex(&name).unwrap()),
            "semaphore" => Sync::Semaphore(o.create_semaphore(&name, 1, 3).unwrap()),
            _ => Sync::Event(o.create_event(&name, false, false).unwrap()),
        };
        let path = here.os_path();
        let area = std::fs::metadata(&path).unwrap().len() as usize - 4096;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut kid = Reap(spawn_role("child", "poke", &root.path, &[kind, &name]));
        assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
        let mut round_trip = |round: u64| {
            here.poke();
            let info = root.ns().info(&name);
            assert!(info.is_ok(), "{kind}: {info:?}");
            writeln!(kid.0.stdin.as_mut().unwrap(), "go").unwrap();
            assert_eq!(read_line_within(&mut kid.0, LINE), "ok", "{kind} {round}");
        };
        for round in 0..300 {
            garbage::scribble(&file, 0, area, round, &mut rng);
            round_trip(round);
        }
        garbage::scribbling(&file, 0, area, || (300..500).for_each(&mut round_trip));
        drop(kid.0.stdin.take());
        assert_eq!(read_line_within(&mut kid.0, LINE), "bye", "{kind}");
        let status = kid.0.wait().unwrap();
        assert!(status.success(), "{kind}: the other process {status:?}");
        drop((here, file));
        assert!(
            root.local_files().is_empty(),
            "{kind}: {:?}",
            root.local_files()
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn garbage_in_a_mutex_state_is_an_error_or_a_stuck_lock_never_a_crash() {
    let _w = watchdog(120);
    let root = TestRoot::new("garbage");
    let name = root.name("Local\\m");
    let m = root.opts().create_mutex(&name).unwrap();
    // The lock word changed while we own it: the release says so, and leaves it alone.
    m.acquire(None).unwrap();
    overwrite(&m, &0x1234u32.to_le_bytes());
    match m.release() {
        Err(e @ Error::Corrupt { .. }) => assert!(
            e.to_string()
                .contains("changed its lock word to 0x00001234"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(m.release(), Err(Error::NotOwner { .. })));
    // A lock word naming someone who never lets go: a timeout, not a hang or a crash.
    let start = Instant::now();
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
    // Marked abandoned by a writer: the next locker is told.
    overwrite(&m, &0x4000_0000u32.to_le_bytes());
    assert!(m.lock().unwrap().is_abandoned());
    // Random bytes over the whole state, many times, while other processes use it: every
    // call returns (an error, a timeout, a lock) and nobody dies of a signal.
    let mut probe = spawn(&root, "probe", &[&name]);
    expect(&mut probe, "ready");
    let rng = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let garbage: Vec<u8> = (0..520).map(|_| next_random(&rng) as u8).collect();
        overwrite(&m, &garbage);
        if let Ok(lock) = m.lock_timeout(Duration::from_millis(1)) {
            drop(lock);
        }
        let _ = m.release();
        let answer = ask(&mut probe, "try");
        assert!(
            ["busy", "acquired", "abandoned"].contains(&answer.as_str()),
            "{answer:?}"
        );
    }
    // Zeros make it a fresh mutex again.
    overwrite(&m, &[0u8; 520]);
    assert!(!m.lock().unwrap().is_abandoned());
    let_go(&mut probe);
    let status = probe.0.wait().unwrap();
    assert!(status.success(), "the other process: {status:?}");
}
