//! Behaviour across real processes: racing creators, one name churned by several processes,
//! SIGKILL of every holder and of a creator half-way, sharing and copy-on-write privacy.
//! Children are this test binary, re-run in a role (see `child`).
// Linux and Windows (under Wine in CI); Linux-only parts (info, list, gc) are marked so.
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    kill_hard, opts, read_line_within, report, role, spawn_role, wait_for_stdin_eof, Reap, TestRoot,
};
use filemap::{Access, Error};

const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// The entry point of every child role. In the parent test run it does nothing.
#[test]
fn child() {
    let Some((role, args)) = role() else { return };
    let name = args[0].as_str();
    let out = |s: String| {
        let mut o = std::io::stdout().lock();
        writeln!(o, "{}{s}", common::REPORT).unwrap();
        o.flush().unwrap();
    };
    match role.as_str() {
        // Wait for "go", race open_or_create, count ourselves in, report, hold until EOF.
        "race" => {
            let mut go = String::new();
            std::io::stdin().lock().read_line(&mut go).unwrap();
            let m = opts().open_or_create(name, 4096).unwrap();
            let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
            v.atomic_u32(0).unwrap().fetch_add(1, Ordering::SeqCst);
            out(if m.already_existed() {
                "opened".into()
            } else {
                "created".into()
            });
            wait_for_stdin_eof();
        }
        // At each line on stdin, look at object `name` of kind args[1] every way there is
        // (see `look`), and report "ok"; at the end of stdin, "bye".
        "look" => {
            let mut line = String::new();
            out("ready".into());
            while std::io::stdin().lock().read_line(&mut line).unwrap() > 0 {
                look(&filemap::Namespace::new(), &opts(), name, &args[1]);
                out("ok".into());
                line.clear();
            }
            out("bye".into());
        }
        // Hold a handle and a view until killed.
        "hold" => {
            let m = opts().open_or_create(name, 4096).unwrap();
            let v = m.map_view(Access::ReadWrite, 100, 8).unwrap();
            v.write_at(0, b"holding!").unwrap();
            out("ready".into());
            wait_for_stdin_eof();
            drop((v, m));
        }
        // Keep only a view: report, then at each line read and write through it.
        "view-only" => {
            let m = opts().open(name, Access::ReadWrite).unwrap();
            let v = m.map_view(Access::ReadWrite, 0, 16).unwrap();
            drop(m);
            out("ready".into());
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).unwrap();
            let mut buf = [0u8; 6];
            v.read_at(0, &mut buf).unwrap();
            v.write_at(8, b"child").unwrap();
            out(String::from_utf8_lossy(&buf).into_owned());
            wait_for_stdin_eof();
        }
        // Write through a copy-on-write view; report what each view sees.
        "cow" => {
            let m = opts().open(name, Access::Read).unwrap();
            let cow = m.map_view(Access::CopyOnWrite, 0, 16).unwrap();
            cow.write_at(0, b"child-private").unwrap();
            let shared = m.map_view(Access::Read, 0, 16).unwrap();
            let (mut a, mut b) = ([0u8; 13], [0u8; 13]);
            cow.read_at(0, &mut a).unwrap();
            shared.read_at(0, &mut b).unwrap();
            out(format!(
                "{}|{}",
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            ));
            wait_for_stdin_eof();
        }
        // Open a named file-backed mapping by name and write into it.
        "file" => {
            let m = opts().open(name, Access::ReadWrite).unwrap();
            let v = m.map_view(Access::ReadWrite, 5, 5).unwrap();
            v.write_at(0, b"CHILD").unwrap();
            v.flush().unwrap();
            out(format!("size {}", m.size()));
        }
        // Open, create, close and re-create one name in a loop with the other churners, and
        // check on a board that every process holding the name holds the same object.
        "churn" => churn(
            name,
            &args[1],
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
        ),
        // Report, then create a large mapping (its reservation takes a while), and report.
        "create-big" => {
            out("creating".into());
            let m = opts().create(name, args[1].parse().unwrap()).unwrap();
            out("created".into());
            wait_for_stdin_eof();
            drop(m);
        }
        // Write typed values at odd offsets; report the parent's array, read the same way.
        "typed" => {
            let m = opts().open(name, Access::ReadWrite).unwrap();
            let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
            v.write_value(3, &0x0102_0304_0506_0708u64).unwrap();
            v.write_value(17, &-1.5f64).unwrap();
            v.write_array(101, &[1u32, 2, 3, u32::MAX]).unwrap();
            let mut theirs = [0u16; 3];
            v.read_array(201, &mut theirs).unwrap();
            out(format!("{theirs:?}"));
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Typed values and arrays through views, at any alignment, between processes (as .NET's
/// `MemoryMappedViewAccessor.Read<T>`/`Write<T>`), in the platform's byte order; out of
/// range and read-only as for bytes.
#[test]
fn typed_values_pass_between_processes_at_any_offset() {
    let root = TestRoot::new("typed");
    let name = &root.name("Local\\typed");
    let m = root.opts().create(name, 4096).unwrap();
    let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    v.write_array(201, &[7u16, 8, 65535]).unwrap();
    let mut kid = Reap(spawn_role("child", "typed", &root.path, &[name]));
    assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "[7, 8, 65535]");
    assert!(kid.0.wait().unwrap().success());
    assert_eq!(v.read_value::<u64>(3).unwrap(), 0x0102_0304_0506_0708);
    let mut bytes = [0u8; 8];
    v.read_at(3, &mut bytes).unwrap();
    assert_eq!(bytes, 0x0102_0304_0506_0708u64.to_ne_bytes());
    assert_eq!(v.read_value::<f64>(17).unwrap(), -1.5);
    let mut four = [0u32; 4];
    v.read_array(101, &mut four).unwrap();
    assert_eq!(four, [1, 2, 3, u32::MAX]);
    // Out of range by one byte, and a read-only view: errors, nothing written.
    match v.read_value::<u64>(4089) {
        Err(Error::OutOfRange { offset, len, size }) => {
            assert_eq!((offset, len, size), (4089, 8, 4096))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        v.write_array(4090, &[0u16; 4]),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(v.read_value::<u64>(4088).unwrap(), 0);
    let ro = m.map_view(Access::Read, 0, 0).unwrap();
    assert!(matches!(
        ro.write_value(0, &1u8),
        Err(Error::PermissionDenied { .. })
    ));
    assert_eq!(ro.read_value::<[u32; 4]>(101).unwrap(), [1, 2, 3, u32::MAX]);
}

#[test]
fn eight_racing_creators_make_one_object() {
    let root = TestRoot::new("race");
    for round in 0..5 {
        let name = root.name(&format!("Local\\race-{round}"));
        let mut kids: Vec<Reap> = (0..8)
            .map(|_| Reap(spawn_role("child", "race", &root.path, &[&name])))
            .collect();
        // Release them together.
        for k in &mut kids {
            k.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        }
        let reports: Vec<String> = kids
            .iter_mut()
            .map(|k| read_line_within(&mut k.0, LINE_TIMEOUT))
            .collect();
        assert_eq!(
            reports.iter().filter(|r| *r == "created").count(),
            1,
            "round {round}: {reports:?}"
        );
        assert_eq!(
            reports.iter().filter(|r| *r == "opened").count(),
            7,
            "round {round}: {reports:?}"
        );
        // All eight counted themselves into the one object that the name points to.
        let m = root.opts().open(&name, Access::Read).unwrap();
        assert_eq!(
            m.map_view(Access::Read, 0, 4).unwrap().load_u32(0).unwrap(),
            8,
            "round {round}"
        );
        // Linux names the holding processes; Windows counts the handles.
        let info = root.ns().info(&name).unwrap();
        if cfg!(windows) {
            assert_eq!(info.handles, Some(9), "round {round}");
        } else {
            assert_eq!(info.holders.len(), 9, "round {round}");
        }
        drop(m);
        for mut k in kids {
            drop(k.0.stdin.take());
            assert!(k.0.wait().unwrap().success());
        }
        assert!(matches!(
            root.opts().open(&name, Access::Read),
            Err(Error::NotFound { .. })
        ));
    }
    #[cfg(target_os = "linux")]
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

/// A small pseudo-random sequence, different in every process.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed ^ u64::from(std::process::id());
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// A test root for the churn tests, the churned name, and the board, held by the test.
fn churn_setup(tag: &str) -> (TestRoot, String, String, filemap::FileMapping) {
    let root = TestRoot::new(tag);
    let name = root.name("Local\\churned");
    let board_name = root.name("Local\\churn-board");
    let board = root.opts().create(&board_name, 4096).unwrap();
    (root, name, board_name, board)
}

/// Starts churner `i` for `millis`.
fn spawn_churner(root: &TestRoot, name: &str, board: &str, i: usize, millis: u128) -> Reap {
    Reap(spawn_role(
        "child",
        "churn",
        &root.path,
        &[name, board, &i.to_string(), &millis.to_string()],
    ))
}

/// How many processes churn one name in `names_churned_by_several_processes_always_mean_one_object`.
const CHURNERS: usize = 4;

/// Where the churners' board keeps the flags that mark a churner as being killed.
const DOOMED: usize = 256;

/// The "churn" role: for `millis`, open-or-create (now and then open, or read-only) the
/// mapping `name`, and close it again; the last churner takes a mutex of the same name
/// instead in a quarter of its rounds. The first writer to hold a mapping stamps it with a
/// token of its own at offset 0, and a mutex holder makes one up; every holder posts the token of the object
/// it holds in its slot of `board` (a mapping that the test holds) while it holds it, and
/// checks the other slots: two different tokens posted at once are two objects under one
/// name at once, which the lifetime protocol and the one namespace of all kinds must never
/// allow. Reports `ok CREATED OPENED REFUSED` (REFUSED: opens that met the other kind), or
/// `split ...`.
fn churn(name: &str, board: &str, index: usize, millis: u64) {
    let board = opts().open(board, Access::ReadWrite).unwrap();
    let board = board.map_view(Access::ReadWrite, 0, 0).unwrap();
    let slot = |i: usize| board.atomic_u64(8 * i).unwrap();
    let doomed = |i: usize| board.atomic_u64(DOOMED + 8 * i).unwrap();
    let mut random = xorshift(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let (mut created, mut opened, mut refused) = (0u64, 0u64, 0u64);
    let deadline = std::time::Instant::now() + Duration::from_millis(millis);
    let mut round = 0u64;
    // Posts `token`, and checks that no other process posts a different one.
    let post = |token: u64| {
        slot(index).store(token, Ordering::SeqCst);
        for other in (0..CHURNERS).filter(|&i| i != index) {
            let theirs = slot(other).load(Ordering::SeqCst);
            // A process that the test is killing holds nothing any more, or soon: the test
            // marks it doomed before the kill, and clears its slot after.
            if theirs != 0 && theirs != token && doomed(other).load(Ordering::SeqCst) == 0 {
                report(format!(
                    "split: process {index} holds {token:#x} while process {other} holds {theirs:#x}"
                ));
                std::process::exit(1);
            }
        }
    };
    while std::time::Instant::now() < deadline {
        round += 1;
        let r = random();
        if index == CHURNERS - 1 && r % 4 == 3 {
            match opts().open_or_create_mutex(name) {
                Ok(mutex) => {
                    post((0xa << 60) | round);
                    drop(mutex.lock().unwrap());
                    slot(index).store(0, Ordering::SeqCst);
                    drop(mutex);
                }
                Err(Error::KindMismatch { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            continue;
        }
        let opened_as = match r % 8 {
            0 => opts().open(name, Access::Read).map(|m| (m, Access::Read)),
            1 => opts()
                .open(name, Access::ReadWrite)
                .map(|m| (m, Access::ReadWrite)),
            _ => opts()
                .open_or_create(name, 4096)
                .map(|m| (m, Access::ReadWrite)),
        };
        let (m, access) = match opened_as {
            Ok(opened) => opened,
            Err(Error::NotFound { .. }) => continue,
            Err(Error::KindMismatch { .. }) => {
                refused += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let view = m.map_view(access, 0, 8).unwrap();
        // The first holder that may write stamps the object (its creator, unless that was
        // killed first); the others read the stamp.
        let token = if access == Access::ReadWrite {
            let mine = ((index as u64 + 1) << 48) | round;
            let stamp = view.atomic_u64(0).unwrap();
            match stamp.compare_exchange(0, mine, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => mine,
                Err(theirs) => theirs,
            }
        } else {
            // A reader waits a little for a writer's stamp, and otherwise skips the round.
            let mut stamp = 0;
            for _ in 0..10_000 {
                stamp = view.load_u64(0).unwrap();
                if stamp != 0 {
                    break;
                }
                std::thread::yield_now();
            }
            stamp
        };
        if token == 0 {
            continue;
        }
        if m.already_existed() {
            opened += 1;
        } else {
            created += 1;
        }
        post(token);
        // Hold it for a moment, now and then.
        for _ in 0..r % 4 * 100 {
            std::hint::spin_loop();
        }
        // Give up the post before the handle: a posted token is always held. A view may
        // outlive the handle; it keeps the memory but not the name.
        slot(index).store(0, Ordering::SeqCst);
        if r & 16 == 0 {
            drop(view);
            drop(m);
        } else {
            drop(m);
            drop(view);
        }
        // Leave gaps in which the name may die, so that it is made again and again.
        if r & 32 == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    report(format!("ok {created} {opened} {refused}"));
}

/// Several processes open, create and close one name for a while, through every path of
/// the lifetime protocol (creating, opening a live object, closing as the last holder and
/// not, views outliving handles), and one of them takes a mutex of that name now and then.
/// At no moment do two of them hold different objects under the name, and nothing is left
/// afterwards.
#[test]
fn names_churned_by_several_processes_always_mean_one_object() {
    let _watchdog = common::watchdog(120);
    let (root, name, board_name, board) = churn_setup("churn");
    let millis = if cfg!(windows) { 3000 } else { 1500 };
    let mut kids: Vec<Reap> = (0..CHURNERS)
        .map(|i| spawn_churner(&root, &name, &board_name, i, millis))
        .collect();
    let reports = common::next_reports(&mut kids, Duration::from_secs(100));
    let (mut created, mut opened, mut refused) = (0u64, 0u64, 0u64);
    for r in &reports {
        let counts: Vec<u64> = r
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("{reports:?}"))
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        created += counts[0];
        opened += counts[1];
        refused += counts[2];
    }
    for mut k in kids {
        assert!(k.0.wait().unwrap().success());
    }
    // The name died and was made again many times, was opened live many times, and was
    // met held by the other kind: the check above ran across every path.
    let counts = format!("created {created} times, opened {opened}, refused {refused}");
    assert!(created >= 10, "{counts}");
    assert!(opened >= 10, "{counts}");
    assert!(refused >= 1, "{counts}");
    drop(board);
    assert!(matches!(
        root.opts().open(&name, Access::Read),
        Err(Error::NotFound { .. })
    ));
    #[cfg(target_os = "linux")]
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

/// SIGKILL on Linux (checked), TerminateProcess on Windows.
fn sigkill(kid: &mut Reap) {
    kill_hard(kid);
    #[cfg(target_os = "linux")]
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&kid.0.wait().unwrap()),
        Some(9)
    );
}

#[test]
fn sigkill_of_every_holder_leaves_nothing_usable_or_visible() {
    let root = TestRoot::new("kill");
    let name = &root.name("Local\\killed");
    let mut kids: Vec<Reap> = (0..3)
        .map(|_| Reap(spawn_role("child", "hold", &root.path, &[name])))
        .collect();
    for k in &mut kids {
        assert_eq!(read_line_within(&mut k.0, LINE_TIMEOUT), "ready");
    }
    let info = root.ns().info(name).unwrap();
    assert_eq!(info.live, Some(true));
    if cfg!(windows) {
        assert_eq!(info.handles, Some(3));
    } else {
        let mut pids: Vec<u32> = kids.iter().map(|k| k.0.id()).collect();
        pids.sort();
        assert_eq!(info.holders, pids);
    }
    for k in &mut kids {
        sigkill(k);
    }
    // Not usable: the next open says NotFound, and reclaims the storage on the way.
    match root.opts().open(name, Access::Read) {
        Err(e @ Error::NotFound { .. }) => {
            assert_eq!(e.to_string(), format!("no mapping named {name}"))
        }
        other => panic!("{other:?}"),
    }
    #[cfg(target_os = "linux")]
    {
        assert!(root.local_files().is_empty(), "{:?}", root.local_files());
        assert!(root.ns().list().unwrap().is_empty());
    }
    // The next create starts a fresh, zeroed object.
    let m = root.opts().create(name, 4096).unwrap();
    let mut buf = [0xffu8; 8];
    m.map_view(Access::Read, 100, 8)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(buf, [0; 8]);
}

/// The churn of `names_churned_by_several_processes_always_mean_one_object`, while the test
/// SIGKILLs a churner every few tens of milliseconds and starts a new one in its place:
/// killed holders, killed creators and killed mutex owners in any state. Still no two
/// processes ever hold different objects under the name, and what the killed leave behind
/// is absent for everyone.
#[cfg(target_os = "linux")]
#[test]
fn names_churned_while_churners_are_killed_still_mean_one_object() {
    use std::os::unix::process::ExitStatusExt;
    let _watchdog = common::watchdog(120);
    let (root, name, board_name, board) = churn_setup("churnkill");
    let view = board.map_view(Access::ReadWrite, 0, 0).unwrap();
    let total = Duration::from_millis(2000);
    let start = std::time::Instant::now();
    let spawn = |i: usize| {
        let left = total.saturating_sub(start.elapsed()).as_millis();
        spawn_churner(&root, &name, &board_name, i, left)
    };
    let mut kids: Vec<Reap> = (0..CHURNERS).map(spawn).collect();
    let mut random = xorshift(0x2545_f491_4f6c_dd1d);
    let mut kills = 0;
    while start.elapsed() + Duration::from_millis(300) < total {
        std::thread::sleep(Duration::from_millis(10 + random() % 30));
        let i = (random() % CHURNERS as u64) as usize;
        view.atomic_u64(DOOMED + 8 * i)
            .unwrap()
            .store(1, Ordering::SeqCst);
        let kid = &mut kids[i].0;
        kid.kill().unwrap();
        let status = kid.wait().unwrap();
        if status.signal() != Some(9) {
            let mut said = String::new();
            let _ = std::io::Read::read_to_string(kid.stdout.as_mut().unwrap(), &mut said);
            panic!("churner {i} ended by itself ({status}): {said}");
        }
        view.atomic_u64(8 * i).unwrap().store(0, Ordering::SeqCst);
        view.atomic_u64(DOOMED + 8 * i)
            .unwrap()
            .store(0, Ordering::SeqCst);
        kids[i] = spawn(i);
        kills += 1;
    }
    let reports = common::next_reports(&mut kids, Duration::from_secs(100));
    assert!(reports.iter().all(|r| r.starts_with("ok ")), "{reports:?}");
    for mut k in kids {
        assert!(k.0.wait().unwrap().success());
    }
    assert!(kills >= 10, "only {kills} kills");
    drop((view, board));
    // A killed last holder leaves a stale object: absent for everyone, and removed by the
    // next open that may remove it.
    assert!(matches!(
        root.opts().open(&name, Access::Read),
        Err(Error::NotFound { .. })
    ));
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

/// A creator killed while it reserves the storage of a large mapping leaves nothing: the
/// object is built unnamed and named only when it is whole, so no one ever sees the name,
/// and its memory goes with the killed process. Linux only: Windows makes a mapping in one
/// call and commits its memory lazily, so there is no "while".
#[cfg(target_os = "linux")]
#[test]
fn a_creator_killed_while_it_creates_leaves_nothing() {
    let _watchdog = common::watchdog(120);
    let root = TestRoot::new("killcreate");
    let name = root.name("Local\\half-made");
    // 2 GiB: reserving (and zeroing) it takes a few hundred milliseconds.
    let size: u64 = 2 << 30;
    let free = || {
        // The root is made on first use; its parent is on the same file system.
        let st = rustix::fs::statvfs(root.path.parent().unwrap()).unwrap();
        st.f_bavail * st.f_frsize
    };
    if free() < 4 * size {
        eprintln!("skipped: the namespace's file system has less than 8 GiB free");
        return;
    }
    let before = free();
    let mut kid = Reap(spawn_role(
        "child",
        "create-big",
        &root.path,
        &[&name, &size.to_string()],
    ));
    assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "creating");
    // Wait until the reservation is under way: the file system fills up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while before.saturating_sub(free()) < size / 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reservation never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Half made, the object has no name yet.
    assert!(matches!(
        root.opts().open(&name, Access::Read),
        Err(Error::NotFound { .. })
    ));
    sigkill(&mut kid);
    // It was killed before it was done (it never said so).
    let mut rest = String::new();
    std::io::Read::read_to_string(kid.0.stdout.as_mut().unwrap(), &mut rest).unwrap();
    assert!(
        !rest.contains("created"),
        "the kill came too late: {rest:?}"
    );
    // Nothing is left: no name, no file, and the memory is free again (give or take what
    // tests running alongside use).
    assert!(matches!(
        root.opts().open(&name, Access::Read),
        Err(Error::NotFound { .. })
    ));
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while before.saturating_sub(free()) > size / 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} bytes still in use",
            before.saturating_sub(free())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Linux only: Windows has no stale objects to collect.
#[cfg(target_os = "linux")]
#[test]
fn gc_collects_what_killed_processes_left() {
    let root = TestRoot::new("killgc");
    let names = ["Local\\k1", "Global\\k2"];
    let mut kids: Vec<Reap> = names
        .iter()
        .map(|n| Reap(spawn_role("child", "hold", &root.path, &[n])))
        .collect();
    for k in &mut kids {
        assert_eq!(read_line_within(&mut k.0, LINE_TIMEOUT), "ready");
        sigkill(k);
    }
    // Stale entries are visible as such until collected...
    let listed = root.ns().list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|i| i.live == Some(false) && i.holders.is_empty()));
    // ...and gc removes every one of them.
    let mut removed: Vec<String> = root
        .ns()
        .gc()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    removed.sort();
    assert_eq!(removed, ["Global\\k2", "Local\\k1"]);
    assert!(root.ns().list().unwrap().is_empty());
}

/// Every way to look at object `name` of `kind`, and to open it, whatever its file holds:
/// each returns (what, is not checked: only that nothing panics or crashes).
fn look(ns: &filemap::Namespace, o: &filemap::Options, name: &str, kind: &str) {
    let _ = ns.list_all();
    let _ = ns.info(name);
    let _ = ns.holders(name);
    let _ = ns.kind(name);
    match kind {
        "mapping" => {
            if let Ok(m) = o.open(name, Access::Read) {
                if let Ok(v) = m.map_view(Access::Read, 0, 0) {
                    let mut b = vec![0u8; v.len().min(64)];
                    v.read_at(0, &mut b).unwrap();
                }
            }
        }
        "mutex" => {
            if let Ok(m) = o.open_mutex(name) {
                if let Ok(l) = m.lock_timeout(Duration::from_millis(1)) {
                    drop(l);
                }
            }
        }
        "event" => {
            if let Ok(e) = o.open_event(name) {
                let _ = e.wait_timeout(Duration::from_millis(1));
            }
        }
        _ => {
            if let Ok(s) = o.open_stream(name) {
                if let Ok(mut rx) = s.receiver() {
                    let _ = rx.try_recv().map(|m| m.map(|m| m.to_vec()));
                }
            }
        }
    }
}

/// Someone who may write an object scribbles over the end of its file, where its record
/// (and a long name) lives, while it is held: every look at it, from this process and
/// another, returns, and never panics or crashes; once nobody holds it, nothing of it is
/// left after `gc`.
#[cfg(target_os = "linux")]
#[test]
fn garbage_in_an_objects_record_is_an_error_never_a_crash() {
    use std::os::unix::fs::FileExt;
    let _w = common::watchdog(300);
    let mut rng = common::garbage::Rng(0x2545_f491_4f6c_dd1d);
    let long = format!("Local\\{}", "long-".repeat(70));
    for (name, kind) in [
        ("Local\\m", "mapping"),
        (long.as_str(), "mapping"),
        ("Local\\x", "mutex"),
        ("Local\\e", "event"),
        ("Local\\s", "stream"),
    ] {
        let root = TestRoot::new("record-garbage");
        let o = root.opts();
        let held: Box<dyn std::any::Any> = match kind {
            "mapping" => Box::new(o.create(name, 10_000).unwrap()),
            "mutex" => Box::new(o.create_mutex(name).unwrap()),
            "event" => Box::new(o.create_event(name, true, false).unwrap()),
            _ => Box::new(o.create_stream(name, 4096, 100).unwrap()),
        };
        let path = root.ns().info(name).unwrap().os_path.unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        // The record's page, and a long name's pages before it.
        let from = if name == long { len - 8192 } else { len - 4096 };
        let fresh = std::fs::read(&path).unwrap()[from as usize..].to_vec();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut kid = Reap(spawn_role("child", "look", &root.path, &[name, kind]));
        assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "ready");
        for round in 0..200 {
            let mut bytes = fresh.clone();
            match round % 4 {
                // A few words at random places, each to a likely wrong value.
                0 | 1 => {
                    for _ in 0..1 + rng.next() % 4 {
                        let at = (rng.next() as usize % (bytes.len() / 8)) * 8;
                        bytes[at..at + 8]
                            .copy_from_slice(&common::garbage::likely_wrong(rng.next()));
                    }
                }
                // The first 64 bytes of the record: magic, version, kind, sizes, lengths.
                2 => {
                    let at = bytes.len() - 4096;
                    for b in &mut bytes[at + 8..at + 64] {
                        *b = rng.next() as u8;
                    }
                }
                _ => bytes.iter_mut().for_each(|b| *b = rng.next() as u8),
            }
            file.write_all_at(&bytes, from).unwrap();
            look(&root.ns(), &o, name, kind);
            writeln!(kid.0.stdin.as_mut().unwrap(), "go").unwrap();
            assert_eq!(
                read_line_within(&mut kid.0, LINE_TIMEOUT),
                "ok",
                "{kind} {round}"
            );
        }
        drop(kid.0.stdin.take());
        assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "bye");
        let status = kid.0.wait().unwrap();
        assert!(status.success(), "{kind}: the other process {status:?}");
        // Nobody holds it now: whatever its record says, nothing of it is left.
        drop((held, file));
        let gc = root.ns().gc_all().unwrap();
        assert!(gc.refused.is_empty(), "{kind}: {gc:?}");
        assert!(
            root.local_files().is_empty(),
            "{kind}: {:?}",
            root.local_files()
        );
    }
}

/// A truncated object file can be opened by nobody: gc leaves it while it is held, and
/// removes it once its holder has died, saying why.
#[cfg(target_os = "linux")]
#[test]
fn gc_removes_a_truncated_object_once_nobody_holds_it() {
    let root = TestRoot::new("truncated");
    let name = "Local\\cut";
    let mut kid = Reap(spawn_role("child", "hold", &root.path, &[name]));
    assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "ready");
    let path = root.ns().info(name).unwrap().os_path.unwrap();
    // Someone who may write it truncates it: its record is gone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(
        root.opts().open(name, Access::Read),
        Err(Error::Corrupt { .. })
    ));
    // Held: left alone, and reported.
    let gc = root.ns().gc_all().unwrap();
    assert!(gc.corrupt.is_empty() && gc.removed.is_empty());
    assert_eq!(gc.refused.len(), 1);
    assert!(path.exists());
    sigkill(&mut kid);
    let gc = root.ns().gc_all().unwrap();
    assert_eq!(gc.corrupt.len(), 1, "{gc:?}");
    assert_eq!(gc.corrupt[0].reason, "it is only 100 bytes long");
    assert_eq!(gc.corrupt[0].name.as_ref().unwrap().full(), name);
    assert!(gc.refused.is_empty());
    assert!(!path.exists());
}

#[test]
fn copy_on_write_stays_private_across_processes() {
    let root = TestRoot::new("cow");
    let name = &root.name("Local\\cow");
    let m = root.opts().create(name, 4096).unwrap();
    let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    v.write_at(0, b"shared-bytes!").unwrap();
    let mut kid = Reap(spawn_role("child", "cow", &root.path, &[name]));
    assert_eq!(
        read_line_within(&mut kid.0, LINE_TIMEOUT),
        "child-private|shared-bytes!"
    );
    let mut buf = [0u8; 13];
    v.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"shared-bytes!");
    drop(kid.0.stdin.take());
    assert!(kid.0.wait().unwrap().success());
}

#[test]
fn a_view_in_another_process_keeps_the_memory_but_not_the_name() {
    let root = TestRoot::new("viewonly");
    let name = &root.name("Local\\viewed");
    let m = root.opts().create(name, 4096).unwrap();
    let v = m.map_view(Access::ReadWrite, 0, 16).unwrap();
    v.write_at(0, b"parent").unwrap();
    let mut kid = Reap(spawn_role("child", "view-only", &root.path, &[name]));
    assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "ready");
    // The child holds a view and no handle: it is not a holder.
    let info = root.ns().info(name).unwrap();
    if cfg!(windows) {
        assert_eq!(info.handles, Some(1));
    } else {
        assert_eq!(info.holders, [std::process::id()]);
    }
    drop(m);
    match root.opts().open(name, Access::Read) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    // A new object under the name; the child's view still shares the old memory with ours.
    let fresh = root.opts().open_or_create(name, 4096).unwrap();
    assert!(!fresh.already_existed());
    writeln!(kid.0.stdin.as_mut().unwrap(), "check").unwrap();
    assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "parent");
    let mut buf = [0u8; 5];
    v.read_at(8, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
    fresh
        .map_view(Access::Read, 8, 5)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(buf, [0; 5]);
    drop(kid.0.stdin.take());
    assert!(kid.0.wait().unwrap().success());
}

#[test]
fn named_file_mapping_is_opened_by_name_from_another_process() {
    let root = TestRoot::new("fileproc");
    let path = root.path.with_extension("bin");
    std::fs::write(&path, b"0123456789abcdef").unwrap();
    let _cleanup = common::RemoveFile(path.clone());
    let name = &root.name("Local\\on-a-file");
    let m = root
        .opts()
        .map_path(&path, 0, Access::ReadWrite, Some(name))
        .unwrap();
    let mut kid = Reap(spawn_role("child", "file", &root.path, &[name]));
    // Windows keeps no size for a file-backed mapping: an opener sees whole pages.
    let size = if cfg!(windows) {
        "size 4096"
    } else {
        "size 16"
    };
    assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), size);
    assert!(kid.0.wait().unwrap().success());
    assert_eq!(std::fs::read(&path).unwrap(), b"01234CHILDabcdef");
    let mut buf = [0u8; 5];
    m.map_view(Access::Read, 5, 5)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"CHILD");
    drop(m);
}

/// An open waits out a lock that someone holds on the name's object for a while, as a
/// remover that the scheduler put aside in the middle of a removal does. Here a
/// description outside the protocol write-locks this process's holder bytes for 150 ms
/// (the protocol's layout: byte 2^40 + pid × 2^16 + slot, `sys/linux/lock.rs`), so every
/// look of the open finds its holder lock refused until then. The open succeeds after the
/// lock goes, and not before. With a count of quick looks and no sleeps, it gave up within
/// a few milliseconds ("the name keeps changing"), as the churn tests did once in CI.
#[cfg(target_os = "linux")]
#[test]
#[allow(unsafe_code)]
fn an_open_waits_out_a_lock_held_on_the_object_for_a_while() {
    use std::os::fd::AsRawFd;
    let _watchdog = common::watchdog(60);
    let root = TestRoot::new("heldlock");
    let name = &root.name("Local\\held");
    let mut kid = Reap(spawn_role("child", "hold", &root.path, &[name]));
    assert_eq!(read_line_within(&mut kid.0, LINE_TIMEOUT), "ready");
    let path = root
        .opts()
        .open(name, Access::Read)
        .unwrap()
        .os_path()
        .unwrap()
        .to_path_buf();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: all-zero bytes are a valid `flock`, whose fields are set below.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_WRLCK as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = (1 << 40) + i64::from(std::process::id()) * (1 << 16);
    l.l_len = 1 << 16;
    // SAFETY: `l` is a valid `flock` that F_OFD_SETLK reads, and the descriptor is open.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut l) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let held = Duration::from_millis(150);
    let start = std::time::Instant::now();
    let release = std::thread::spawn(move || {
        std::thread::sleep(held);
        drop(file);
    });
    let m = root.opts().open(name, Access::Read).unwrap();
    assert!(
        start.elapsed() >= held,
        "opened after {:?}",
        start.elapsed()
    );
    release.join().unwrap();
    let mut buf = [0u8; 8];
    m.map_view(Access::Read, 100, 8)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"holding!");
    drop(m);
    drop(kid.0.stdin.take());
    assert!(kid.0.wait().unwrap().success());
}
