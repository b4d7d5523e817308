//! What only Windows has: sizes and offsets past the 64 KiB allocation granularity across
//! real Windows processes (this test binary re-run in a role), `info`, and sections made by
//! other programs. The shared suites (mapping.rs, multiprocess.rs, sync.rs) run on Windows
//! too; CI runs them under Wine.
#![cfg(windows)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use filemap::{Access, Error, FileMapping};

static N: AtomicUsize = AtomicUsize::new(0);

/// `Namespace::list` opens every object of the session for a moment. Beside a test that
/// counts an object's handles or holders, or looks for its name to go with its last
/// handle, that moment showed: a mapping's name outlived its last handle once under Wine
/// in CI ("a view keeps the name"). The listing tests take this for writing, those tests
/// for reading.
static LISTING: RwLock<()> = RwLock::new(());

/// Shares [`LISTING`] for a test that counts handles or holders (a test that panicked
/// with it leaves it as it was).
fn not_listing() -> RwLockReadGuard<'static, ()> {
    LISTING.read().unwrap_or_else(|e| e.into_inner())
}

/// Takes [`LISTING`] for a test that lists the session's objects.
fn listing() -> RwLockWriteGuard<'static, ()> {
    LISTING.write().unwrap_or_else(|e| e.into_inner())
}

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
        common::spawn(
            Command::new(std::env::current_exe().unwrap())
                .args(["child", "--exact", "--nocapture", "--test-threads=1", "-q"])
                .env("FILEMAP_TEST_ROLE", role)
                .env("FILEMAP_TEST_NAME", name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )
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
        "hold" => {
            // Holds the mapping until a line (or the end) comes on stdin.
            let _m = FileMapping::open(&name, Access::Read).unwrap();
            say("held");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn mappings_across_processes_with_exact_sizes() {
    let _counting = not_listing();
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
    // info: the exact size and the creator from the record, and the two handles.
    let info = filemap::Namespace::new().info(&name).unwrap();
    assert_eq!(info.kind, Some(filemap::Kind::Mapping));
    assert_eq!(info.size, Some(100_000));
    assert_eq!(info.creator_pid, Some(std::process::id()));
    let age = std::time::SystemTime::now()
        .duration_since(info.created.unwrap())
        .unwrap();
    assert!(age < std::time::Duration::from_secs(60), "{age:?}");
    assert_eq!(info.handles, Some(2));
    assert_eq!(
        (info.owner_uid, info.mode, info.os_path),
        (None, None, None)
    );
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
    // The last handle closes: the name is gone, though a view is still mapped, and the
    // view still reads the memory.
    let view = again.map_view(Access::Read, 0, 0).unwrap();
    drop((m, again, ro, ro_view, cow));
    match FileMapping::open(&name, Access::Read) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("a view keeps the name: {other:?}"),
    }
    let mut buf = [0u8; 5];
    view.read_at(70_000, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    drop(view);
}

/// A section that another program made has no record: openers see its page-rounded size
/// (Windows keeps no other), and `info` knows no creator.
#[test]
fn sections_made_by_other_programs_open_with_their_page_rounded_size() {
    let _counting = not_listing();
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Memory::{CreateFileMappingW, PAGE_READWRITE};
    let name = unique("foreign");
    let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
    // SAFETY: a pagefile-backed section of 10000 bytes; `wide` is NUL-terminated.
    let section = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            0,
            10_000,
            wide.as_ptr(),
        )
    };
    assert!(!section.is_null(), "{}", std::io::Error::last_os_error());
    let m = FileMapping::open(&name, Access::Read).unwrap();
    assert_eq!(m.size(), 12_288);
    let info = filemap::Namespace::new().info(&name).unwrap();
    assert_eq!((info.size, info.creator_pid), (Some(12_288), None));
    assert_eq!(info.handles, Some(2));
    drop(m);
    // SAFETY: the handle is ours and still live.
    unsafe { CloseHandle(section) };
}

/// `Namespace::list` reads the session's object directory: every kind is listed once,
/// described as `info` describes it, in name order; a channel's role events and wait
/// semaphores are not listed as objects of their own, but an object of someone else's that
/// only looks like one is.
#[test]
fn list_shows_the_sessions_objects_and_not_a_channels_parts() {
    let _listing = listing();
    use filemap::{Event, Kind, Mutex, Namespace, Semaphore, Stream, SyncState};
    let base = unique("ls");
    let name = |tag: &str| format!("{base}-{tag}");
    let mapping = FileMapping::create(&name("a-mapping"), 5000).unwrap();
    let event = Event::create(&name("b-event"), true, true).unwrap();
    let mutex = Mutex::create(&name("c-mutex")).unwrap();
    let _held = mutex.lock().unwrap();
    let semaphore = Semaphore::create(&name("d-semaphore"), 2, 9).unwrap();
    let stream = Stream::create(&name("e-stream"), 4096, 64).unwrap();
    let mut tx = stream.sender().unwrap();
    let mut rx = stream.receiver().unwrap();
    // A wait makes the receiver's wait semaphore.
    assert!(matches!(
        rx.recv_timeout(std::time::Duration::from_millis(20)),
        Err(Error::Timeout { .. })
    ));
    tx.send(b"queued").unwrap();
    // Not a part: no channel has this name.
    let lookalike = Event::create(&name("f-none:filemap-role-1"), false, false).unwrap();

    let ours: Vec<_> = Namespace::new()
        .list()
        .unwrap()
        .into_iter()
        .filter(|i| i.name.full().starts_with(&base))
        .collect();
    let names: Vec<String> = ours.iter().map(|i| i.name.full()).collect();
    let want = [
        "a-mapping",
        "b-event",
        "c-mutex",
        "d-semaphore",
        "e-stream",
        "f-none:filemap-role-1",
    ]
    .map(name);
    assert_eq!(
        names, want,
        "in name order, each once, and no channel parts"
    );
    let kinds: Vec<_> = ours.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Mapping,
            Kind::Event,
            Kind::Mutex,
            Kind::Semaphore,
            Kind::Stream,
            Kind::Event
        ]
        .map(Some)
    );
    assert_eq!(ours[0].size, Some(5000));
    assert_eq!(
        ours[1].state,
        Some(SyncState::Event {
            set: true,
            manual_reset: true
        })
    );
    assert!(matches!(
        ours[2].state,
        Some(SyncState::Mutex { owned: true, .. })
    ));
    assert_eq!(
        ours[3].state,
        Some(SyncState::Semaphore { count: 2, max: 9 })
    );
    match ours[4].state {
        Some(SyncState::Channel {
            capacity,
            queued,
            producer,
            peers,
            ..
        }) => assert_eq!(
            (capacity, queued, producer, peers),
            (4096, Some(1), true, 1)
        ),
        ref other => panic!("{other:?}"),
    }
    // Listing names no holders: finding them takes handles of its own (see
    // `Namespace::holders`), which only an explicit call may take.
    for i in &ours {
        assert!(i.holders.is_empty(), "{}", i.name);
    }
    drop((tx, rx, lookalike, stream, semaphore, event, mapping));
}

/// `Namespace::holders` names the processes that hold an object (those we may inspect:
/// here, all), from the system's handle table; the handle it opens to look does not
/// count, and `info` leaves them out.
#[test]
fn holders_names_the_processes_that_hold_an_object() {
    let _counting = not_listing();
    use filemap::Namespace;
    let name = unique("holders");
    let ns = Namespace::new();
    let mapping = FileMapping::create(&name, 4096).unwrap();
    assert_eq!(ns.holders(&name).unwrap(), [std::process::id()]);
    let mut children: Vec<Reap> = (0..2).map(|_| spawn_role("hold", &name)).collect();
    for c in &mut children {
        assert_eq!(report(c), "held");
    }
    let mut want: Vec<u32> = children.iter().map(|c| c.0.id()).collect();
    want.push(std::process::id());
    want.sort_unstable();
    assert_eq!(ns.holders(&name).unwrap(), want);
    let info = ns.info(&name).unwrap();
    assert_eq!(info.handles, Some(3));
    assert!(info.holders.is_empty());
    // Our handle closed: the children alone, and each one's end takes it off.
    drop(mapping);
    want.retain(|&p| p != std::process::id());
    assert_eq!(ns.holders(&name).unwrap(), want);
    let mut first = children.remove(0);
    first.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(first.0.wait().unwrap().success());
    assert_eq!(ns.holders(&name).unwrap(), [children[0].0.id()]);
    drop(children);
    assert!(matches!(ns.holders(&name), Err(Error::NotFound { .. })));
}

/// The kernel gets a name exactly as given, control characters included (`Display`
/// escapes them, for printing): a program that opens it by its exact name finds it, and
/// the listing gives it back exactly.
#[test]
fn names_with_control_characters_reach_the_kernel_exactly() {
    let _listing = listing();
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Memory::{OpenFileMappingW, FILE_MAP_READ};
    let name = format!("{}-tab\there", unique("ctl"));
    let m = FileMapping::create(&name, 4096).unwrap();
    let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
    // SAFETY: `wide` is NUL-terminated.
    let h = unsafe { OpenFileMappingW(FILE_MAP_READ, 0, wide.as_ptr()) };
    assert!(!h.is_null(), "{}", std::io::Error::last_os_error());
    // SAFETY: our handle, closed once.
    unsafe { CloseHandle(h) };
    let listed = filemap::Namespace::new().list().unwrap();
    assert!(listed.iter().any(|i| i.name.full() == name), "{listed:?}");
    drop(m);
}

/// A section that another program made with `SEC_RESERVE` has pages that are reserved and
/// not committed: on Windows, reading them is an access violation. Opening it, `info` and
/// `list` look for filemap's record in its last page only if that page is committed, and
/// take the view's whole size. (Wine does not fault on such pages, so here this shows
/// that they are handled, not that the fault is avoided.)
#[test]
fn reserved_sections_of_other_programs_are_opened_and_listed_without_a_fault() {
    let _listing = listing();
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Memory::{CreateFileMappingW, PAGE_READWRITE, SEC_RESERVE};
    let name = unique("reserved");
    let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
    // SAFETY: a pagefile-backed section of 1 MiB, reserved only; `wide` is NUL-terminated.
    let section = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE | SEC_RESERVE,
            0,
            1 << 20,
            wide.as_ptr(),
        )
    };
    assert!(!section.is_null(), "{}", std::io::Error::last_os_error());
    let info = filemap::Namespace::new().info(&name).unwrap();
    assert_eq!(info.kind, Some(filemap::Kind::Mapping));
    assert_eq!(info.creator_pid, None);
    let listed = filemap::Namespace::new().list().unwrap();
    assert!(listed.iter().any(|i| i.name.full() == name), "{listed:?}");
    assert_eq!(info.size, Some(1 << 20));
    let m = FileMapping::open(&name, Access::Read).unwrap();
    assert_eq!(m.size(), 1 << 20);
    drop(m);
    // SAFETY: the handle is ours and still live.
    unsafe { CloseHandle(section) };
}
