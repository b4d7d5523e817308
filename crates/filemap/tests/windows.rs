//! The Windows backend, run under Wine in CI: mappings, kinds, mutexes, semaphores, events
//! and wait_any, across real Windows processes (this test binary re-run in a role).
#![cfg(windows)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use filemap::{wait_any, Access, Error, Event, FileMapping, Kind, Mutex, Options, Semaphore};

static N: AtomicUsize = AtomicUsize::new(0);

/// A name of the test's own (Windows objects live in the kernel's session namespace).
fn unique(tag: &str) -> String {
    format!(
        "Local\\filemap-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_role(role: &str, name: &str) -> Reap {
    Reap(
        Command::new(std::env::current_exe().unwrap())
            .args(["child", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env("FILEMAP_TEST_ROLE", role)
            .env("FILEMAP_TEST_NAME", name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The next line the child reports with the "@@ " prefix.
fn report(child: &mut Reap) -> String {
    let out = child.0.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            return String::new();
        }
        if let Some(r) = line.trim_end().strip_prefix("@@ ") {
            return r.to_owned();
        }
    }
}

#[test]
fn child() {
    let Ok(role) = std::env::var("FILEMAP_TEST_ROLE") else {
        return;
    };
    let name = std::env::var("FILEMAP_TEST_NAME").unwrap();
    let say = |s: &str| {
        println!("@@ {s}");
        std::io::stdout().flush().unwrap();
    };
    match role.as_str() {
        "read" => {
            let m = FileMapping::open(&name, Access::Read).unwrap();
            let mut buf = [0u8; 5];
            m.map_view(Access::Read, 70_000, 5)
                .unwrap()
                .read_at(0, &mut buf)
                .unwrap();
            say(&format!("{} {}", m.size(), String::from_utf8_lossy(&buf)));
        }
        "own" => {
            let m = Mutex::open(&name).unwrap();
            let lock = m.lock().unwrap();
            say("owner");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(lock);
        }
        "any" => {
            let e = Event::open(&format!("{name}-e")).unwrap();
            let s = Semaphore::open(&format!("{name}-s")).unwrap();
            say("ready");
            say(&wait_any(&[&e, &s], Some(Duration::from_secs(20)))
                .unwrap()
                .to_string());
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn mappings_across_processes_with_exact_sizes() {
    let name = unique("map");
    let m = FileMapping::open_or_create(&name, 100_000).unwrap();
    assert!(!m.already_existed());
    assert_eq!(m.size(), 100_000, "exact, not page-rounded");
    // An offset that is not a multiple of the 64 KiB allocation granularity.
    m.map_view(Access::ReadWrite, 70_000, 5)
        .unwrap()
        .write_at(0, b"hello")
        .unwrap();
    let again = FileMapping::open_or_create(&name, 5).unwrap();
    assert!(again.already_existed());
    assert_eq!(again.size(), 100_000, "the existing size wins");
    assert!(matches!(
        FileMapping::create(&name, 10),
        Err(Error::AlreadyExists { .. })
    ));
    let mut kid = spawn_role("read", &name);
    assert_eq!(report(&mut kid), "100000 hello");
    assert!(kid.0.wait().unwrap().success());
    // Read-only handles cannot make writable views; copy-on-write stays private.
    let ro = FileMapping::open(&name, Access::Read).unwrap();
    assert!(matches!(
        ro.map_view(Access::ReadWrite, 0, 0),
        Err(Error::PermissionDenied { .. })
    ));
    let ro_view = ro.map_view(Access::Read, 70_000, 5).unwrap();
    assert!(matches!(
        ro_view.write_at(0, b"x"),
        Err(Error::PermissionDenied { .. })
    ));
    let cow = m.map_view(Access::CopyOnWrite, 70_000, 5).unwrap();
    cow.write_at(0, b"HELLO").unwrap();
    let mut buf = [0u8; 5];
    ro_view.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert!(matches!(
        m.map_view(Access::Read, 100_000, 0),
        Err(Error::OutOfRange { .. })
    ));
    // The last handle and view close: the mapping is gone.
    let view = again.map_view(Access::Read, 0, 0).unwrap();
    drop((m, again, ro, ro_view, cow));
    assert!(
        FileMapping::open(&name, Access::Read).is_ok(),
        "a view keeps it alive"
    );
    drop(view);
    match FileMapping::open(&name, Access::Read) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn kinds_collide_in_both_directions() {
    let name = unique("kind");
    let _event = Event::create(&name, false, false).unwrap();
    match FileMapping::open_or_create(&name, 10) {
        Err(Error::KindMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (Kind::Mapping, Kind::Event)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Mutex::open_or_create(&name),
        Err(Error::KindMismatch {
            found: Kind::Event,
            ..
        })
    ));
    let map_name = unique("kind-map");
    let _map = FileMapping::create(&map_name, 10).unwrap();
    let ns = filemap::Namespace::new();
    assert_eq!(ns.kind(&name).unwrap(), Kind::Event);
    assert_eq!(ns.kind(&map_name).unwrap(), Kind::Mapping);
    assert!(matches!(
        ns.kind(&unique("none")),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Semaphore::open_or_create(&map_name, 0, 1),
        Err(Error::KindMismatch {
            found: Kind::Mapping,
            ..
        })
    ));
    assert!(matches!(
        Event::open(&map_name),
        Err(Error::KindMismatch { .. }) | Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_killed_owner_leaves_the_mutex_abandoned() {
    let name = unique("abandon");
    let m = Mutex::create(&name).unwrap();
    for round in 0..3 {
        let mut kid = spawn_role("own", &name);
        assert_eq!(report(&mut kid), "owner", "round {round}");
        assert!(matches!(m.try_lock(), Err(Error::Timeout { .. })));
        kid.0.kill().unwrap(); // TerminateProcess
        kid.0.wait().unwrap();
        let lock = m.lock_timeout(Duration::from_secs(10)).unwrap();
        assert!(lock.is_abandoned(), "round {round}");
    }
    assert!(matches!(m.release(), Err(Error::NotOwner { .. })));
}

#[test]
fn semaphores_events_and_wait_any() {
    let name = unique("sync");
    let s = Semaphore::create(&format!("{name}-s"), 1, 2).unwrap();
    assert_eq!((s.count(), s.max()), (1, 2));
    assert_eq!(s.release(1).unwrap(), 1);
    assert!(matches!(
        s.release(1),
        Err(Error::TooManyPosts {
            count: 2,
            max: 2,
            ..
        })
    ));
    assert_eq!(s.count(), 2);
    s.try_acquire().unwrap();
    s.try_acquire().unwrap();
    let e = Event::create(&format!("{name}-e"), false, false).unwrap();
    assert!(!e.is_manual_reset() && !e.is_set());
    let start = Instant::now();
    assert!(matches!(
        wait_any(&[&e, &s], Some(Duration::from_millis(200))),
        Err(Error::Timeout { .. })
    ));
    assert!(start.elapsed() >= Duration::from_millis(200));
    // Across processes: the child waits for either, the parent fires one.
    for (fire_event, expected) in [(false, "1"), (true, "0")] {
        let mut kid = spawn_role("any", &name);
        assert_eq!(report(&mut kid), "ready");
        std::thread::sleep(Duration::from_millis(100));
        if fire_event {
            e.set();
        } else {
            s.release(1).unwrap();
        }
        assert_eq!(report(&mut kid), expected);
        assert!(kid.0.wait().unwrap().success());
    }
    let manual = Options::new()
        .create_event(&format!("{name}-m"), true, true)
        .unwrap();
    assert!(manual.is_manual_reset() && manual.is_set());
    manual.wait().unwrap();
    assert!(manual.is_set(), "manual-reset stays set");
    manual.reset();
    assert!(matches!(manual.try_wait(), Err(Error::Timeout { .. })));
}
