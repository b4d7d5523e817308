//! Mappings and views in one process: semantics, lifetime, access and bad input.
// Linux and Windows (under Wine in CI). Tests of what only Linux has (listing, modes,
// persistence, removal, tmpfs, the namespace directories) are marked so.
#![cfg(any(target_os = "linux", windows))]

mod common;

#[cfg(target_os = "linux")]
use std::io::Write;
#[cfg(target_os = "linux")]
use std::os::unix::fs::PermissionsExt;

use common::{RemoveFile, TestRoot};
#[cfg(target_os = "linux")]
use filemap::Kind;
use filemap::{Access, Error};

#[test]
fn create_open_and_open_or_create() {
    let root = TestRoot::new("coc");
    let opts = root.opts();
    let name = &root.name("Local\\m");
    let a = opts.open_or_create(name, 100).unwrap();
    assert!(!a.already_existed());
    assert_eq!(a.size(), 100, "exact size, not page-rounded");
    // The existing object's size wins.
    let b = opts.open_or_create(name, 5000).unwrap();
    assert!(b.already_existed());
    assert_eq!(b.size(), 100);
    // A bare name means Local\.
    let c = opts.open(&root.name("m"), Access::Read).unwrap();
    assert_eq!(c.size(), 100);
    assert_eq!(&c.name().unwrap().to_string(), name);
    match opts.create(name, 100) {
        Err(e @ Error::AlreadyExists { .. }) => {
            assert_eq!(
                e.to_string(),
                format!("a mapping named {name} already exists")
            )
        }
        other => panic!("{other:?}"),
    }
    // The same bytes through every handle.
    a.map_view(Access::ReadWrite, 0, 0)
        .unwrap()
        .write_at(10, b"xyz")
        .unwrap();
    let mut buf = [0u8; 3];
    c.map_view(Access::Read, 10, 3)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"xyz");
}

#[test]
fn local_and_global_are_different_namespaces() {
    let root = TestRoot::new("scopes");
    let opts = root.opts();
    // Semaphores, because Windows lets only privileged users create Global\ mappings.
    let l = opts
        .create_semaphore(&root.name("Local\\same"), 1, 10)
        .unwrap();
    let g = opts
        .create_semaphore(&root.name("Global\\same"), 2, 20)
        .unwrap();
    assert_eq!((l.max(), g.max()), (10, 20));
    #[cfg(target_os = "linux")]
    {
        let l = opts.create("Local\\same-map", 10).unwrap();
        let g = opts.create("Global\\same-map", 20).unwrap();
        assert_eq!((l.size(), g.size()), (10, 20));
        assert!(g.os_path().unwrap().starts_with(root.path.join("global")));
    }
}

#[test]
fn names_are_case_sensitive_and_keep_any_character() {
    let root = TestRoot::new("names");
    let opts = root.opts();
    let names = [
        "Local\\Case",
        "Local\\case",
        "Local\\a/b",
        "Local\\..",
        "Local\\ünï cødé",
        "Local\\x%41",
    ]
    .map(|n| root.name(n));
    let handles: Vec<_> = names.iter().map(|n| opts.create(n, 8).unwrap()).collect();
    for (n, h) in names.iter().zip(&handles) {
        assert_eq!(&h.name().unwrap().to_string(), n);
    }
    #[cfg(target_os = "linux")]
    {
        let mut listed: Vec<String> = root
            .ns()
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.name.to_string())
            .collect();
        listed.sort();
        let mut expected: Vec<String> = names.to_vec();
        expected.sort();
        assert_eq!(listed, expected);
    }
    drop(handles);
}

#[test]
fn the_name_lives_with_the_handles_and_the_memory_with_the_views() {
    let root = TestRoot::new("life");
    let opts = root.opts();
    let name = &root.name("Local\\life");
    let m = opts.create(name, 4096).unwrap();
    let v = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    v.write_at(0, b"kept").unwrap();
    #[cfg(target_os = "linux")]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        let st = std::fs::metadata(m.os_path().unwrap()).unwrap();
        let dev = st.dev();
        let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        (format!("{major:02x}:{minor:02x}"), st.ino().to_string())
    };
    // A second handle keeps the name after the first is dropped.
    let second = opts.open(name, Access::ReadWrite).unwrap();
    drop(m);
    let mut buf = [0u8; 4];
    let again = opts.open(name, Access::Read).unwrap();
    again
        .map_view(Access::Read, 0, 4)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"kept");
    drop(again);
    // The last handle goes: the name goes with it, as on Windows, though a view is mapped.
    drop(second);
    match opts.open(name, Access::Read) {
        Err(e @ Error::NotFound { .. }) => {
            assert_eq!(e.to_string(), format!("no mapping named {name}"))
        }
        other => panic!("{other:?}"),
    }
    #[cfg(target_os = "linux")]
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
    // The view still works, on the old memory.
    v.write_at(4, b"+more").unwrap();
    let mut old = [0u8; 9];
    v.read_at(0, &mut old).unwrap();
    assert_eq!(&old, b"kept+more");
    // The name is free: a create makes a new, zeroed object, not "already exists".
    let fresh = opts.open_or_create(name, 4096).unwrap();
    assert!(!fresh.already_existed());
    let fv = fresh.map_view(Access::ReadWrite, 0, 4).unwrap();
    fv.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 4]);
    fv.write_at(0, b"new!").unwrap();
    v.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"kept", "the old view is not the new object's memory");
    // The old memory is freed with its last view: the kernel's mapping of the unlinked
    // file is gone from this process.
    #[cfg(target_os = "linux")]
    {
        // Fields: address, perms, offset, device, inode, path.
        let mapped = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 4 && f[3] == dev && f[4] == ino
                })
        };
        assert!(mapped());
        drop(v);
        assert!(!mapped());
    }
}

/// `FileMapping::dup_fd` hands out the handle's own description (what the Python package
/// maps): it must keep the bytes, but not the name, once the handle is gone.
#[cfg(target_os = "linux")]
#[test]
fn a_duplicated_descriptor_keeps_the_bytes_but_not_the_name() {
    use std::os::unix::fs::FileExt;
    let root = TestRoot::new("dupfd");
    let opts = root.opts();
    let name = &root.name("Local\\dup");
    let m = opts.create(name, 4096).unwrap();
    m.map_view(Access::ReadWrite, 0, 0)
        .unwrap()
        .write_at(0, b"dup!")
        .unwrap();
    let dup = std::fs::File::from(m.dup_fd().unwrap());
    let second = opts.open(name, Access::Read).unwrap();
    // The handle goes while its duplicate lives: the other holder keeps the name.
    drop(m);
    let again = opts.open(name, Access::Read).unwrap();
    drop(again);
    // The other holder goes: the name goes, though the first handle's description (and
    // with it, had they not been given up, its locks) is still open.
    drop(second);
    match opts.open(name, Access::Read) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("the duplicate kept the name: {other:?}"),
    }
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
    let fresh = opts.open_or_create(name, 4096).unwrap();
    assert!(!fresh.already_existed());
    // The duplicate still reads the old bytes.
    let mut buf = [0u8; 4];
    dup.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"dup!");
}

#[cfg(target_os = "linux")]
#[test]
fn persistent_objects_outlive_their_holders_until_removed() {
    let root = TestRoot::new("persist");
    let mut opts = root.opts();
    opts.persistent(true);
    let m = opts.create("Local\\p", 64).unwrap();
    m.map_view(Access::ReadWrite, 0, 0)
        .unwrap()
        .write_at(0, b"stay")
        .unwrap();
    drop(m);
    let m = root.opts().open("Local\\p", Access::Read).unwrap();
    let mut buf = [0u8; 4];
    m.map_view(Access::Read, 0, 4)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"stay");
    assert!(
        root.ns().gc().unwrap().is_empty(),
        "gc leaves persistent objects alone"
    );
    drop(m);
    root.ns().remove("Local\\p").unwrap();
    assert!(matches!(
        root.opts().open("Local\\p", Access::Read),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        root.ns().remove("Local\\p"),
        Err(Error::NotFound { kind: None, .. })
    ));
}

#[cfg(target_os = "linux")]
#[test]
fn modes_are_exact_whatever_the_umask() {
    let root = TestRoot::new("modes");
    for mode in [0o600, 0o640, 0o644, 0o660, 0o666] {
        let m = root
            .opts()
            .mode(mode)
            .create(&format!("Global\\m{mode:o}"), 8)
            .unwrap();
        let meta = std::fs::metadata(m.os_path().unwrap()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode);
    }
    // Global\ is like /tmp, and Local\ is owner-only.
    let mode = |p: &str| {
        std::fs::metadata(root.path.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("global"), 0o1777);
    assert_eq!(mode(""), 0o1777);
    drop(root.opts().create("Local\\l", 1).unwrap());
    assert_eq!(
        mode(&format!(
            "local-{}",
            std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .unwrap()
        )),
        0o700
    );
}

#[cfg(target_os = "linux")]
#[test]
fn removing_a_live_name_lets_holders_keep_their_object() {
    let root = TestRoot::new("rmlive");
    let opts = root.opts();
    let old = opts.create("Local\\r", 16).unwrap();
    let oldv = old.map_view(Access::ReadWrite, 0, 0).unwrap();
    oldv.write_at(0, b"old").unwrap();
    root.ns().remove("Local\\r").unwrap();
    let new = opts.create("Local\\r", 16).unwrap();
    new.map_view(Access::ReadWrite, 0, 0)
        .unwrap()
        .write_at(0, b"new")
        .unwrap();
    // The old holder closing must not unlink the new object.
    drop(oldv);
    drop(old);
    let mut buf = [0u8; 3];
    opts.open("Local\\r", Access::Read)
        .unwrap()
        .map_view(Access::Read, 0, 3)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"new");
    drop(new);
}

#[test]
fn long_names_work_like_any_other() {
    let root = TestRoot::new("longname");
    let opts = root.opts();
    // Longer than a file name on Linux, and than MAX_PATH on Windows.
    let long = root.name(&format!("Local\\{}", "long name ".repeat(100)));
    let m = opts.create(&long, 4096).unwrap();
    m.map_view(Access::ReadWrite, 0, 4)
        .unwrap()
        .write_at(0, b"long")
        .unwrap();
    assert_eq!(m.name().unwrap().full(), long);
    // Open, open-or-create and kind collisions, as with a short name.
    let o = opts.open(&long, Access::Read).unwrap();
    let mut buf = [0u8; 4];
    o.map_view(Access::Read, 0, 4)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"long");
    assert!(opts.open_or_create(&long, 1).unwrap().already_existed());
    assert!(matches!(
        opts.create_mutex(&long),
        Err(Error::KindMismatch { .. })
    ));
    // Names that differ only at the end are different objects.
    let sibling = format!("{long}!");
    assert!(matches!(
        opts.open(&sibling, Access::Read),
        Err(Error::NotFound { .. })
    ));
    let s = opts.create(&sibling, 100).unwrap();
    assert_eq!(s.size(), 100);
    // The longest name there is (unique: the test's own name, padded).
    let start = root.name("Local\\longest-");
    let longest = format!(
        "{start}{}",
        "m".repeat(filemap::Name::MAX_LEN - start.len())
    );
    let l = opts.create_event(&longest, true, false);
    assert!(matches!(
        opts.create_event(&format!("{longest}m"), true, false),
        Err(Error::NameTooLong { .. })
    ));
    #[cfg(target_os = "linux")]
    {
        let e = l.unwrap();
        assert_eq!(e.name().full(), longest);
        // ls, info and gc show the whole name, read from the file.
        let ns = root.ns();
        let mut listed: Vec<String> = ns.list().unwrap().iter().map(|i| i.name.full()).collect();
        listed.sort();
        let mut want = vec![long.clone(), sibling.clone(), longest.clone()];
        want.sort();
        assert_eq!(listed, want);
        let info = ns.info(&long).unwrap();
        assert_eq!((info.name.full(), info.size), (long.clone(), Some(4096)));
        let path = info.os_path.unwrap();
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(file.len() <= 255 && file.starts_with("long%20name%20") && file.contains('~'));
        // rm removes the object that the long name stands for.
        ns.remove(&sibling).unwrap();
        assert!(matches!(
            opts.open(&sibling, Access::Read),
            Err(Error::NotFound { .. })
        ));
        drop((m, o, s, e));
        // Gone with their last handles.
        assert!(matches!(
            opts.open(&long, Access::Read),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            opts.open_event(&longest),
            Err(Error::NotFound { .. })
        ));
        assert!(root.local_files().is_empty(), "{:?}", root.local_files());
    }
    #[cfg(windows)]
    {
        // Windows accepts the longest name too (Wine does; see the README for Windows).
        drop(l);
        drop((m, o, s));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_hashed_file_that_stores_another_name_is_refused() {
    let root = TestRoot::new("longplant");
    let opts = root.opts();
    let a = format!("Local\\{}a", "p".repeat(300));
    let b = format!("Local\\{}b", "p".repeat(300));
    let ma = opts.create(&a, 4096).unwrap();
    let mb = opts.create(&b, 4096).unwrap();
    let pa = ma.os_path().unwrap().to_owned();
    let pb = mb.os_path().unwrap().to_owned();
    // Someone renames b's file to a's file name: a's name now leads to a file that says b.
    drop(ma);
    assert!(!pa.exists());
    std::fs::rename(&pb, &pa).unwrap();
    match opts.open(&a, Access::Read) {
        Err(Error::Insecure { reason, .. }) => {
            assert!(
                reason.starts_with("its record names another object (Local\\ppp"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // ls reports it, and gc and rm leave it alone.
    let listing = root.ns().list_all().unwrap();
    assert!(listing.objects.is_empty());
    assert_eq!(listing.refused.len(), 1);
    assert_eq!(
        listing.refused[0].reason,
        "its stored name does not hash to its file name"
    );
    assert!(root.ns().gc().unwrap().is_empty());
    assert!(matches!(root.ns().remove(&a), Err(Error::Insecure { .. })));
    assert!(pa.exists());
    drop(mb);
    std::fs::remove_file(&pa).unwrap();
}

/// The namespace directories are opened once per process and not checked again on every
/// call; one removed meanwhile (`rm -rf` of the root) is noticed and opened again. On
/// tmpfs and on a disk file system: creating an unnamed file in a removed directory fails
/// with `ENOENT` on tmpfs but with `EPERM` on ext4, which was reported as the error.
#[cfg(target_os = "linux")]
#[test]
fn a_removed_namespace_directory_is_made_again() {
    for root in [TestRoot::new("rmrf"), TestRoot::in_temp_dir("rmrf-disk")] {
        made_again(&root);
    }
}

#[cfg(target_os = "linux")]
fn made_again(root: &TestRoot) {
    let opts = root.opts();
    drop(opts.create("Local\\a", 10).unwrap());
    std::fs::remove_dir_all(&root.path).unwrap();
    let b = opts.create("Local\\b", 10).unwrap();
    assert!(b.os_path().unwrap().exists());
    drop(b);
    std::fs::remove_dir_all(&root.path).unwrap();
    // Another program makes the directories again, and an object in them (the same root,
    // spelled so that this process's cache does not know it).
    let mut other = filemap::Options::new();
    other.namespace(filemap::Namespace::at(root.path.join(".")));
    let c = other.create("Local\\c", 10).unwrap();
    // Our cache still has the removed directory, yet the open finds the object.
    let o = opts.open("Local\\c", Access::Read).unwrap();
    assert_eq!(o.size(), 10);
    drop((c, o));
}

#[test]
fn views_at_any_offset() {
    let root = TestRoot::new("views");
    let m = root
        .opts()
        .create(&root.name("Local\\v"), 3 * 4096 + 17)
        .unwrap();
    let whole = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    assert_eq!(whole.len(), 3 * 4096 + 17);
    for i in 0..whole.len() {
        whole.write_at(i, &[(i % 251) as u8]).unwrap();
    }
    for offset in [1u64, 4095, 4096, 4097, 8191, 3 * 4096 + 16] {
        let v = m.map_view(Access::Read, offset, 1).unwrap();
        assert_eq!(v.offset(), offset);
        let mut b = [0u8];
        v.read_at(0, &mut b).unwrap();
        assert_eq!(b[0], (offset % 251) as u8, "offset {offset}");
    }
    // len 0 means to the end.
    let tail = m.map_view(Access::Read, 5000, 0).unwrap();
    assert_eq!(tail.len(), 3 * 4096 + 17 - 5000);
    // A write through an unaligned view lands where it should.
    m.map_view(Access::ReadWrite, 4099, 2)
        .unwrap()
        .write_at(0, b"ab")
        .unwrap();
    let mut two = [0u8; 2];
    whole.read_at(4099, &mut two).unwrap();
    assert_eq!(&two, b"ab");
}

/// Copies of more than 2 KiB whose destination lies 1 to 31 bytes past the source within
/// a page take a path of their own (`channel/mem.rs`, `copy_large`): writes from a
/// page-aligned buffer to those view offsets, and reads back into buffers at those
/// placements, move exactly their bytes.
#[test]
fn large_copies_land_whole_at_every_placement_within_a_page() {
    let root = TestRoot::new("placed");
    let m = root
        .opts()
        .create(&root.name("Local\\placed"), 20 * 4096)
        .unwrap();
    let view = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    let reader = m.map_view(Access::Read, 0, 0).unwrap();
    // Page-aligned stretches of the heap, wherever the allocator put the vectors.
    let mut src_buf = vec![0u8; 70_000 + 4096];
    let mut dst_buf = vec![0u8; 70_000 + 2 * 4096];
    let s0 = (4096 - src_buf.as_ptr() as usize % 4096) % 4096;
    let d0 = (4096 - dst_buf.as_ptr() as usize % 4096) % 4096;
    for len in [2049usize, 3000, 4096, 65544] {
        for at in [0usize, 1, 8, 16, 24, 31, 32, 4088] {
            let seed = (len + at) as u8;
            let src = &mut src_buf[s0..s0 + len];
            for (i, b) in src.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(7).wrapping_add(seed) ^ (i >> 9) as u8;
            }
            view.write_at(0, &vec![0xAA; at + len + 1]).unwrap();
            view.write_at(at, src).unwrap();
            let mut edges = [0u8; 1];
            if at > 0 {
                reader.read_at(at - 1, &mut edges).unwrap();
                assert_eq!(edges[0], 0xAA, "byte before, len {len} at {at}");
            }
            reader.read_at(at + len, &mut edges).unwrap();
            assert_eq!(edges[0], 0xAA, "byte after, len {len} at {at}");
            // Read back into a buffer `at` bytes past the data's place within a page (the
            // data is at page offset `at` in the view, the buffer at `2 * at` in its page).
            let dst = &mut dst_buf[d0 + 2 * at..d0 + 2 * at + len];
            dst.fill(0x55);
            reader.read_at(at, dst).unwrap();
            assert!(
                dst == &src_buf[s0..s0 + len],
                "len {len} at {at}: the bytes read differ from those written"
            );
        }
    }
}

#[test]
fn view_access_is_bounded_by_the_handle() {
    let root = TestRoot::new("access");
    let opts = root.opts();
    let name = &root.name("Local\\a");
    let owner = opts.create(name, 4096).unwrap();
    owner
        .map_view(Access::ReadWrite, 0, 0)
        .unwrap()
        .write_at(0, b"base")
        .unwrap();
    let ro = opts.open(name, Access::Read).unwrap();
    match ro.map_view(Access::ReadWrite, 0, 0) {
        Err(e @ Error::PermissionDenied { .. }) => {
            assert_eq!(
                e.to_string(),
                "permission denied: a read-write view of a mapping opened read-only"
            )
        }
        other => panic!("{other:?}"),
    }
    let rov = ro.map_view(Access::Read, 0, 0).unwrap();
    assert!(matches!(
        rov.write_at(0, b"x"),
        Err(Error::PermissionDenied { .. })
    ));
    assert!(matches!(
        rov.as_mut_ptr(),
        Err(Error::PermissionDenied { .. })
    ));
    assert!(matches!(
        rov.atomic_u32(0),
        Err(Error::PermissionDenied { .. })
    ));
    assert_eq!(rov.load_u32(0).unwrap(), u32::from_le_bytes(*b"base"));
    // Copy-on-write is allowed on a read-only handle, and stays private.
    let cow = ro.map_view(Access::CopyOnWrite, 0, 0).unwrap();
    cow.write_at(0, b"COW!").unwrap();
    let mut buf = [0u8; 4];
    cow.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"COW!");
    rov.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"base");
    let cow_handle = opts.open(name, Access::CopyOnWrite).unwrap();
    assert!(matches!(
        cow_handle.map_view(Access::ReadWrite, 0, 0),
        Err(Error::PermissionDenied { .. })
    ));
}

#[test]
fn atomics_need_alignment_and_are_shared() {
    let root = TestRoot::new("atomics");
    let m = root.opts().create(&root.name("Local\\at"), 64).unwrap();
    let v1 = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    let v2 = m.map_view(Access::ReadWrite, 8, 8).unwrap();
    v1.atomic_u64(8)
        .unwrap()
        .fetch_add(5, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        v2.atomic_u64(0)
            .unwrap()
            .load(std::sync::atomic::Ordering::SeqCst),
        5
    );
    match v1.atomic_u32(2) {
        Err(e @ Error::Unaligned { .. }) => {
            assert_eq!(e.to_string(), "offset 2 is not a multiple of 4")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(v1.atomic_u64(60), Err(Error::OutOfRange { .. })));
    // A view at an odd offset moves the alignment with it.
    let odd = m.map_view(Access::ReadWrite, 1, 16).unwrap();
    assert!(matches!(odd.atomic_u32(0), Err(Error::Unaligned { .. })));
    assert!(odd.atomic_u32(3).is_ok());
}

#[test]
fn out_of_range_views_and_accesses() {
    let root = TestRoot::new("range");
    let m = root.opts().create(&root.name("Local\\or"), 100).unwrap();
    for (offset, len) in [(100u64, 0u64), (101, 1), (0, 101), (50, 51), (u64::MAX, 1)] {
        match m.map_view(Access::Read, offset, len) {
            Err(Error::OutOfRange { size: 100, .. }) => {}
            other => panic!("({offset}, {len}): {other:?}"),
        }
    }
    let e = m.map_view(Access::Read, 0, 101).unwrap_err();
    assert_eq!(
        e.to_string(),
        "range of 101 bytes at offset 0 does not fit in 100 bytes"
    );
    let v = m.map_view(Access::ReadWrite, 10, 20).unwrap();
    let mut big = [0u8; 21];
    assert!(matches!(
        v.read_at(0, &mut big),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        v.write_at(usize::MAX, b"x"),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        v.flush_range(19, 2),
        Err(Error::OutOfRange { .. })
    ));
}

#[test]
fn bad_input_gets_typed_errors_and_leaves_nothing() {
    let root = TestRoot::new("bad");
    let opts = root.opts();
    let missing = root.name("missing");
    let missing_message = format!("no mapping named Local\\{missing}");
    let cases: Vec<(filemap::Result<filemap::FileMapping>, &str)> = vec![
        (opts.create("", 1), "invalid name '': the name is empty"),
        (
            opts.create("Local\\", 1),
            "invalid name 'Local\\': nothing follows the prefix",
        ),
        (
            opts.create("Session\\1\\x", 1),
            "invalid name 'Session\\1\\x': the only prefixes are Local\\ and Global\\",
        ),
        (
            opts.create("Local\\a\\b", 1),
            "invalid name 'Local\\a\\b': a backslash is only allowed after Local or Global",
        ),
        (
            opts.create("a\0b", 1),
            "invalid name 'a\\u{0}b': the name contains a NUL character",
        ),
        (
            opts.create(&"n".repeat(40_000), 1),
            &*Box::leak(
                format!(
                    "name '{}…' is too long: 40006 UTF-16 code units, the limit is 32766",
                    "n".repeat(40)
                )
                .into_boxed_str(),
            ),
        ),
        (
            opts.create(&root.name("zero"), 0),
            "invalid size: a mapping's size must be greater than 0",
        ),
        (
            opts.open_or_create(&root.name("zero"), 0),
            "invalid size: a mapping's size must be greater than 0",
        ),
        (opts.open(&missing, Access::Read), &missing_message),
        (
            opts.clone().mode(0o755).create(&root.name("m"), 1),
            "invalid argument: mode 755: only read and write bits (666) are allowed",
        ),
        (
            opts.clone().mode(0o066).create(&root.name("m"), 1),
            "invalid argument: mode 66: the owner must keep read and write access (600)",
        ),
        (
            opts.create(&root.name("huge"), u64::MAX),
            "invalid size: 18446744073709551615 bytes is too large (the limit is 9223372036853727232 bytes)",
        ),
    ];
    for (result, message) in cases {
        match result {
            Err(e) => assert_eq!(e.to_string(), message),
            Ok(m) => panic!("expected {message:?}, got {m:?}"),
        }
    }
    #[cfg(target_os = "linux")]
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_tmpfs_is_an_error_at_create_not_a_sigbus_later() {
    let root = TestRoot::new("nospace");
    // Far more than /dev/shm holds: posix_fallocate refuses it up front.
    let size = 1u64 << 44;
    match root.opts().create("Local\\big", size) {
        Err(e @ Error::NoSpace { .. }) => {
            assert_eq!(
                e.to_string(),
                format!("not enough space to reserve {size} bytes for Local\\big")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

/// Views that outlive their handle are moved off the handle's locked description when it
/// closes (Linux), while other threads keep using them: nothing is lost or torn, and the
/// name goes.
#[test]
fn views_stay_sound_while_their_handle_closes() {
    use std::sync::atomic::Ordering;
    let root = TestRoot::new("remap");
    let opts = root.opts();
    let name = &root.name("Local\\remap");
    let m = opts.create(name, 3 * 4096).unwrap();
    let views: Vec<filemap::View> = (0..3)
        .map(|i| m.map_view(Access::ReadWrite, i * 4096, 4096).unwrap())
        .collect();
    let cow = m.map_view(Access::CopyOnWrite, 0, 8).unwrap();
    cow.write_at(0, b"private!").unwrap();
    let rounds = 2_000_000u32;
    std::thread::scope(|s| {
        for v in &views {
            s.spawn(move || {
                let counter = v.atomic_u32(0).unwrap();
                for _ in 0..rounds {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Close the handle while the threads count.
        std::thread::sleep(std::time::Duration::from_millis(1));
        drop(m);
    });
    for v in &views {
        assert_eq!(v.load_u32(0).unwrap(), rounds);
    }
    let mut buf = [0u8; 8];
    cow.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"private!");
    views[0].read_at(0, &mut buf[..4]).unwrap();
    assert_eq!(buf[..4], rounds.to_ne_bytes());
    assert!(matches!(
        opts.open(name, Access::Read),
        Err(Error::NotFound { .. })
    ));
}

#[cfg(target_os = "linux")]
#[test]
fn sparse_mappings_take_memory_only_where_touched() {
    use std::os::unix::fs::MetadataExt;
    let root = TestRoot::new("sparse");
    let allocated = |p: &std::path::Path| std::fs::metadata(p).unwrap().blocks() * 512;
    let gib = 1u64 << 30;
    let mut opts = root.opts();
    opts.sparse(true);
    let m = opts.create("Local\\sparse", gib).unwrap();
    assert_eq!(m.size(), gib);
    let path = m.os_path().unwrap().to_owned();
    assert!(allocated(&path) < 1 << 20, "{} bytes", allocated(&path));
    // Another handle writes in the middle: one page comes into being, shared.
    let other = root
        .opts()
        .open("Local\\sparse", Access::ReadWrite)
        .unwrap();
    other
        .map_view(Access::ReadWrite, gib / 2, 4096)
        .unwrap()
        .write_at(0, b"middle")
        .unwrap();
    let mut buf = [0u8; 6];
    m.map_view(Access::Read, gib / 2, 6)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"middle");
    let used = allocated(&path);
    assert!((4096..1 << 20).contains(&used), "{used} bytes");
    // Untouched pages read as zeros.
    m.map_view(Access::Read, gib - 6, 6)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(buf, [0; 6]);
    // By default the whole size is reserved at create.
    let reserved = root.opts().create("Local\\reserved", 16 << 20).unwrap();
    assert!(allocated(reserved.os_path().unwrap()) >= 16 << 20);
    // A file grown for a sparse mapping stays sparse too.
    let file = root.path.with_extension("sparse");
    std::fs::write(&file, b"head").unwrap();
    let guard = RemoveFile(file.clone());
    let fm = opts.map_path(&file, gib, Access::ReadWrite, None).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), gib);
    assert!(allocated(&file) < 1 << 20);
    let mut head = [0u8; 4];
    fm.map_view(Access::Read, 0, 4)
        .unwrap()
        .read_at(0, &mut head)
        .unwrap();
    assert_eq!(&head, b"head");
    drop((fm, guard, m, other, reserved));
    for name in ["Local\\sparse", "Local\\reserved"] {
        assert!(matches!(
            root.opts().open(name, Access::Read),
            Err(Error::NotFound { .. })
        ));
    }
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

/// Sizes too large for the machine, and too large for any machine, give the same errors
/// on both platforms.
#[test]
fn huge_sizes_get_the_same_errors_everywhere() {
    let root = TestRoot::new("huge");
    let opts = root.opts();
    let name = &root.name("Local\\huge");
    // 16777216G: more than the machine has.
    let size = 1u64 << 54;
    match opts.create(name, size) {
        Err(e @ Error::NoSpace { .. }) => assert_eq!(
            e.to_string(),
            format!("not enough space to reserve {size} bytes for {name}")
        ),
        other => panic!("{other:?}"),
    }
    // Past the limit of any file offset.
    for size in [filemap::FileMapping::MAX_SIZE + 1, 1 << 63, u64::MAX] {
        match opts.create(name, size) {
            Err(e @ Error::InvalidSize { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "invalid size: {size} bytes is too large (the limit is {} bytes)",
                    filemap::FileMapping::MAX_SIZE
                )
            ),
            other => panic!("{size}: {other:?}"),
        }
    }
    assert!(matches!(
        opts.open(name, Access::Read),
        Err(Error::NotFound { .. })
    ));
}

/// A tmpfs out of inodes is as full as one out of bytes: `NoSpace`, not an I/O error.
/// Needs root, to mount a small tmpfs; skipped otherwise.
#[cfg(target_os = "linux")]
#[test]
fn running_out_of_inodes_is_no_space() {
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let root = TestRoot::new("inodes");
    std::fs::create_dir_all(&root.path).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4M,nr_inodes=6,mode=1777",
            "filemap-test",
        ])
        .arg(&root.path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let _unmount = Unmount(root.path.clone());
    let opts = root.opts();
    let mut held = Vec::new();
    let err = loop {
        match opts.create(&format!("Local\\o{}", held.len()), 4096) {
            Ok(m) => held.push(m),
            Err(e) => break e,
        }
        assert!(held.len() < 10, "the inode limit did not apply");
    };
    let name = format!("Local\\o{}", held.len());
    match err {
        Error::NoSpace {
            name: n,
            size: 4096,
        } => assert_eq!(n, name),
        other => panic!("{other:?}"),
    }
    // Nothing half-made was left, and the objects made are intact.
    assert_eq!(root.local_files().len(), held.len());
    let made = held.len();
    drop(held);
    for i in 0..made {
        assert!(matches!(
            opts.open(&format!("Local\\o{i}"), Access::Read),
            Err(Error::NotFound { .. })
        ));
    }
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

/// Issue 10: a named file-backed mapping's name goes with its last handle too, on both
/// platforms, while a view keeps reaching the file.
#[test]
fn a_file_backed_name_goes_with_its_last_handle() {
    let root = TestRoot::new("filename-life");
    let path = root.path.with_extension("life");
    std::fs::write(&path, [0u8; 64]).unwrap();
    let guard = RemoveFile(path.clone());
    let name = &root.name("Local\\file-life");
    let m = root
        .opts()
        .map_path(&path, 0, Access::ReadWrite, Some(name))
        .unwrap();
    let view = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    drop(m);
    assert!(matches!(
        root.opts().open(name, Access::Read),
        Err(Error::NotFound { .. })
    ));
    view.write_at(0, b"after").unwrap();
    view.flush().unwrap();
    drop(view);
    assert_eq!(&std::fs::read(&path).unwrap()[..5], b"after");
    drop(guard);
}

#[test]
fn file_backed_mappings_flush_to_the_file() {
    let root = TestRoot::new("file");
    let path = root.path.with_extension("data");
    std::fs::write(&path, b"0123456789").unwrap();
    let guard = RemoveFile(path.clone());
    // Size 0 means the file's size.
    let m = filemap::FileMapping::from_path(&path, 0, Access::ReadWrite).unwrap();
    assert_eq!(m.size(), 10);
    let v = m.map_view(Access::ReadWrite, 3, 4).unwrap();
    v.write_at(0, b"abcd").unwrap();
    v.flush().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"012abcd789");
    // A larger size grows the file.
    let grown = filemap::FileMapping::from_path(&path, 8192, Access::ReadWrite).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    grown
        .map_view(Access::ReadWrite, 8190, 2)
        .unwrap()
        .write_at(0, b"!!")
        .unwrap();
    grown
        .map_view(Access::ReadWrite, 8190, 2)
        .unwrap()
        .flush_range(0, 2)
        .unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[8190..], b"!!");
    // Copy-on-write views never reach the file.
    let cow = filemap::FileMapping::from_path(&path, 0, Access::CopyOnWrite).unwrap();
    let cv = cow.map_view(Access::CopyOnWrite, 0, 4).unwrap();
    cv.write_at(0, b"XXXX").unwrap();
    cv.flush().unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..4], b"012a");
    drop(guard);
}

#[test]
fn file_backed_access_errors() {
    let root = TestRoot::new("fileerr");
    let path = root.path.with_extension("ro");
    std::fs::write(&path, b"abc").unwrap();
    let guard = RemoveFile(path.clone());
    let ro_file = std::fs::File::open(&path).unwrap();
    match filemap::FileMapping::from_file(&ro_file, 0, Access::ReadWrite) {
        Err(e @ Error::PermissionDenied { .. }) => {
            assert_eq!(e.to_string(), "permission denied: the file is not open for writing, so it cannot be mapped read-write")
        }
        other => panic!("{other:?}"),
    }
    // Growing needs write access.
    assert!(matches!(
        filemap::FileMapping::from_file(&ro_file, 100, Access::Read),
        Err(Error::PermissionDenied { .. })
    ));
    let m = filemap::FileMapping::from_file(&ro_file, 0, Access::Read).unwrap();
    assert_eq!(m.size(), 3);
    let empty = root.path.with_extension("empty");
    std::fs::write(&empty, b"").unwrap();
    let guard2 = RemoveFile(empty.clone());
    assert!(matches!(
        filemap::FileMapping::from_path(&empty, 0, Access::Read),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        filemap::FileMapping::from_path(root.path.with_extension("nope"), 0, Access::Read),
        Err(Error::InvalidArgument { .. })
    ));
    drop((guard, guard2));
}

#[cfg(target_os = "linux")]
#[test]
fn named_file_backed_mapping_opens_by_name() {
    let root = TestRoot::new("namedfile");
    let path = root.path.with_extension("named");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&[7u8; 100]).unwrap();
    drop(f);
    let guard = RemoveFile(path.clone());
    let opts = root.opts();
    let m = opts
        .map_path(&path, 0, Access::ReadWrite, Some("Local\\onfile"))
        .unwrap();
    assert!(!m.already_existed());
    assert_eq!(m.os_path().unwrap(), std::fs::canonicalize(&path).unwrap());
    let other = opts.open("Local\\onfile", Access::Read).unwrap();
    assert_eq!(other.size(), 100);
    let mut b = [0u8; 1];
    other
        .map_view(Access::Read, 99, 1)
        .unwrap()
        .read_at(0, &mut b)
        .unwrap();
    assert_eq!(b[0], 7);
    let info = root.ns().info("Local\\onfile").unwrap();
    assert!(info.file_backed);
    assert_eq!(info.kind, Some(Kind::Mapping));
    let view = m.map_view(Access::ReadWrite, 0, 0).unwrap();
    drop((m, other));
    // The mapping object's name is gone with its last handle, though a view is mapped;
    // the view still reaches the file, which stays.
    assert!(matches!(
        opts.open("Local\\onfile", Access::Read),
        Err(Error::NotFound { .. })
    ));
    view.write_at(0, b"late").unwrap();
    view.flush().unwrap();
    drop(view);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!((bytes.len(), &bytes[..4]), (100, &b"late"[..]));
    drop(guard);
}

#[cfg(target_os = "linux")]
#[test]
fn namespace_directories_and_files_are_checked() {
    let root = TestRoot::new("secure");
    let opts = root.opts();
    drop(opts.create("Local\\x", 8).unwrap());
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let local = root.path.join(format!("local-{uid}"));
    // A symlink where an object should be is refused, not followed.
    std::os::unix::fs::symlink("/etc/passwd", local.join("link")).unwrap();
    match opts.open("Local\\link", Access::Read) {
        Err(Error::Insecure { reason, .. }) => assert_eq!(reason, "it is a symlink"),
        other => panic!("{other:?}"),
    }
    // A FIFO is refused without blocking.
    assert!(std::process::Command::new("mkfifo")
        .arg(local.join("fifo"))
        .status()
        .unwrap()
        .success());
    assert!(matches!(
        opts.open("Local\\fifo", Access::Read),
        Err(Error::Insecure { .. })
    ));
    // A file that filemap did not make is not an object.
    std::fs::write(local.join("foreign"), b"hello").unwrap();
    assert!(matches!(
        opts.open("Local\\foreign", Access::Read),
        Err(Error::Corrupt { .. })
    ));
    // A second name (hard link) for an object: neither name opens.
    let held = opts.create("Local\\held", 8).unwrap();
    std::fs::hard_link(local.join("held"), local.join("alias")).unwrap();
    for name in ["Local\\held", "Local\\alias"] {
        match opts.open(name, Access::Read) {
            Err(Error::Insecure { reason, .. }) => assert!(reason.contains("2 names"), "{reason}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // Listing and collecting never open any of these, never fail because of them, and
    // report each with its reason.
    std::fs::create_dir(local.join("dir")).unwrap();
    std::fs::write(local.join("not encoded"), b"x").unwrap();
    let listing = root.ns().list_all().unwrap();
    assert!(listing.objects.is_empty(), "{:?}", listing.objects);
    let mut refused: Vec<(Option<String>, String)> = listing
        .refused
        .iter()
        .map(|r| (r.name.as_ref().map(|n| n.to_string()), r.reason.clone()))
        .collect();
    refused.sort();
    let two = "a file with 2 names (hard links), so another name may stand for the same object";
    assert_eq!(
        refused,
        [
            (None, "not a filemap file name".to_owned()),
            (Some("Local\\alias".to_owned()), two.to_owned()),
            (Some("Local\\dir".to_owned()), "a directory".to_owned()),
            (Some("Local\\fifo".to_owned()), "a FIFO".to_owned()),
            (
                Some("Local\\foreign".to_owned()),
                "it is only 5 bytes long".to_owned()
            ),
            (Some("Local\\held".to_owned()), two.to_owned()),
            (Some("Local\\link".to_owned()), "a symlink".to_owned()),
        ]
    );
    let gc = root.ns().gc_all().unwrap();
    assert_eq!(gc.refused.len(), 6);
    assert!(local.join("link").symlink_metadata().is_ok() && local.join("alias").exists());
    // A file with a filemap name and no valid record is a corrupt object: gc removes it,
    // unless someone holds it, and says why.
    assert_eq!(gc.corrupt.len(), 1);
    assert_eq!(
        gc.corrupt[0]
            .name
            .as_ref()
            .map(|n| n.to_string())
            .as_deref(),
        Some("Local\\foreign")
    );
    assert_eq!(gc.corrupt[0].reason, "it is only 5 bytes long");
    assert!(!local.join("foreign").exists());
    drop(held);
    // A Local namespace directory that others can enter is refused, never used.
    let fresh = TestRoot::new("secure2");
    std::fs::create_dir(&fresh.path).unwrap();
    std::fs::set_permissions(&fresh.path, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = fresh.path.join(format!("local-{uid}"));
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    match fresh.opts().create("Local\\y", 8) {
        Err(e @ Error::Insecure { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "refusing to use {}: its mode is 755; a Local namespace must be 700",
                planted.display()
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
    // A shared root that others can write without the sticky bit is refused too.
    let open_root = TestRoot::new("secure3");
    std::fs::create_dir(&open_root.path).unwrap();
    std::fs::set_permissions(&open_root.path, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(
        open_root.opts().create("Local\\z", 8),
        Err(Error::Insecure { .. })
    ));
}

#[cfg(target_os = "linux")]
#[test]
fn stale_objects_are_listed_then_collected() {
    let root = TestRoot::new("gcstale");
    let m = root.opts().create("Local\\s", 8).unwrap();
    let info = root.ns().info("Local\\s").unwrap();
    assert_eq!(info.live, Some(true));
    assert_eq!(info.holders, vec![std::process::id()]);
    assert_eq!(info.size, Some(8));
    drop(m);
    assert!(root.ns().list().unwrap().is_empty());
    assert!(root.ns().gc().unwrap().is_empty());
}

/// A child that another thread is spawning shares our open file descriptions until it
/// execs. A handle that closes while others still hold the object gives its lock up
/// explicitly, and so does an open or create that fails on a live object, so that such a
/// copy cannot outlive them as a holder: the last handle, closing right after, still finds
/// itself alone and removes the name (Linux; on Windows the kernel counts handles).
#[cfg(target_os = "linux")]
#[test]
fn the_name_goes_with_the_last_handle_while_another_thread_spawns_children() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _watchdog = common::watchdog(120);
    let root = TestRoot::new("spawning");
    let opts = root.opts();
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut spawned = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut kid = std::process::Command::new("true").spawn().unwrap();
                kid.wait().unwrap();
                spawned += 1;
            }
            spawned
        })
    };
    let start = std::time::Instant::now();
    let mut rounds = 0;
    // Until the spawner has run for a while (at least 300 rounds).
    while rounds < 300 || start.elapsed() < std::time::Duration::from_millis(1500) {
        let name = format!("Local\\s{}", rounds % 4);
        let first = opts.create(&name, 4096).unwrap();
        let second = opts.open(&name, Access::Read).unwrap();
        // Opens that fail on the live object let go of it at once too.
        assert!(matches!(
            opts.create(&name, 4096),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            opts.open_event(&name),
            Err(Error::KindMismatch { .. })
        ));
        drop(first);
        drop(second);
        // Gone at once: no retry.
        assert!(
            matches!(opts.open(&name, Access::Read), Err(Error::NotFound { .. })),
            "round {rounds}: {name} outlived its last handle"
        );
        assert!(root.local_files().is_empty(), "{:?}", root.local_files());
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(spawner.join().unwrap() > 0);
}

/// Two last handles closed at the same moment: the name goes with them. Each used to find
/// the other still holding the object and leave it stale (CI caught `filemap send` and
/// `recv --follow` ending together; this loop without the fix failed at round 9,671); now
/// the one that looks last removes it.
#[cfg(target_os = "linux")]
#[test]
fn two_last_handles_closed_at_once_leave_nothing_behind() {
    let root = TestRoot::new("close-race");
    let name = root.name("Local\\race");
    let opts = root.opts();
    for round in 0..20_000 {
        let a = opts.create(&name, 4096).unwrap();
        let b = opts.open(&name, Access::ReadWrite).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let other = barrier.clone();
        let t = std::thread::spawn(move || {
            other.wait();
            drop(b);
        });
        barrier.wait();
        drop(a);
        t.join().unwrap();
        assert!(
            root.local_files().is_empty(),
            "round {round}: {:?}",
            root.local_files()
        );
    }
}
