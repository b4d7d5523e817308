//! What only Windows has: sizes and offsets past the 64 KiB allocation granularity across
//! real Windows processes (this test binary re-run in a role), `info`, and sections made by
//! other programs. The shared suites (mapping.rs, multiprocess.rs, sync.rs) run on Windows
//! too; CI runs them under Wine.
#![cfg(windows)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use filemap::{Access, Error, FileMapping};

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
