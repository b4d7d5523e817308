//! Named mutexes, semaphores and events across real processes. Children are this test
//! binary, re-run in a role (see `child`).
// Linux and Windows (under Wine in CI). Linux-only parts (info, list, persistence) are
// marked so.
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::time::{Duration, Instant};

use common::{
    kill_hard, next_reports, opts, own_mutex_until_eof, read_line_within, report, role, spawn_role,
    wait_for_stdin_eof, watchdog, Reap, TestRoot,
};
use filemap::{wait_any, Access, Error, Kind, WaitOutcome};

const LINE: Duration = Duration::from_secs(20);

#[test]
fn child() {
    let Some((role, args)) = role() else { return };
    match role.as_str() {
        // Add 1 to a counter M times under the mutex, with a deliberately racy
        // read-yield-write, so that a broken mutex loses updates.
        "count" => {
            let m = opts().open_mutex(&args[0]).unwrap();
            let map = opts().open(&args[1], Access::ReadWrite).unwrap();
            let v = map.map_view(Access::ReadWrite, 0, 8).unwrap();
            let times: u32 = args[2].parse().unwrap();
            for _ in 0..times {
                let lock = m.lock().unwrap();
                assert!(!lock.is_abandoned());
                let mut b = [0u8; 8];
                v.read_at(0, &mut b).unwrap();
                std::thread::yield_now();
                v.write_at(0, &(u64::from_le_bytes(b) + 1).to_le_bytes())
                    .unwrap();
            }
            report("done");
        }
        // Take the mutex and hold it until stdin closes (or the process is killed).
        "own" => own_mutex_until_eof(&args[0]),
        // Block on the mutex and say how it came.
        "lock" => {
            let m = opts().open_mutex(&args[0]).unwrap();
            report("waiting");
            let lock = m.lock().unwrap();
            report(if lock.is_abandoned() {
                "abandoned"
            } else {
                "acquired"
            });
            drop(lock);
        }
        // Wait on an event with a timeout, report whether it fired; repeat for `n` waits.
        "event" => {
            let e = opts().open_event(&args[0]).unwrap();
            report("ready");
            let secs: u64 = args[1].parse().unwrap();
            match e.wait_timeout(Duration::from_secs(secs)) {
                Ok(()) => report("woke"),
                Err(Error::Timeout { .. }) => report("timeout"),
                Err(e) => panic!("{e}"),
            }
            wait_for_stdin_eof();
        }
        "any" => {
            let e = opts().open_event(&args[0]).unwrap();
            let s = opts().open_semaphore(&args[1]).unwrap();
            report("ready");
            let i = wait_any(&[&e, &s], Some(Duration::from_secs(10))).unwrap();
            report(i.index());
        }
        // Create an object of a kind, hold it until killed.
        "hold-event" => {
            let _e = opts().create_event(&args[0], true, true).unwrap();
            let _m = opts().create_mutex(&args[1]).unwrap();
            let _s = opts().create_semaphore(&args[2], 1, 1).unwrap();
            report("ready");
            wait_for_stdin_eof();
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn processes_counting_under_the_mutex_lose_nothing() {
    let _w = watchdog(120);
    let root = TestRoot::new("count");
    let (mutex, counter) = (root.name("Local\\count-lock"), root.name("Local\\counter"));
    let (mutex, counter) = (mutex.as_str(), counter.as_str());
    let m = root.opts().create_mutex(mutex).unwrap();
    let map = root.opts().create(counter, 8).unwrap();
    let (n, times) = (4, 2000);
    let mut kids: Vec<Reap> = (0..n)
        .map(|_| {
            Reap(spawn_role(
                "child",
                "count",
                &root.path,
                &[mutex, counter, &times.to_string()],
            ))
        })
        .collect();
    for k in &mut kids {
        assert_eq!(read_line_within(&mut k.0, Duration::from_secs(100)), "done");
        assert!(k.0.wait().unwrap().success());
    }
    let mut b = [0u8; 8];
    map.map_view(Access::Read, 0, 8)
        .unwrap()
        .read_at(0, &mut b)
        .unwrap();
    assert_eq!(u64::from_le_bytes(b), n * times);
    drop(m);
}

#[test]
fn sigkill_of_the_owner_hands_the_mutex_on_as_abandoned() {
    let _w = watchdog(180);
    let root = TestRoot::new("abandon");
    let name = &root.name("Local\\robust");
    let mine = root.opts().create_mutex(name).unwrap();
    for round in 0..10 {
        let mut owner = Reap(spawn_role("child", "own", &root.path, &[name]));
        assert_eq!(
            read_line_within(&mut owner.0, LINE),
            "owner",
            "round {round}"
        );
        // A waiter in another process blocks on it...
        let mut waiter = Reap(spawn_role("child", "lock", &root.path, &[name]));
        assert_eq!(read_line_within(&mut waiter.0, LINE), "waiting");
        std::thread::sleep(Duration::from_millis(20));
        // ...and gets it, abandoned, when the owner is killed.
        let killed = Instant::now();
        kill_hard(&mut owner);
        assert_eq!(
            read_line_within(&mut waiter.0, LINE),
            "abandoned",
            "round {round}"
        );
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "round {round}: {:?}",
            killed.elapsed()
        );
        assert!(waiter.0.wait().unwrap().success());
        // After a clean release, the next lock is a normal one.
        assert!(
            !mine.lock_timeout(LINE).unwrap().is_abandoned(),
            "round {round}"
        );
    }
    // Killed while nobody waits: the next locker finds out.
    let mut owner = Reap(spawn_role("child", "own", &root.path, &[name]));
    assert_eq!(read_line_within(&mut owner.0, LINE), "owner");
    // Windows tells that a mutex is owned, not by whom.
    let owner_pid = if cfg!(windows) {
        None
    } else {
        Some(owner.0.id())
    };
    assert_eq!(
        root.ns().info(name).unwrap().state,
        Some(filemap::SyncState::Mutex {
            owned: true,
            owner_pid,
            abandoned: false
        })
    );
    kill_hard(&mut owner);
    assert!(matches!(
        root.ns().info(name).unwrap().state,
        Some(filemap::SyncState::Mutex {
            abandoned: true,
            ..
        })
    ));
    let lock = mine.lock_timeout(LINE).unwrap();
    assert!(lock.is_abandoned());
}

#[test]
fn mutex_is_recursive_and_only_its_owner_releases_it() {
    let _w = watchdog(60);
    let root = TestRoot::new("recursive");
    let name = &root.name("Local\\rec");
    let m = root.opts().create_mutex(name).unwrap();
    match m.release() {
        Err(e @ Error::NotOwner { .. }) => assert_eq!(
            e.to_string(),
            format!("this thread does not own the mutex {name}")
        ),
        other => panic!("{other:?}"),
    }
    let outer = m.lock().unwrap();
    let inner = m.lock().unwrap();
    assert!(!outer.is_abandoned() && !inner.is_abandoned());
    // Another thread (of another handle) cannot take it or release it meanwhile.
    std::thread::scope(|s| {
        s.spawn(|| {
            let other = root.opts().open_mutex(name).unwrap();
            assert!(matches!(other.try_lock(), Err(Error::Timeout { .. })));
            assert!(matches!(other.release(), Err(Error::NotOwner { .. })));
        });
    });
    drop(inner);
    std::thread::scope(|s| {
        s.spawn(|| {
            let other = root.opts().open_mutex(name).unwrap();
            assert!(
                matches!(other.try_lock(), Err(Error::Timeout { .. })),
                "still held once"
            );
        });
    });
    drop(outer);
    std::thread::scope(|s| {
        s.spawn(|| {
            let other = root.opts().open_mutex(name).unwrap();
            assert!(other.try_lock().is_ok(), "released");
        });
    });
}

#[test]
fn timeouts_are_lower_bounds() {
    let _w = watchdog(60);
    let root = TestRoot::new("timeouts");
    let held = &root.name("Local\\held");
    let mut owner = Reap(spawn_role("child", "own", &root.path, &[held]));
    assert_eq!(read_line_within(&mut owner.0, LINE), "owner");
    let m = root.opts().open_mutex(held).unwrap();
    let e = root
        .opts()
        .create_event(&root.name("Local\\never"), true, false)
        .unwrap();
    let s = root
        .opts()
        .create_semaphore(&root.name("Local\\empty"), 0, 1)
        .unwrap();
    let t = Duration::from_millis(150);
    type Check<'a> = (&'a str, Box<dyn Fn() -> filemap::Result<()> + 'a>);
    let checks: Vec<Check<'_>> = vec![
        ("mutex", Box::new(|| m.lock_timeout(t).map(drop))),
        ("event", Box::new(|| e.wait_timeout(t))),
        ("semaphore", Box::new(|| s.acquire_timeout(t))),
        (
            "wait_any",
            Box::new(|| wait_any(&[&e, &s], Some(t)).map(drop)),
        ),
    ];
    for (what, f) in checks {
        let start = Instant::now();
        match f() {
            Err(Error::Timeout { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
        assert!(
            start.elapsed() >= t,
            "{what} returned after {:?}",
            start.elapsed()
        );
    }
    // A zero timeout is a try.
    assert!(matches!(m.try_lock(), Err(Error::Timeout { .. })));
    assert!(matches!(e.try_wait(), Err(Error::Timeout { .. })));
    assert!(matches!(s.try_acquire(), Err(Error::Timeout { .. })));
    assert_eq!(
        wait_any(&[&e, &s], Some(Duration::ZERO))
            .unwrap_err()
            .to_string(),
        "timed out waiting for any of 2 objects"
    );
}

/// Windows counts in a LONG: the same limit, and the same errors, on every platform.
#[test]
fn semaphore_counts_are_limited_as_on_windows() {
    let root = TestRoot::new("semmax");
    let name = &root.name("Local\\semmax");
    let max = filemap::Semaphore::MAX_COUNT;
    assert_eq!(max, 2_147_483_647);
    match root.opts().create_semaphore(name, 0, max + 1) {
        Err(e @ Error::InvalidArgument { .. }) => assert_eq!(
            e.to_string(),
            "invalid argument: a semaphore's maximum count is at most 2147483647 (Windows' LONG), not 2147483648"
        ),
        other => panic!("{other:?}"),
    }
    let s = root.opts().create_semaphore(name, 0, max).unwrap();
    assert_eq!(s.max(), max);
    // A release past the limit is refused, never cut down to fit.
    assert!(matches!(
        s.release(u32::MAX),
        Err(Error::TooManyPosts { .. })
    ));
    assert_eq!(s.count(), 0);
    assert_eq!(s.release(max).unwrap(), 0);
    assert_eq!(s.count(), max);
}

#[test]
fn semaphore_refuses_to_pass_its_maximum() {
    let root = TestRoot::new("sem");
    let name = &root.name("Local\\sem");
    let s = root.opts().create_semaphore(name, 1, 3).unwrap();
    assert_eq!((s.count(), s.max()), (1, 3));
    assert_eq!(s.release(2).unwrap(), 1);
    match s.release(1) {
        Err(e @ Error::TooManyPosts { .. }) => assert_eq!(
            e.to_string(),
            format!("releasing {name} by 1 would pass its maximum count of 3 (it is 3); nothing changed")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.count(), 3);
    // Another handle sees the same counts; an existing semaphore keeps its own.
    let other = root.opts().open_or_create_semaphore(name, 0, 100).unwrap();
    assert!(other.already_existed());
    assert_eq!((other.count(), other.max()), (3, 3));
    for _ in 0..3 {
        other.try_acquire().unwrap();
    }
    assert!(matches!(s.try_acquire(), Err(Error::Timeout { .. })));
    for (initial, max, message) in [
        (
            0,
            0,
            "invalid argument: a semaphore's maximum count must be at least 1",
        ),
        (
            5,
            4,
            "invalid argument: the initial count 5 is above the maximum count 4",
        ),
    ] {
        assert_eq!(
            root.opts()
                .create_semaphore(&root.name("Local\\bad"), initial, max)
                .unwrap_err()
                .to_string(),
            message
        );
    }
}

/// Starts `n` processes waiting on `event` for at most `secs`; returns them once all are
/// waiting.
fn event_waiters(root: &TestRoot, event: &str, n: usize, secs: u64) -> Vec<Reap> {
    let secs = secs.to_string();
    let mut kids: Vec<Reap> = (0..n)
        .map(|_| Reap(spawn_role("child", "event", &root.path, &[event, &secs])))
        .collect();
    for k in &mut kids {
        assert_eq!(read_line_within(&mut k.0, LINE), "ready");
    }
    // "ready" comes just before the wait: give them time to fall asleep.
    std::thread::sleep(Duration::from_millis(200));
    kids
}

#[test]
fn auto_reset_wakes_one_waiter_per_set_and_manual_reset_wakes_all() {
    let _w = watchdog(120);
    let root = TestRoot::new("events");
    // Auto-reset: 4 waiters, 2 sets, exactly 2 wake; the others time out.
    let auto_name = &root.name("Local\\auto");
    let auto = root.opts().create_event(auto_name, false, false).unwrap();
    let mut kids = event_waiters(&root, auto_name, 4, 3);
    auto.set().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    auto.set().unwrap();
    let reports = next_reports(&mut kids, LINE);
    assert_eq!(
        reports.iter().filter(|r| *r == "woke").count(),
        2,
        "{reports:?}"
    );
    assert_eq!(
        reports.iter().filter(|r| *r == "timeout").count(),
        2,
        "{reports:?}"
    );
    assert!(!auto.is_set(), "the waiters reset it");
    drop(kids);
    // Manual-reset: 4 waiters, 1 set, all 4 wake at once (well before their 30 s timeout,
    // which a lost wake-up would make them sit out), and it stays set until reset.
    let manual_name = &root.name("Local\\manual");
    let manual = root.opts().create_event(manual_name, true, false).unwrap();
    let mut kids = event_waiters(&root, manual_name, 4, 30);
    let set_at = Instant::now();
    manual.set().unwrap();
    let reports = next_reports(&mut kids, LINE);
    assert_eq!(reports, ["woke"; 4]);
    assert!(
        set_at.elapsed() < Duration::from_secs(15),
        "{:?}",
        set_at.elapsed()
    );
    assert!(manual.is_set());
    assert!(manual.try_wait().is_ok() && manual.try_wait().is_ok());
    manual.reset().unwrap();
    assert!(matches!(manual.try_wait(), Err(Error::Timeout { .. })));
    // Set and reset at once: everyone who was waiting is still released.
    let mut kids = event_waiters(&root, manual_name, 3, 30);
    let set_at = Instant::now();
    manual.set().unwrap();
    manual.reset().unwrap();
    assert_eq!(next_reports(&mut kids, LINE), ["woke"; 3]);
    assert!(
        set_at.elapsed() < Duration::from_secs(15),
        "{:?}",
        set_at.elapsed()
    );
    assert!(!manual.is_set());
    assert_eq!(
        root.ns().info(manual_name).unwrap().state,
        Some(filemap::SyncState::Event {
            set: false,
            manual_reset: true
        })
    );
}

#[test]
fn wait_any_over_mixed_kinds_across_processes() {
    let _w = watchdog(60);
    let root = TestRoot::new("any");
    let (e_name, s_name) = (root.name("Local\\any-event"), root.name("Local\\any-sem"));
    let e = root.opts().create_event(&e_name, false, false).unwrap();
    let s = root.opts().create_semaphore(&s_name, 0, 10).unwrap();
    for (fire, expected) in [("sem", "1"), ("event", "0"), ("sem", "1")] {
        let mut kid = Reap(spawn_role("child", "any", &root.path, &[&e_name, &s_name]));
        assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
        std::thread::sleep(Duration::from_millis(100));
        match fire {
            "sem" => assert_eq!(s.release(1).unwrap(), 0),
            _ => e.set().unwrap(),
        }
        assert_eq!(read_line_within(&mut kid.0, LINE), expected);
        assert!(kid.0.wait().unwrap().success());
        assert_eq!(s.count(), 0, "the semaphore was taken");
        assert!(!e.is_set(), "the auto-reset event was taken");
    }
    // The lowest signalled index wins.
    s.release(1).unwrap();
    e.set().unwrap();
    assert_eq!(
        wait_any(&[&s, &e], None).unwrap(),
        WaitOutcome::Signalled(0)
    );
    assert_eq!(
        wait_any(&[&s, &e], None).unwrap(),
        WaitOutcome::Signalled(1)
    );
    assert!(matches!(
        wait_any(&[], None),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn kinds_collide_in_both_directions() {
    let root = TestRoot::new("kinds");
    let o = root.opts();
    let names = [
        root.name("Local\\as-mapping"),
        root.name("Local\\as-mutex"),
        root.name("Local\\as-semaphore"),
        root.name("Local\\as-event"),
    ];
    let _map = o.create(&names[0], 8).unwrap();
    let _mutex = o.create_mutex(&names[1]).unwrap();
    let _sem = o.create_semaphore(&names[2], 0, 1).unwrap();
    let _event = o.create_event(&names[3], false, false).unwrap();
    let kinds = [Kind::Mapping, Kind::Mutex, Kind::Semaphore, Kind::Event];
    for (name, kind) in names.iter().zip(kinds) {
        assert_eq!(root.ns().kind(name).unwrap(), kind);
    }
    assert!(matches!(
        root.ns().kind(&root.name("Local\\nothing")),
        Err(Error::NotFound { kind: None, .. })
    ));
    for (i, name) in names.iter().enumerate() {
        let attempts: [(Kind, filemap::Result<()>); 8] = [
            (Kind::Mapping, o.open(name, Access::Read).map(drop)),
            (Kind::Mapping, o.open_or_create(name, 8).map(drop)),
            (Kind::Mutex, o.open_mutex(name).map(drop)),
            (Kind::Mutex, o.create_mutex(name).map(drop)),
            (Kind::Semaphore, o.open_semaphore(name).map(drop)),
            (
                Kind::Semaphore,
                o.open_or_create_semaphore(name, 0, 1).map(drop),
            ),
            (Kind::Event, o.open_event(name).map(drop)),
            (
                Kind::Event,
                o.open_or_create_event(name, false, false).map(drop),
            ),
        ];
        for (kind, result) in attempts {
            if kind == kinds[i] {
                continue;
            }
            match result {
                Err(Error::KindMismatch {
                    expected, found, ..
                }) => assert_eq!((expected, found), (kind, kinds[i])),
                other => panic!("{kind} over {}: {other:?}", kinds[i]),
            }
        }
    }
    assert_eq!(
        o.open_event(&names[1]).unwrap_err().to_string(),
        format!("{} is a mutex, not an event", names[1])
    );
}

#[test]
fn sync_objects_vanish_with_their_last_holder_even_after_sigkill() {
    let _w = watchdog(60);
    let root = TestRoot::new("synclife");
    let names = [
        root.name("Local\\le"),
        root.name("Local\\lm"),
        root.name("Global\\ls"),
    ];
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut kid = Reap(spawn_role("child", "hold-event", &root.path, &args));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    assert!(root.opts().open_event(&names[0]).unwrap().is_set());
    kill_hard(&mut kid);
    assert!(matches!(
        root.opts().open_event(&names[0]),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        root.opts().open_mutex(&names[1]),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        root.opts().open_semaphore(&names[2]),
        Err(Error::NotFound { .. })
    ));
    #[cfg(target_os = "linux")]
    assert!(root.ns().list().unwrap().is_empty());
    // A fresh one starts from its own initial state.
    let e = root.opts().create_event(&names[0], true, false).unwrap();
    assert!(!e.is_set());
}

/// Linux only: Windows destroys an object with its last handle, so it has no persistence.
#[cfg(target_os = "linux")]
#[test]
fn persistent_sync_objects_stay_until_removed() {
    let root = TestRoot::new("syncpersist");
    drop(
        root.opts()
            .clone()
            .persistent(true)
            .create_semaphore("Local\\kept", 2, 5)
            .unwrap(),
    );
    let kept = root.opts().open_semaphore("Local\\kept").unwrap();
    assert_eq!(kept.count(), 2);
    assert_eq!(
        root.ns().info("Local\\kept").unwrap().state,
        Some(filemap::SyncState::Semaphore { count: 2, max: 5 })
    );
    drop(kept);
    root.ns().remove("Local\\kept").unwrap();
    assert!(matches!(
        root.opts().open_semaphore("Local\\kept"),
        Err(Error::NotFound { .. })
    ));
}
