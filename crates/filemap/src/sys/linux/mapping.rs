//! Mappings on Linux: tmpfs-backed named objects and file-backed mappings, and `mmap`.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::OnceLock;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, Mode, OFlags};
use rustix::io::{self as rio, Errno};
use rustix::mm::{self, MapFlags, ProtFlags};

use super::dir::NsDir;
use super::memory::{Region, TrackedView, Tracker};
use super::object::{reserve, Entry, NewObject};
use crate::layout::FLAG_FILE_BACKED;
use crate::sys::{CreateOptions, Disposition, FileChecks};
use crate::{Access, Error, Kind, Name, Namespace, Result};

/// The platform half of a [`FileMapping`](crate::FileMapping).
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The namespace entry; `None` for an unnamed file-backed mapping.
    entry: Option<Entry>,
    /// The file whose bytes are mapped, when it is not the entry itself.
    file: Option<OwnedFd>,
    /// For shared memory: the entry's file opened again, as a description with no lock,
    /// for copy-on-write views. A view's `mmap` holds a reference to the open file
    /// description it maps, and with it that description's OFD locks, so a view of the
    /// locked one would keep the name alive, which Windows does not.
    views_fd: OnceLock<OwnedFd>,
    /// For shared memory: the shared views that map the locked description (opening a
    /// second one for every handle would cost more than the rest of an open). When the
    /// handle is dropped, the views still alive are moved to an unlocked description
    /// (see `Drop`).
    tracker: OnceLock<Tracker>,
    size: u64,
    access: Access,
    /// The file's path: set for file-backed mappings, worked out on first use for shared
    /// memory (a path costs two allocations, which an open need not pay).
    os_path: OnceLock<Option<PathBuf>>,
    created: bool,
}

impl Mapping {
    /// A handle to the shared memory of `entry` (not file-backed).
    fn of_entry(entry: Entry, access: Access, created: bool) -> Mapping {
        Mapping {
            size: entry.record().size,
            access,
            os_path: OnceLock::new(),
            entry: Some(entry),
            file: None,
            views_fd: OnceLock::new(),
            tracker: OnceLock::new(),
            created,
        }
    }

    pub(crate) fn create(
        ns: &Namespace,
        name: &Name,
        size: u64,
        opts: CreateOptions,
        disposition: Disposition,
    ) -> Result<Mapping> {
        let dir = NsDir::for_create(ns, name)?;
        let new = NewObject {
            kind: Kind::Mapping,
            flags: opts.record_flags(),
            size,
            data_len: size,
            init: &[],
            mode: opts.mode,
            sparse: opts.sparse,
        };
        let (entry, created) = Entry::create(dir, name, &new, disposition, &mut |_| Ok(()))?;
        if !created && entry.record().file_backed() {
            return Self::attach_file_backed(entry, Access::ReadWrite, false);
        }
        Ok(Mapping::of_entry(entry, Access::ReadWrite, created))
    }

    pub(crate) fn open(ns: &Namespace, name: &Name, access: Access) -> Result<Mapping> {
        let dir = NsDir::for_open(ns, name, Kind::Mapping)?;
        let writable = access == Access::ReadWrite;
        let entry = match Entry::open(dir.clone(), name, Kind::Mapping, writable) {
            Ok(entry) => entry,
            // The entry of a file-backed mapping holds only its record, which no one but its
            // owner may write; who may write the mapped file is in the record. So a
            // read-only entry may still be a mapping that you may write.
            Err(denied @ Error::PermissionDenied { .. }) if writable => {
                match Entry::open(dir, name, Kind::Mapping, false) {
                    Ok(entry) if entry.record().file_backed() => entry,
                    _ => return Err(denied),
                }
            }
            Err(e) => return Err(e),
        };
        if entry.record().file_backed() {
            return Self::attach_file_backed(entry, access, false);
        }
        Ok(Mapping::of_entry(entry, access, false))
    }

    /// A mapping of `file`. `size` 0 means the file's size; a larger size grows the file.
    pub(crate) fn from_file(
        file: OwnedFd,
        path_hint: Option<&Path>,
        size: u64,
        access: Access,
        opts: CreateOptions,
        name: Option<(&Namespace, &Name)>,
    ) -> Result<Mapping> {
        let what = || match path_hint {
            Some(p) => p.display().to_string(),
            None => "the file".to_owned(),
        };
        let checks = FileChecks { what: what() };
        let fl =
            fs::fcntl_getfl(&file).map_err(|e| Error::io(format!("checking {}", what()), e))?;
        let mode = fl & OFlags::RWMODE;
        checks.open_mode(mode != OFlags::WRONLY, mode == OFlags::RDWR, access)?;
        let st = fs::fstat(&file).map_err(|e| Error::io(format!("checking {}", what()), e))?;
        let regular = fs::FileType::from_raw_mode(st.st_mode) == fs::FileType::RegularFile;
        let len = st.st_size as u64;
        let size = checks.size(regular, len, size, access)?;
        if size > len {
            let grown = if opts.sparse {
                fs::ftruncate(&file, size)
            } else {
                reserve(&file, size)
            };
            grown.map_err(|e| match e {
                Errno::NOSPC | Errno::FBIG => Error::NoSpace { name: what(), size },
                e => Error::io(format!("growing {} to {size} bytes", what()), e),
            })?;
        }
        let real_path = fs::readlink(
            format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(&file)),
            Vec::new(),
        )
        .ok()
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p.as_bytes())));
        let Some((ns, name)) = name else {
            return Ok(Mapping {
                entry: None,
                file: Some(file),
                views_fd: OnceLock::new(),
                tracker: OnceLock::new(),
                size,
                access,
                os_path: OnceLock::from(real_path.or_else(|| path_hint.map(Path::to_path_buf))),
                created: true,
            });
        };
        let Some(real_path) = real_path.filter(|p| p.is_absolute()) else {
            return Err(Error::InvalidArgument {
                what: format!("{} has no path that other processes could open", what()),
            });
        };
        // The entry records where the file is, which file it is, and who may write it, so
        // that openers can find it, check that it was not replaced, and get no more access
        // than its creator has and grants. No one but its creator may write the entry (its
        // record): the write grants of `mode` go into the record instead.
        let record = FileRecord {
            dev: st.st_dev,
            ino: st.st_ino,
            path: real_path.clone(),
            flags: (if access == Access::ReadWrite {
                CREATOR_WRITES
            } else {
                0
            }) | (if opts.mode & 0o020 != 0 {
                GROUP_WRITES
            } else {
                0
            }) | (if opts.mode & 0o002 != 0 {
                OTHERS_WRITE
            } else {
                0
            }),
        }
        .encode();
        let new = NewObject {
            kind: Kind::Mapping,
            flags: opts.record_flags() | FLAG_FILE_BACKED,
            size,
            data_len: record.len() as u64,
            init: &record,
            mode: opts.mode & !0o022,
            sparse: false,
        };
        let (entry, created) = Entry::create(
            NsDir::for_create(ns, name)?,
            name,
            &new,
            Disposition::OpenOrCreate,
            &mut |_| Ok(()),
        )?;
        if !created {
            // Windows returns the existing object and ignores the new file; so do we.
            if !entry.record().file_backed() {
                return Ok(Mapping::of_entry(entry, access, false));
            }
            return Self::attach_file_backed(entry, access, false);
        }
        Ok(Mapping {
            entry: Some(entry),
            file: Some(file),
            views_fd: OnceLock::new(),
            tracker: OnceLock::new(),
            size,
            access,
            os_path: OnceLock::from(Some(real_path)),
            created: true,
        })
    }

    /// Opens the file named in a file-backed entry for `access`, and checks that it is the
    /// same file. The record is trusted only as far as its owner, who alone can have written
    /// it: the opener gets at most the access that the owner created the mapping with and
    /// granted to the opener's class, and, when the opener is someone else, only a file
    /// that the owner itself could reach and open that way (no confused deputy).
    fn attach_file_backed(entry: Entry, access: Access, created: bool) -> Result<Mapping> {
        let name = entry.name().to_string();
        let corrupt = |reason: &str| Error::Corrupt {
            path: entry.path(),
            reason: reason.to_owned(),
        };
        let (owner, group, mode) = entry.owner();
        if mode & 0o022 != 0 {
            return Err(Error::Insecure {
                path: entry.path(),
                reason: format!(
                    "users other than its owner ({}) may write its record, which says which file it maps",
                    super::user::describe(owner)
                ),
            });
        }
        let data_len = entry.record().data_len as usize;
        let mut buf = vec![0u8; data_len];
        let n = rio::pread(entry.fd(), &mut buf, 0)
            .map_err(|e| Error::io(format!("reading {name}"), e))?;
        let record = FileRecord::decode(&buf[..n]).map_err(corrupt)?;
        let path = record.path.clone();
        let me = rustix::process::geteuid().as_raw();
        if access == Access::ReadWrite {
            let granted = if me == owner {
                true
            } else if in_my_groups(group) {
                record.flags & GROUP_WRITES != 0
            } else {
                record.flags & OTHERS_WRITE != 0
            };
            if record.flags & CREATOR_WRITES == 0 || !granted {
                return Err(Error::denied(format!(
                    "{name} maps {} read-only for you: its creator ({}) {}",
                    path.display(),
                    super::user::describe(owner),
                    if record.flags & CREATOR_WRITES == 0 {
                        "mapped it read-only"
                    } else {
                        "did not grant you write access"
                    }
                )));
            }
        }
        let file = open_as_owner_could(&path, access, owner, me, &name)?;
        let st =
            fs::fstat(&file).map_err(|e| Error::io(format!("checking {}", path.display()), e))?;
        if st.st_dev != record.dev || st.st_ino != record.ino {
            return Err(Error::Insecure {
                path,
                reason: format!("it is no longer the file that {name} maps"),
            });
        }
        let size = entry.record().size;
        if (st.st_size as u64) < size {
            return Err(Error::Corrupt {
                path,
                reason: format!(
                    "{name} maps {size} bytes of it, but it shrank to {}",
                    st.st_size
                ),
            });
        }
        Ok(Mapping {
            entry: Some(entry),
            file: Some(file),
            views_fd: OnceLock::new(),
            tracker: OnceLock::new(),
            size,
            access,
            os_path: OnceLock::from(Some(path)),
            created,
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn access(&self) -> Access {
        self.access
    }

    pub(crate) fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn os_path(&self) -> Option<&Path> {
        self.os_path
            .get_or_init(|| self.entry.as_ref().map(Entry::path))
            .as_deref()
    }

    pub(crate) fn name(&self) -> Option<&Name> {
        self.entry.as_ref().map(Entry::name)
    }

    /// A new open file description of the mapped bytes, holding no lock, for `access`
    /// (read-only for copy-on-write): another runtime may map it without keeping the name
    /// alive.
    pub(crate) fn reopen(&self, access: Access) -> Result<OwnedFd> {
        let fd = match (&self.file, &self.entry) {
            (Some(f), _) => f,
            (None, Some(e)) => e.fd(),
            (None, None) => unreachable!("a mapping has a file or an entry"),
        };
        let mode = match access {
            Access::ReadWrite => OFlags::RDWR,
            Access::Read | Access::CopyOnWrite => OFlags::RDONLY,
        };
        // /proc/self/fd/N opens the same inode, even unlinked, as a new description.
        let path = format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(fd));
        fs::open(path, mode | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::io("opening the mapping again (through /proc/self/fd)", e))
    }

    /// A duplicate of the handle's descriptor (the same description, with the handle's
    /// access): the backing file's for a file-backed mapping, else the object file's.
    pub(crate) fn dup_fd(&self) -> Result<OwnedFd> {
        match (&self.file, &self.entry) {
            (Some(f), _) => rio::fcntl_dupfd_cloexec(f, 0)
                .map_err(|e| Error::io("duplicating the mapping's descriptor", e)),
            (None, Some(e)) => e.dup_fd(),
            (None, None) => unreachable!("a mapping has a file or an entry"),
        }
    }

    /// The entry's file as a second description, without locks (`views_fd`); `None`
    /// without /proc, or if its mode has changed since.
    fn unlocked_fd(&self, entry: &Entry) -> Option<&OwnedFd> {
        if let Some(fd) = self.views_fd.get() {
            return Some(fd);
        }
        let mode = match self.access {
            Access::ReadWrite => OFlags::RDWR,
            Access::Read | Access::CopyOnWrite => OFlags::RDONLY,
        };
        // /proc/self/fd/N opens the same inode, even unlinked, as a new description.
        let path = format!(
            "/proc/self/fd/{}",
            rustix::fd::AsRawFd::as_raw_fd(entry.fd())
        );
        let fd = fs::open(path, mode | OFlags::CLOEXEC, Mode::empty()).ok()?;
        Some(self.views_fd.get_or_init(|| fd))
    }

    /// The descriptor that a view with `access` maps, and the tracker to register it with:
    /// the mapped file; for shared memory, the locked description (tracked) for shared
    /// views, and an unlocked one for copy-on-write views, whose private pages could not
    /// be moved later.
    fn view_fd(&self, access: Access) -> (&OwnedFd, Option<&Tracker>) {
        match (&self.file, &self.entry) {
            (Some(f), _) => (f, None),
            // A forked child's copy of a handle gives no lock up when it closes, so its
            // views need neither an unlocked description nor tracking (and it stays off
            // locks that another thread of its parent may have held at the fork).
            (None, Some(e)) if e.inherited() => (e.fd(), None),
            (None, Some(e)) => match access {
                Access::CopyOnWrite => match self.unlocked_fd(e) {
                    Some(fd) => (fd, None),
                    // Without /proc: the locked description, whose view then keeps the
                    // name too.
                    None => (e.fd(), None),
                },
                Access::Read | Access::ReadWrite => {
                    (e.fd(), Some(self.tracker.get_or_init(Tracker::default)))
                }
            },
            (None, None) => unreachable!("a mapping has a file or an entry"),
        }
    }

    /// Maps `len` bytes at `offset`; both are already checked against the size and the
    /// access against the mapping's protection.
    pub(crate) fn map(&self, access: Access, offset: u64, len: usize) -> Result<Region> {
        let page = rustix::param::page_size() as u64;
        let aligned = offset & !(page - 1);
        let delta = (offset - aligned) as usize;
        let map_len = len
            .checked_add(delta)
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| Error::InvalidSize {
                what: format!("a view of {len} bytes does not fit in the address space"),
            })?;
        let (prot, flags) = match access {
            Access::Read => (ProtFlags::READ, MapFlags::SHARED),
            Access::ReadWrite => (ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED),
            Access::CopyOnWrite => (ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE),
        };
        let (fd, tracker) = self.view_fd(access);
        // SAFETY: a new mapping at an address of the kernel's choosing (null hint) cannot
        // overlap any memory Rust knows about; the fd is open and `aligned` is a multiple
        // of the page size.
        let base = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                flags,
                fd.as_fd(),
                aligned,
            )
        }
        .map_err(|e| match e {
            Errno::ACCESS | Errno::PERM => Error::denied(format!("mapping a {access} view")),
            Errno::NOMEM => Error::InvalidSize {
                what: format!("no address space left for a view of {len} bytes"),
            },
            e => Error::io(
                format!("mapping a view of {len} bytes at offset {offset}"),
                e,
            ),
        })?;
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| Error::io("mapping a view", Errno::NOMEM))?;
        if let Some(mut live) = tracker.and_then(Tracker::lock) {
            live.push(TrackedView {
                base: base.as_ptr() as usize,
                len: map_len,
                offset: aligned,
                prot,
            });
        }
        Ok(Region {
            base,
            map_len,
            delta,
            len,
            tracker: tracker.cloned(),
        })
    }
}

impl Drop for Mapping {
    /// The handle goes: its shared views that are still alive move to an unlocked
    /// description of the same file, so that closing the handle's description (after this)
    /// drops its lock, and with it the name if it was the last handle, as on Windows.
    fn drop(&mut self) {
        let (Some(tracker), Some(entry)) = (self.tracker.get(), &self.entry) else {
            return;
        };
        // `None` in a forked child, whose copy of the handle gives no lock up, so its views
        // need not move.
        let Some(mut live) = tracker.lock() else {
            return;
        };
        if live.is_empty() {
            return;
        }
        let Some(fd) = self.unlocked_fd(entry) else {
            // Without /proc the views stay on the locked description, and keep the name.
            return;
        };
        for v in live.iter() {
            let remap = |fd: &OwnedFd| {
                // SAFETY: [base, base + len) is exactly a live view's mapping (registered
                // while mapped, and the tracker's lock keeps its View from unmapping it
                // now). It is replaced, in one step under the kernel's mmap lock, by a
                // shared mapping of the same pages of the same file with the same
                // protection, so its contents and every pointer and reference into it
                // stay valid; another thread touching it meanwhile waits in the page fault.
                unsafe {
                    mm::mmap(
                        v.base as *mut c_void,
                        v.len,
                        v.prot,
                        MapFlags::SHARED | MapFlags::FIXED,
                        fd.as_fd(),
                        v.offset,
                    )
                }
            };
            if remap(fd).is_err() && remap(entry.fd()).is_err() {
                // A failed MAP_FIXED may have left a hole where the view was, which safe
                // code would touch: stop here rather than let it.
                eprintln!("filemap: cannot map a view again; aborting");
                std::process::abort();
            }
        }
        live.clear();
    }
}

/// Opens `path` for a file-backed mapping with `access`.
pub(crate) fn open_for_mapping(path: &Path, access: Access) -> Result<OwnedFd> {
    let flags = if access == Access::ReadWrite {
        OFlags::RDWR
    } else {
        OFlags::RDONLY
    };
    fs::open(
        path,
        flags | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT => Error::InvalidArgument {
            what: format!("no file at {}", path.display()),
        },
        Errno::ACCESS | Errno::PERM | Errno::ROFS => {
            Error::denied(format!("cannot open {} for {access}", path.display()))
        }
        e => Error::io(format!("opening {}", path.display()), e),
    })
}

/// Duplicates an open file's descriptor (close-on-exec).
pub(crate) fn dup_file(file: &File) -> Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(file, 0)
        .map_err(|e| Error::io("duplicating the file descriptor", e))
}

/// The creator of a named file-backed mapping may write the file.
const CREATOR_WRITES: u32 = 1;
/// Members of the entry's group may map it read-write.
const GROUP_WRITES: u32 = 2;
/// Everyone may map it read-write.
const OTHERS_WRITE: u32 = 4;

/// What a named file-backed mapping's entry holds instead of data: the mapped file's
/// device, inode and canonical path, and the write flags above. Little-endian:
/// `dev: u64, ino: u64, path_len: u32, path, flags: u32`.
#[derive(Debug)]
struct FileRecord {
    dev: u64,
    ino: u64,
    path: PathBuf,
    flags: u32,
}

impl FileRecord {
    fn encode(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_bytes();
        let mut out = Vec::with_capacity(24 + path.len());
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        out.extend_from_slice(&self.flags.to_le_bytes());
        out
    }

    fn decode(buf: &[u8]) -> std::result::Result<FileRecord, &'static str> {
        let u64_at = |at: usize| {
            buf.get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        };
        let u32_at = |at: usize| {
            buf.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        };
        let (Some(dev), Some(ino), Some(plen)) = (u64_at(0), u64_at(8), u32_at(16)) else {
            return Err("its file record is too short");
        };
        let plen = plen as usize;
        let path = buf
            .get(20..20 + plen)
            .ok_or("its file record is cut short")?;
        // Records from before the flags: nobody but the creator may write.
        let flags = u32_at(20 + plen).unwrap_or(CREATOR_WRITES);
        Ok(FileRecord {
            dev,
            ino,
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            flags,
        })
    }
}

/// Whether the calling process is in group `gid`.
fn in_my_groups(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

/// Whether the user `uid` (in `groups`) has the permission `want` (4 read, 2 write,
/// 1 search) on the file open as `fd`, by its mode bits. A file with an access control
/// list counts only for its owner: its group bits are then a mask, and named entries could
/// say anything.
fn may(uid: u32, groups: &[u32], fd: &OwnedFd, want: u32) -> Result<bool> {
    let st = fs::fstat(fd).map_err(|e| Error::io("checking a file's permissions", e))?;
    let bits = if st.st_uid == uid {
        st.st_mode >> 6
    } else if has_acl(fd) {
        return Ok(false);
    } else if groups.contains(&st.st_gid) {
        st.st_mode >> 3
    } else {
        st.st_mode
    };
    Ok(bits & want == want)
}

fn has_acl(fd: &OwnedFd) -> bool {
    let path = format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(fd));
    !matches!(
        fs::getxattr(path.as_str(), "system.posix_acl_access", &mut [0u8; 0][..]),
        Err(Errno::NODATA) | Err(Errno::NOTSUP)
    )
}

/// Opens `path` for `access` with the opener's own rights, from `/` one directory at a
/// time (no symlinks, no `..`). When the opener (`me`) is not `owner`, who chose the path,
/// every directory on the way must be one that `owner` may search, and the file one that
/// `owner` may open that way: the opener never uses its own rights on a file that `owner`
/// could not reach (root's rights, say).
fn open_as_owner_could(
    path: &Path,
    access: Access,
    owner: u32,
    me: u32,
    name: &str,
) -> Result<OwnedFd> {
    let canonical = || Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{name} records it, but it is not an absolute, plain path"),
    };
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::RootDir if parts.is_empty() => {}
            std::path::Component::Normal(part) => parts.push(part),
            _ => return Err(canonical()),
        }
    }
    if !path.is_absolute() {
        return Err(canonical());
    }
    let (last, dirs) = parts.split_last().ok_or_else(canonical)?;
    // Root's own mappings, and your own, need no check: they could reach anything you can.
    let check = owner != me && owner != 0;
    let groups = if check {
        super::user::groups_of(owner)
    } else {
        Vec::new()
    };
    let cannot = |what: &Path, how: &str| {
        Error::denied(format!(
            "{name} maps {}, but its creator ({}) may not {how} {}",
            path.display(),
            super::user::describe(owner),
            what.display()
        ))
    };
    let mut here = PathBuf::from("/");
    let mut dir = fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening /", e))?;
    for part in dirs {
        if check && !may(owner, &groups, &dir, 1)? {
            return Err(cannot(&here, "search"));
        }
        here.push(part);
        dir = match fs::openat(
            &dir,
            *part,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                return Err(Error::NotFound {
                    name: format!("{name} (its file {} is gone)", path.display()),
                    kind: Some(Kind::Mapping),
                })
            }
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return Err(Error::Insecure {
                    path: here,
                    reason: format!(
                        "{name} maps a file under it, but it is a symlink or not a directory"
                    ),
                })
            }
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                return Err(Error::denied(format!(
                    "{name} maps {}, which you cannot reach",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("opening {}", here.display()), e)),
        };
    }
    if check && !may(owner, &groups, &dir, 1)? {
        return Err(cannot(&here, "search"));
    }
    let flags = if access == Access::ReadWrite {
        OFlags::RDWR
    } else {
        OFlags::RDONLY
    };
    let file = match fs::openat(
        &dir,
        *last,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(f) => f,
        Err(Errno::ACCESS) | Err(Errno::PERM) => {
            return Err(Error::denied(format!(
                "{name} maps {}, which you cannot open for {access}",
                path.display()
            )))
        }
        Err(Errno::NOENT) => {
            return Err(Error::NotFound {
                name: format!("{name} (its file {} is gone)", path.display()),
                kind: Some(Kind::Mapping),
            })
        }
        Err(Errno::LOOP) => {
            return Err(Error::Insecure {
                path: path.to_path_buf(),
                reason: format!("{name} maps it, but it is a symlink"),
            })
        }
        Err(e) => {
            return Err(Error::io(
                format!("opening {} for {name}", path.display()),
                e,
            ))
        }
    };
    let want = if access == Access::ReadWrite {
        4 | 2
    } else {
        4
    };
    if check && !may(owner, &groups, &file, want)? {
        return Err(cannot(
            path,
            if want & 2 != 0 {
                "open for writing"
            } else {
                "read"
            },
        ));
    }
    Ok(file)
}
