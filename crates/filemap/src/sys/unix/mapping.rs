//! Mappings on Linux: tmpfs-backed named objects and file-backed mappings, and `mmap`.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, Mode, OFlags};
use rustix::io::{self as rio, Errno};
use rustix::mm::{self, MapFlags, MsyncFlags, ProtFlags};

use super::dir::NsDir;
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
    size: u64,
    access: Access,
    os_path: Option<PathBuf>,
    created: bool,
}

impl Mapping {
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
        };
        let (entry, created) = Entry::create(dir, name, &new, disposition, &mut |_| Ok(()))?;
        if !created && entry.record().file_backed() {
            return Self::attach_file_backed(entry, Access::ReadWrite, false);
        }
        Ok(Mapping {
            size: entry.record().size,
            access: Access::ReadWrite,
            os_path: Some(entry.path()),
            entry: Some(entry),
            file: None,
            created,
        })
    }

    pub(crate) fn open(ns: &Namespace, name: &Name, access: Access) -> Result<Mapping> {
        let dir = NsDir::for_open(ns, name, Kind::Mapping)?;
        let writable = access == Access::ReadWrite;
        // The entry of a file-backed mapping only holds a record; its data is elsewhere.
        let entry = Entry::open(dir, name, Kind::Mapping, writable)?;
        if entry.record().file_backed() {
            return Self::attach_file_backed(entry, access, false);
        }
        Ok(Mapping {
            size: entry.record().size,
            access,
            os_path: Some(entry.path()),
            entry: Some(entry),
            file: None,
            created: false,
        })
    }

    /// A mapping of `file`. `size` 0 means the file's size; a larger size grows the file.
    pub(crate) fn from_file(
        file: OwnedFd,
        path_hint: Option<&Path>,
        size: u64,
        access: Access,
        name: Option<(&Namespace, &Name, CreateOptions)>,
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
            reserve(&file, size).map_err(|e| match e {
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
        let Some((ns, name, opts)) = name else {
            return Ok(Mapping {
                entry: None,
                file: Some(file),
                size,
                access,
                os_path: real_path.or_else(|| path_hint.map(Path::to_path_buf)),
                created: true,
            });
        };
        let Some(real_path) = real_path.filter(|p| p.is_absolute()) else {
            return Err(Error::InvalidArgument {
                what: format!("{} has no path that other processes could open", what()),
            });
        };
        // The entry records where the file is and which file it is, so that openers can
        // find it and check that it was not replaced.
        let mut record = Vec::new();
        record.extend_from_slice(&st.st_dev.to_le_bytes());
        record.extend_from_slice(&st.st_ino.to_le_bytes());
        let path_bytes = real_path.as_os_str().as_bytes();
        record.extend_from_slice(&(path_bytes.len() as u32).to_le_bytes());
        record.extend_from_slice(path_bytes);
        let new = NewObject {
            kind: Kind::Mapping,
            flags: opts.record_flags() | FLAG_FILE_BACKED,
            size,
            data_len: record.len() as u64,
            init: &record,
            mode: opts.mode,
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
                return Ok(Mapping {
                    size: entry.record().size,
                    access,
                    os_path: Some(entry.path()),
                    entry: Some(entry),
                    file: None,
                    created: false,
                });
            }
            return Self::attach_file_backed(entry, access, false);
        }
        Ok(Mapping {
            entry: Some(entry),
            file: Some(file),
            size,
            access,
            os_path: Some(real_path),
            created: true,
        })
    }

    /// Opens the file named in a file-backed entry and checks that it is the same file.
    fn attach_file_backed(entry: Entry, access: Access, created: bool) -> Result<Mapping> {
        let name = entry.name().to_string();
        let corrupt = |reason: &str| Error::Corrupt {
            path: entry.path(),
            reason: reason.to_owned(),
        };
        let data_len = entry.record().data_len as usize;
        let mut buf = vec![0u8; data_len];
        let n = rio::pread(entry.fd(), &mut buf, 0)
            .map_err(|e| Error::io(format!("reading {name}"), e))?;
        let buf = &buf[..n];
        if buf.len() < 20 {
            return Err(corrupt("its file record is too short"));
        }
        let dev = u64::from_le_bytes(buf[0..8].try_into().unwrap());
        let ino = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        let plen = u32::from_le_bytes(buf[16..20].try_into().unwrap()) as usize;
        let path_bytes = buf
            .get(20..20 + plen)
            .ok_or_else(|| corrupt("its file record is cut short"))?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(path_bytes));
        let flags = if access == Access::ReadWrite {
            OFlags::RDWR
        } else {
            OFlags::RDONLY
        };
        let file = match fs::open(
            &path,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(f) => f,
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                return Err(Error::denied(format!(
                    "{name} maps {}, which you cannot open for {}",
                    path.display(),
                    access
                )))
            }
            Err(Errno::NOENT) => {
                return Err(Error::NotFound {
                    name: format!("{name} (its file {} is gone)", path.display()),
                    kind: Some(Kind::Mapping),
                })
            }
            Err(e) => {
                return Err(Error::io(
                    format!("opening {} for {name}", path.display()),
                    e,
                ))
            }
        };
        let st =
            fs::fstat(&file).map_err(|e| Error::io(format!("checking {}", path.display()), e))?;
        if st.st_dev != dev || st.st_ino != ino {
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
            size,
            access,
            os_path: Some(path),
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
        self.os_path.as_deref()
    }

    pub(crate) fn name(&self) -> Option<&Name> {
        self.entry.as_ref().map(Entry::name)
    }

    fn data_fd(&self) -> &OwnedFd {
        match (&self.file, &self.entry) {
            (Some(f), _) => f,
            (None, Some(e)) => e.fd(),
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
        // SAFETY: a new mapping at an address of the kernel's choosing (null hint) cannot
        // overlap any memory Rust knows about; the fd is open and `aligned` is a multiple
        // of the page size.
        let base = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                flags,
                self.data_fd().as_fd(),
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
        Ok(Region {
            base,
            map_len,
            delta,
            len,
        })
    }
}

/// One `mmap`ed range. `ptr()` points at the byte the caller asked for.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    map_len: usize,
    delta: usize,
    len: usize,
}

// SAFETY: a Region is plain memory owned by this handle; nothing in it is tied to a thread.
unsafe impl Send for Region {}
// SAFETY: shared references only hand out raw pointers or copy through them; callers
// synchronise as they would for memory that other processes write.
unsafe impl Sync for Region {}

impl Region {
    #[inline]
    pub(crate) fn ptr(&self) -> *mut u8 {
        // SAFETY: `delta` < page size <= `map_len`, so the result stays inside the mapping.
        unsafe { self.base.as_ptr().add(self.delta) }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `msync(MS_SYNC)` over `len` bytes at `offset` in the view (already checked).
    pub(crate) fn flush(&self, offset: usize, len: usize) -> Result<()> {
        let page = rustix::param::page_size();
        let start = self.delta + offset;
        let aligned = start & !(page - 1);
        let sync_len = len + (start - aligned);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: [aligned, aligned + sync_len) lies inside our mapping, which is alive,
        // and msync does not change what the memory holds.
        unsafe {
            mm::msync(
                self.base.as_ptr().add(aligned).cast::<c_void>(),
                sync_len,
                MsyncFlags::SYNC,
            )
        }
        .map_err(|e| Error::io("flushing a view", e))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we own this mapping; the View that holds us hands out no borrow that
        // outlives it.
        let _ = unsafe { mm::munmap(self.base.as_ptr().cast::<c_void>(), self.map_len) };
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

/// Maps the first page of an object file: its state. With `shared`, writes reach every
/// holder (`MAP_SHARED`); without, the mapping is private but still shows the file's
/// current bytes until written (which the caller does not do), so a read-only fd suffices.
pub(crate) fn map_state(fd: &OwnedFd, shared: bool) -> Result<Region> {
    let len = rustix::param::page_size();
    let flags = if shared {
        MapFlags::SHARED
    } else {
        MapFlags::PRIVATE
    };
    // SAFETY: a new mapping at an address of the kernel's choosing cannot overlap memory
    // that Rust knows about; the fd is open and offset 0 is page-aligned.
    let base = unsafe {
        mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            flags,
            fd.as_fd(),
            0,
        )
    }
    .map_err(|e| Error::io("mapping an object's state", e))?;
    let base = NonNull::new(base.cast::<u8>())
        .ok_or_else(|| Error::io("mapping an object's state", Errno::NOMEM))?;
    Ok(Region {
        base,
        map_len: len,
        delta: 0,
        len,
    })
}

/// The first page of an object file mapped shared, right after a private, zeroed page of
/// the same size: the *shadow*. A word at offset `x` of the state has the address
/// `shadow + page + x`, so a robust-list entry at `shadow + x` names it with a constant
/// `futex_offset` of one page (see `robust.rs`). The list's pointers live in the shadow,
/// in this process's own memory, where no other process can read or change them.
#[derive(Debug)]
pub(crate) struct ShadowedState {
    base: NonNull<u8>,
    page: usize,
}

// SAFETY: the mapping is owned by this value and tied to no thread; shared references only
// hand out raw pointers.
unsafe impl Send for ShadowedState {}
// SAFETY: as above; all access to the memory is through atomics or raw pointers whose users
// synchronise.
unsafe impl Sync for ShadowedState {}

impl ShadowedState {
    pub(crate) fn map(fd: &OwnedFd) -> Result<ShadowedState> {
        let page = rustix::param::page_size();
        let failed = |e| Error::io("mapping an object's state", e);
        // 1. Reserve two pages of private, zeroed memory.
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing cannot
        // overlap memory that Rust knows about.
        let base = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                2 * page,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(failed)?;
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| failed(Errno::NOMEM))?;
        let shadowed = ShadowedState { base, page };
        // 2. Put the state over the second page. From here on, dropping `shadowed` unmaps
        //    both pages, whatever happens.
        // SAFETY: MAP_FIXED replaces the second page of our own reservation, which nothing
        // else uses; the fd is open and offset 0 is page-aligned.
        unsafe {
            mm::mmap(
                shadowed.state().cast(),
                page,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(failed)?;
        Ok(shadowed)
    }

    /// The private page.
    pub(crate) fn shadow(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The shared state: one page.
    pub(crate) fn state(&self) -> *mut u8 {
        // SAFETY: the reservation is two pages long.
        unsafe { self.base.as_ptr().add(self.page) }
    }

    pub(crate) fn page(&self) -> usize {
        self.page
    }
}

impl Drop for ShadowedState {
    fn drop(&mut self) {
        // SAFETY: we own both pages; the owner unlinks every robust-list entry in the shadow
        // before dropping us (see `robust.rs`).
        let _ = unsafe { mm::munmap(self.base.as_ptr().cast::<c_void>(), 2 * self.page) };
    }
}
