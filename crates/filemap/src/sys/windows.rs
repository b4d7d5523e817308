//! Windows: the kernel's own named objects (`CreateFileMappingW`, `CreateMutexW`,
//! `CreateSemaphoreW`, `CreateEventW`, `WaitForMultipleObjects`). `Local\` and `Global\`
//! names go to the kernel as they are; the kernel provides the one namespace, the kinds,
//! the lifetime (last handle) and abandoned mutexes.
//!
//! Windows rounds section and view sizes up to pages, so a mapping made by filemap carries
//! the same 4 KiB record as on Linux after its data (at the size rounded up to 4096), which
//! holds the exact size. A section made by another program has no record; its size is
//! then the page-rounded size of its region.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectBasicInformation};
use windows_sys::Wdk::System::SystemServices::{EVENT_QUERY_STATE, SEMAPHORE_QUERY_STATE};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_COMMITMENT_LIMIT,
    ERROR_DISK_FULL, ERROR_FILENAME_EXCED_RANGE, ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE,
    ERROR_NOT_ENOUGH_MEMORY, ERROR_NOT_OWNER, ERROR_TOO_MANY_POSTS, HANDLE, INVALID_HANDLE_VALUE,
    WAIT_ABANDONED_0, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_READ_DATA, FILE_WRITE_DATA, SYNCHRONIZE};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, FlushViewOfFile, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile,
    VirtualQuery, FILE_MAP_COPY, FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION,
    MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READONLY, PAGE_READWRITE, PAGE_WRITECOPY,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
use windows_sys::Win32::System::SystemServices::MUTANT_QUERY_STATE;
use windows_sys::Win32::System::Threading::{
    CreateEventW, CreateMutexW, CreateSemaphoreW, OpenEventW, OpenMutexW, OpenSemaphoreW,
    ReleaseMutex, ReleaseSemaphore, ResetEvent, SetEvent, WaitForMultipleObjects,
    WaitForSingleObject, EVENT_ALL_ACCESS, INFINITE, MUTEX_ALL_ACCESS, SEMAPHORE_ALL_ACCESS,
};
use windows_sys::Win32::System::WindowsProgramming::PUBLIC_OBJECT_BASIC_INFORMATION;

use super::{CreateOptions, Disposition, FileChecks, Locked};
use crate::layout::{Record, RECORD_LEN, RECORD_USED};
use crate::{Access, Error, Kind, Name, Namespace, ObjectInfo, Result, SyncState};

/// The file a file-backed mapping is made from.
pub(crate) type FileHandle = File;

/// An owned kernel handle.
#[derive(Debug)]
struct Handle(HANDLE);

// SAFETY: kernel handles may be used from any thread.
unsafe impl Send for Handle {}
// SAFETY: as above; every operation on them is a thread-safe kernel call.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: we own the handle and close it once.
        unsafe { CloseHandle(self.0) };
    }
}

fn wide(name: &Name) -> Vec<u16> {
    name.to_string()
        .encode_utf16()
        .chain(std::iter::once(0))
        .collect()
}

fn last_error() -> u32 {
    // SAFETY: reads this thread's last-error value.
    unsafe { GetLastError() }
}

fn os_error(context: String, code: u32) -> Error {
    Error::io(context, std::io::Error::from_raw_os_error(code as i32))
}

/// Opens `w` as an object of `kind`, with no more rights than reading or querying it
/// takes (null on failure).
fn open_as(kind: Kind, w: &[u16]) -> HANDLE {
    // SAFETY: `w` is a NUL-terminated UTF-16 string that outlives the call.
    unsafe {
        match kind {
            Kind::Mapping => OpenFileMappingW(FILE_MAP_READ, 0, w.as_ptr()),
            Kind::Event => OpenEventW(SYNCHRONIZE | EVENT_QUERY_STATE, 0, w.as_ptr()),
            Kind::Mutex => OpenMutexW(SYNCHRONIZE | MUTANT_QUERY_STATE, 0, w.as_ptr()),
            Kind::Semaphore => OpenSemaphoreW(SYNCHRONIZE | SEMAPHORE_QUERY_STATE, 0, w.as_ptr()),
        }
    }
}

/// Which kind holds `name`, found by opening it as each kind in turn, with the handle
/// that the probe opened; `None` for the handle when the kind is known only from an
/// access-denied error.
fn probe(name: &Name) -> Option<(Kind, Option<Handle>)> {
    let w = wide(name);
    for kind in [Kind::Mapping, Kind::Event, Kind::Mutex, Kind::Semaphore] {
        let h = open_as(kind, &w);
        if !h.is_null() {
            return Some((kind, Some(Handle(h))));
        }
        if last_error() == ERROR_ACCESS_DENIED {
            return Some((kind, None));
        }
    }
    None
}

/// Which kind holds `name`.
fn kind_holding(name: &Name) -> Option<Kind> {
    probe(name).map(|(kind, _)| kind)
}

/// Maps a failed create or open to the error that Linux would give.
fn object_error(code: u32, name: &Name, kind: Kind, doing: &str) -> Error {
    match code {
        ERROR_FILE_NOT_FOUND => Error::NotFound {
            name: name.to_string(),
            kind: Some(kind),
        },
        ERROR_INVALID_HANDLE => Error::KindMismatch {
            name: name.to_string(),
            expected: kind,
            found: kind_holding(name)
                .filter(|k| *k != kind)
                .unwrap_or(Kind::Mapping),
        },
        // Creating a section in Global\ needs SeCreateGlobalPrivilege; without it the
        // kernel says "access denied" whether or not the name exists.
        ERROR_ACCESS_DENIED
            if kind == Kind::Mapping
                && doing == "creating"
                && name.scope() == crate::Scope::Global =>
        {
            Error::denied(format!(
                "creating a Global\\ mapping needs SeCreateGlobalPrivilege (administrators and services have it), or {name} exists and its security does not allow opening it"
            ))
        }
        ERROR_ACCESS_DENIED => Error::denied(format!(
            "{name} exists, but its security does not allow {doing} it"
        )),
        ERROR_NOT_ENOUGH_MEMORY | ERROR_COMMITMENT_LIMIT | ERROR_DISK_FULL => Error::NoSpace {
            name: name.to_string(),
            size: 0,
        },
        // STATUS_NAME_TOO_LONG: within Name::MAX_LEN, but too long once the kernel has
        // expanded Local\ or Global\ to its object directory.
        ERROR_FILENAME_EXCED_RANGE => {
            let full = name.full();
            Error::NameTooLong {
                len: full.encode_utf16().count(),
                name: full,
                max: Name::MAX_LEN,
            }
        }
        code => os_error(format!("{doing} {name}"), code),
    }
}

fn no_persistence(opts: &CreateOptions) -> Result<()> {
    if opts.persistent {
        return Err(Error::Unsupported {
            what: "persistent objects (Windows destroys an object with its last handle)",
        });
    }
    Ok(())
}

fn granularity() -> u64 {
    let mut info = SYSTEM_INFO::default();
    // SAFETY: `info` is a valid, writable SYSTEM_INFO.
    unsafe { GetSystemInfo(&mut info) };
    u64::from(info.dwAllocationGranularity.max(4096))
}

/// A mapped view; unmapped on drop.
#[derive(Debug)]
pub(crate) struct Region {
    base: *mut c_void,
    delta: usize,
    len: usize,
}

// SAFETY: plain memory owned by this handle.
unsafe impl Send for Region {}
// SAFETY: shared references only copy through raw pointers or hand them out.
unsafe impl Sync for Region {}

impl Region {
    fn map(
        handle: HANDLE,
        access: Access,
        offset: u64,
        len: usize,
    ) -> std::result::Result<Region, u32> {
        let gran = granularity();
        let aligned = offset & !(gran - 1);
        let delta = (offset - aligned) as usize;
        let desired = match access {
            Access::Read => FILE_MAP_READ,
            Access::ReadWrite => FILE_MAP_READ | FILE_MAP_WRITE,
            Access::CopyOnWrite => FILE_MAP_COPY,
        };
        // SAFETY: a new view of a section we hold; the kernel picks the address.
        let view = unsafe {
            MapViewOfFile(
                handle,
                desired,
                (aligned >> 32) as u32,
                aligned as u32,
                len + delta,
            )
        };
        if view.Value.is_null() {
            return Err(last_error());
        }
        Ok(Region {
            base: view.Value,
            delta,
            len,
        })
    }

    #[inline]
    pub(crate) fn ptr(&self) -> *mut u8 {
        // SAFETY: `delta` is inside the view.
        unsafe { self.base.cast::<u8>().add(self.delta) }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn flush(&self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: the range is inside the view (checked by the caller).
        let ok = unsafe { FlushViewOfFile(self.ptr().add(offset).cast(), len) };
        if ok == 0 {
            return Err(os_error("flushing a view".into(), last_error()));
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we own the view and unmap it once.
        unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: self.base }) };
    }
}

/// The platform half of a `FileMapping`.
#[derive(Debug)]
pub(crate) struct Mapping {
    handle: Handle,
    name: Option<Name>,
    size: u64,
    access: Access,
    created: bool,
    path: Option<PathBuf>,
}

/// A whole section mapped read-only, to learn its size and read its record.
struct Section {
    whole: Region,
    /// The size of the view: the section's page-rounded size, all that Windows keeps.
    total: u64,
}

impl Section {
    fn map(handle: HANDLE) -> std::result::Result<Section, u32> {
        let whole = Region::map(handle, Access::Read, 0, 0)?;
        let mut info = MEMORY_BASIC_INFORMATION::default();
        // SAFETY: `info` is writable and the address is our live view.
        let n = unsafe {
            VirtualQuery(
                whole.base,
                &mut info,
                std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        if n == 0 {
            return Err(last_error());
        }
        Ok(Section {
            whole,
            total: info.RegionSize as u64,
        })
    }

    /// The record in the last page, if filemap made the section and has finished writing
    /// the record (a half-written one fails its checks). The view is shared, so a later
    /// call sees what the creator has written since.
    fn record(&self) -> Option<Record> {
        if self.total < RECORD_LEN {
            return None;
        }
        let mut buf = [0u8; RECORD_USED];
        // SAFETY: the last page of the region is inside the live view; the copy goes
        // through raw pointers, so no reference to memory another process writes is made.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.whole
                    .base
                    .cast::<u8>()
                    .add((self.total - RECORD_LEN) as usize),
                buf.as_mut_ptr(),
                RECORD_USED,
            )
        };
        Record::decode(&buf, self.total).ok()
    }

    /// The exact size from the record, or else the page-rounded size.
    fn size(&self, record: Option<&Record>) -> u64 {
        record.map_or(self.total, |r| r.size)
    }
}

/// How long an opener waits for the record of a section that has none yet. Thousands of
/// times what a creator needs to write it, yet short enough that opening a section made by
/// another program (the C# sample, say) is not a noticeable stall.
const RECORD_WAIT: Duration = Duration::from_millis(250);

impl Mapping {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        size: u64,
        opts: CreateOptions,
        disposition: Disposition,
    ) -> Result<Mapping> {
        no_persistence(&opts)?;
        let too_large = || Error::InvalidSize {
            what: format!("{size} bytes is too large"),
        };
        let data_len = Record::data_len_for(size).ok_or_else(too_large)?;
        let total = data_len.checked_add(RECORD_LEN).ok_or_else(too_large)?;
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated; INVALID_HANDLE_VALUE asks for a pagefile section.
        let h = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                std::ptr::null(),
                PAGE_READWRITE,
                (total >> 32) as u32,
                total as u32,
                w.as_ptr(),
            )
        };
        let code = last_error();
        if h.is_null() {
            return Err(match object_error(code, name, Kind::Mapping, "creating") {
                Error::NoSpace { name, .. } => Error::NoSpace { name, size },
                e => e,
            });
        }
        let handle = Handle(h);
        let existed = code == ERROR_ALREADY_EXISTS;
        if existed && disposition == Disposition::CreateNew {
            return Err(Error::AlreadyExists {
                name: name.to_string(),
                kind: Kind::Mapping,
            });
        }
        let size = if existed {
            Self::wait_for_record(&handle, name)?
        } else {
            let record = Record {
                kind: Kind::Mapping,
                flags: 0,
                creator_pid: std::process::id(),
                size,
                data_len,
                created_ns: std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                name_len: 0,
            };
            let view = Region::map(handle.0, Access::ReadWrite, data_len, RECORD_LEN as usize)
                .map_err(|c| object_error(c, name, Kind::Mapping, "initialising"))?;
            let bytes = record.encode();
            // SAFETY: the view is RECORD_LEN bytes, writable, and ours.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), view.ptr(), bytes.len()) };
            size
        };
        Ok(Mapping {
            handle,
            name: Some(name.clone()),
            size,
            access: Access::ReadWrite,
            created: !existed,
            path: None,
        })
    }

    /// The creator writes the record right after creating the section (tens of
    /// microseconds); an opener that comes in between waits for it rather than see a
    /// half-made object. A section that another program made has no record: after
    /// [`RECORD_WAIT`] the opener takes its page-rounded size.
    fn wait_for_record(handle: &Handle, name: &Name) -> Result<u64> {
        let section = Section::map(handle.0)
            .map_err(|code| object_error(code, name, Kind::Mapping, "reading"))?;
        let deadline = Instant::now() + RECORD_WAIT;
        loop {
            let record = section.record();
            if record.is_some() || Instant::now() >= deadline {
                return Ok(section.size(record.as_ref()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn open(_: &Namespace, name: &Name, access: Access) -> Result<Mapping> {
        let desired = match access {
            Access::Read => FILE_MAP_READ,
            Access::ReadWrite => FILE_MAP_READ | FILE_MAP_WRITE,
            Access::CopyOnWrite => FILE_MAP_COPY | FILE_MAP_READ,
        };
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenFileMappingW(desired, 0, w.as_ptr()) };
        if h.is_null() {
            let how = if access == Access::ReadWrite {
                "opening for read-write"
            } else {
                "opening"
            };
            return Err(object_error(last_error(), name, Kind::Mapping, how));
        }
        let handle = Handle(h);
        let size = Self::wait_for_record(&handle, name)?;
        Ok(Mapping {
            handle,
            name: Some(name.clone()),
            size,
            access,
            created: false,
            path: None,
        })
    }

    pub(crate) fn from_file(
        file: FileHandle,
        path_hint: Option<&Path>,
        size: u64,
        access: Access,
        opts: CreateOptions,
        name: Option<(&Namespace, &Name)>,
    ) -> Result<Mapping> {
        if name.is_some() {
            no_persistence(&opts)?;
        }
        // The same checks, in the same words, as on Linux: CreateFileMappingW would only
        // say "access denied" for any of them.
        let checks = FileChecks {
            what: match path_hint {
                Some(p) => p.display().to_string(),
                None => "the file".to_owned(),
            },
        };
        if let Some(granted) = granted_access(file.as_raw_handle() as HANDLE) {
            let readable = granted & FILE_READ_DATA != 0;
            checks.open_mode(readable, granted & FILE_WRITE_DATA != 0, access)?;
        }
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("checking {}", checks.what), e))?;
        let size = checks.size(meta.is_file(), meta.len(), size, access)?;
        let protect = match access {
            Access::Read => PAGE_READONLY,
            Access::ReadWrite => PAGE_READWRITE,
            Access::CopyOnWrite => PAGE_WRITECOPY,
        };
        let w = name.map(|(_, n)| wide(n));
        let wname = w.as_ref().map_or(std::ptr::null(), |w| w.as_ptr());
        // SAFETY: the file handle is open for the call; `wname` is null or NUL-terminated.
        let h = unsafe {
            CreateFileMappingW(
                file.as_raw_handle() as HANDLE,
                std::ptr::null(),
                protect,
                (size >> 32) as u32,
                size as u32,
                wname,
            )
        };
        let code = last_error();
        if h.is_null() {
            let shown = name
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| Name::parse("file").expect("valid"));
            return Err(object_error(code, &shown, Kind::Mapping, "mapping"));
        }
        Ok(Mapping {
            handle: Handle(h),
            name: name.map(|(_, n)| n.clone()),
            size,
            access,
            created: code != ERROR_ALREADY_EXISTS,
            path: path_hint.map(Path::to_path_buf),
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
        self.path.as_deref()
    }

    pub(crate) fn name(&self) -> Option<&Name> {
        self.name.as_ref()
    }

    pub(crate) fn map(&self, access: Access, offset: u64, len: usize) -> Result<Region> {
        Region::map(self.handle.0, access, offset, len).map_err(|code| match code {
            ERROR_ACCESS_DENIED => Error::denied(format!("mapping a {access} view")),
            code => os_error(
                format!("mapping a view of {len} bytes at offset {offset}"),
                code,
            ),
        })
    }
}

pub(crate) fn open_for_mapping(path: &Path, access: Access) -> Result<FileHandle> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(access == Access::ReadWrite);
    o.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::InvalidArgument {
            what: format!("no file at {}", path.display()),
        },
        std::io::ErrorKind::PermissionDenied => {
            Error::denied(format!("cannot open {} for {access}", path.display()))
        }
        _ => Error::io(format!("opening {}", path.display()), e),
    })
}

pub(crate) fn dup_file(file: &File) -> Result<FileHandle> {
    file.try_clone()
        .map_err(|e| Error::io("duplicating the file handle", e))
}

pub(crate) fn default_root() -> PathBuf {
    // Windows objects live in the kernel's namespace; there is no root directory.
    PathBuf::new()
}

// ---------------------------------------------------------------------------------------
// Synchronization objects: kernel mutexes, semaphores and events.

/// Milliseconds to wait until `deadline` (`INFINITE` for none), capped below `INFINITE`.
fn millis(deadline: Option<Instant>) -> u32 {
    match deadline {
        None => INFINITE,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
            ms.min(u128::from(INFINITE - 1)) as u32
        }
    }
}

macro_rules! common_methods {
    () => {
        pub(crate) fn name(&self) -> &Name {
            &self.name
        }

        pub(crate) fn created(&self) -> bool {
            self.created
        }

        pub(crate) fn os_path(&self) -> PathBuf {
            PathBuf::from(self.name.to_string())
        }
    };
}

fn created_handle(
    h: HANDLE,
    name: &Name,
    kind: Kind,
    disposition: Disposition,
) -> Result<(Handle, bool)> {
    let code = last_error();
    if h.is_null() {
        return Err(object_error(code, name, kind, "creating"));
    }
    let handle = Handle(h);
    let existed = code == ERROR_ALREADY_EXISTS;
    if existed && disposition == Disposition::CreateNew {
        return Err(Error::AlreadyExists {
            name: name.to_string(),
            kind,
        });
    }
    Ok((handle, !existed))
}

fn opened_handle(h: HANDLE, name: &Name, kind: Kind) -> Result<Handle> {
    if h.is_null() {
        return Err(object_error(last_error(), name, kind, "opening"));
    }
    Ok(Handle(h))
}

#[derive(Debug)]
pub struct Mutex {
    handle: Handle,
    name: Name,
    created: bool,
}

impl Mutex {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
    ) -> Result<Mutex> {
        no_persistence(&opts)?;
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { CreateMutexW(std::ptr::null(), 0, w.as_ptr()) };
        let (handle, created) = created_handle(h, name, Kind::Mutex, disposition)?;
        Ok(Mutex {
            handle,
            name: name.clone(),
            created,
        })
    }

    pub(crate) fn open(_: &Namespace, name: &Name) -> Result<Mutex> {
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenMutexW(MUTEX_ALL_ACCESS, 0, w.as_ptr()) };
        Ok(Mutex {
            handle: opened_handle(h, name, Kind::Mutex)?,
            name: name.clone(),
            created: false,
        })
    }

    common_methods!();

    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked> {
        loop {
            let ms = millis(deadline);
            // SAFETY: a live mutex handle.
            let r = unsafe { WaitForSingleObject(self.handle.0, ms) };
            return match r {
                WAIT_OBJECT_0 => Ok(Locked::Acquired),
                WAIT_ABANDONED_0 => Ok(Locked::Abandoned),
                WAIT_TIMEOUT if deadline.is_some_and(|d| Instant::now() < d) => continue,
                WAIT_TIMEOUT => Ok(Locked::TimedOut),
                _ => Err(os_error(format!("waiting for {}", self.name), last_error())),
            };
        }
    }

    pub(crate) fn release(&self) -> Result<()> {
        // SAFETY: a live mutex handle.
        if unsafe { ReleaseMutex(self.handle.0) } == 0 {
            return Err(match last_error() {
                ERROR_NOT_OWNER => Error::NotOwner {
                    name: self.name.to_string(),
                },
                code => os_error(format!("releasing {}", self.name), code),
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Semaphore {
    handle: Handle,
    name: Name,
    created: bool,
}

/// `NtQuerySemaphore`'s basic information.
#[repr(C)]
struct SemaphoreBasicInformation {
    current: i32,
    maximum: i32,
}

/// `NtQueryMutant`'s basic information.
#[repr(C)]
struct MutantBasicInformation {
    /// 1 when free; 0 or less while owned (minus the recursion depth).
    current_count: i32,
    owned_by_caller: u8,
    abandoned: u8,
}

/// `NtQueryEvent`'s basic information.
#[repr(C)]
struct EventBasicInformation {
    kind: u32,
    state: i32,
}

/// The access rights a handle was opened with, if the kernel tells.
fn granted_access(h: HANDLE) -> Option<u32> {
    basic_information(h).map(|i| i.GrantedAccess)
}

/// What `NtQueryObject` says of any handle.
fn basic_information(h: HANDLE) -> Option<PUBLIC_OBJECT_BASIC_INFORMATION> {
    let mut info = PUBLIC_OBJECT_BASIC_INFORMATION::default();
    // SAFETY: `info` is writable and of the size given; ObjectBasicInformation can be
    // asked of any handle.
    let status = unsafe {
        NtQueryObject(
            h,
            ObjectBasicInformation,
            (&mut info as *mut PUBLIC_OBJECT_BASIC_INFORMATION).cast(),
            std::mem::size_of::<PUBLIC_OBJECT_BASIC_INFORMATION>() as u32,
            std::ptr::null_mut(),
        )
    };
    (status >= 0).then_some(info)
}

// Not in windows-sys: the queries of a mutant's, a semaphore's and an event's state.
#[link(name = "ntdll")]
extern "system" {
    fn NtQuerySemaphore(
        h: HANDLE,
        class: u32,
        info: *mut SemaphoreBasicInformation,
        len: u32,
        ret: *mut u32,
    ) -> i32;
    fn NtQueryMutant(
        h: HANDLE,
        class: u32,
        info: *mut MutantBasicInformation,
        len: u32,
        ret: *mut u32,
    ) -> i32;
    fn NtQueryEvent(
        h: HANDLE,
        class: u32,
        info: *mut EventBasicInformation,
        len: u32,
        ret: *mut u32,
    ) -> i32;
}

/// A semaphore's count and maximum; (0, 0) if the handle lacks SEMAPHORE_QUERY_STATE.
fn query_semaphore(h: HANDLE) -> (u32, u32) {
    let mut info = SemaphoreBasicInformation {
        current: 0,
        maximum: 0,
    };
    // SAFETY: `info` is writable and of the size given; a failure leaves it zeroed.
    let status = unsafe {
        NtQuerySemaphore(
            h,
            0,
            &mut info,
            std::mem::size_of::<SemaphoreBasicInformation>() as u32,
            std::ptr::null_mut(),
        )
    };
    if status < 0 {
        return (0, 0);
    }
    (info.current.max(0) as u32, info.maximum.max(0) as u32)
}

/// An event's type (0: notification, i.e. manual-reset) and state.
fn query_event(h: HANDLE) -> EventBasicInformation {
    let mut info = EventBasicInformation { kind: 0, state: 0 };
    // SAFETY: `info` is writable and of the size given; a failure leaves it zeroed.
    unsafe {
        NtQueryEvent(
            h,
            0,
            &mut info,
            std::mem::size_of::<EventBasicInformation>() as u32,
            std::ptr::null_mut(),
        )
    };
    info
}

impl Semaphore {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        initial: u32,
        max: u32,
    ) -> Result<Semaphore> {
        no_persistence(&opts)?;
        let w = wide(name);
        // Both are at most Semaphore::MAX_COUNT, checked by the caller.
        let (initial, max) = (initial as i32, max as i32);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { CreateSemaphoreW(std::ptr::null(), initial, max, w.as_ptr()) };
        let (handle, created) = created_handle(h, name, Kind::Semaphore, disposition)?;
        Ok(Semaphore {
            handle,
            name: name.clone(),
            created,
        })
    }

    pub(crate) fn open(_: &Namespace, name: &Name) -> Result<Semaphore> {
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenSemaphoreW(SEMAPHORE_ALL_ACCESS, 0, w.as_ptr()) };
        Ok(Semaphore {
            handle: opened_handle(h, name, Kind::Semaphore)?,
            name: name.clone(),
            created: false,
        })
    }

    common_methods!();

    fn query(&self) -> (u32, u32) {
        query_semaphore(self.handle.0)
    }

    pub(crate) fn release(&self, n: u32) -> Result<u32> {
        let mut prev = 0i32;
        // `n` is at most Semaphore::MAX_COUNT, checked by the caller.
        let n_long = n as i32;
        // SAFETY: a live semaphore handle and a writable `prev`.
        if unsafe { ReleaseSemaphore(self.handle.0, n_long, &mut prev) } == 0 {
            let code = last_error();
            let (count, max) = self.query();
            return Err(match code {
                ERROR_TOO_MANY_POSTS => Error::TooManyPosts {
                    name: self.name.to_string(),
                    count,
                    max,
                    release: n,
                },
                code => os_error(format!("releasing {}", self.name), code),
            });
        }
        Ok(prev.max(0) as u32)
    }

    pub(crate) fn count(&self) -> u32 {
        self.query().0
    }

    pub(crate) fn max(&self) -> u32 {
        self.query().1
    }
}

#[derive(Debug)]
pub struct Event {
    handle: Handle,
    name: Name,
    created: bool,
}

impl Event {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        manual_reset: bool,
        initially_set: bool,
    ) -> Result<Event> {
        no_persistence(&opts)?;
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe {
            CreateEventW(
                std::ptr::null(),
                i32::from(manual_reset),
                i32::from(initially_set),
                w.as_ptr(),
            )
        };
        let (handle, created) = created_handle(h, name, Kind::Event, disposition)?;
        Ok(Event {
            handle,
            name: name.clone(),
            created,
        })
    }

    pub(crate) fn open(_: &Namespace, name: &Name) -> Result<Event> {
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenEventW(EVENT_ALL_ACCESS, 0, w.as_ptr()) };
        Ok(Event {
            handle: opened_handle(h, name, Kind::Event)?,
            name: name.clone(),
            created: false,
        })
    }

    common_methods!();

    fn query(&self) -> EventBasicInformation {
        query_event(self.handle.0)
    }

    pub(crate) fn set(&self) -> Result<()> {
        // SAFETY: a live event handle.
        if unsafe { SetEvent(self.handle.0) } == 0 {
            return Err(self.state_error("setting", last_error()));
        }
        Ok(())
    }

    pub(crate) fn reset(&self) -> Result<()> {
        // SAFETY: a live event handle.
        if unsafe { ResetEvent(self.handle.0) } == 0 {
            return Err(self.state_error("resetting", last_error()));
        }
        Ok(())
    }

    fn state_error(&self, doing: &str, code: u32) -> Error {
        match code {
            ERROR_ACCESS_DENIED => Error::denied(format!(
                "{doing} {}: this handle may not change its state",
                self.name
            )),
            code => os_error(format!("{doing} {}", self.name), code),
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.query().state != 0
    }

    pub(crate) fn manual_reset(&self) -> bool {
        // NotificationEvent (0) is manual-reset; SynchronizationEvent (1) is auto-reset.
        self.query().kind == 0
    }
}

/// One of the objects given to `wait_any`.
#[derive(Debug, Clone, Copy)]
pub enum WaitRef<'a> {
    Event(&'a Event),
    Semaphore(&'a Semaphore),
    Mutex(&'a Mutex),
}

/// `WaitForMultipleObjects`: the index of the object taken, and whether it was a mutex
/// whose owner had died (`WAIT_ABANDONED_0 + i`); `None` on timeout.
pub(crate) fn wait_any(
    objects: &[WaitRef<'_>],
    deadline: Option<Instant>,
) -> Result<Option<(usize, bool)>> {
    let handles: Vec<HANDLE> = objects
        .iter()
        .map(|o| match o {
            WaitRef::Event(e) => e.handle.0,
            WaitRef::Semaphore(s) => s.handle.0,
            WaitRef::Mutex(m) => m.handle.0,
        })
        .collect();
    let n = handles.len() as u32;
    loop {
        // SAFETY: live handles, at most MAXIMUM_WAIT_OBJECTS (checked by the caller).
        let r = unsafe { WaitForMultipleObjects(n, handles.as_ptr(), 0, millis(deadline)) };
        if (WAIT_OBJECT_0..WAIT_OBJECT_0 + n).contains(&r) {
            return Ok(Some(((r - WAIT_OBJECT_0) as usize, false)));
        }
        if (WAIT_ABANDONED_0..WAIT_ABANDONED_0 + n).contains(&r) {
            return Ok(Some(((r - WAIT_ABANDONED_0) as usize, true)));
        }
        if r == WAIT_TIMEOUT {
            if deadline.is_some_and(|d| Instant::now() < d) {
                continue;
            }
            return Ok(None);
        }
        return Err(os_error(
            format!("waiting for any of {n} objects"),
            last_error(),
        ));
    }
}

pub(crate) mod admin {
    use super::*;

    fn not_found(name: &Name) -> Error {
        Error::NotFound {
            name: name.to_string(),
            kind: None,
        }
    }

    fn no_listing<T>() -> Result<T> {
        Err(Error::Unsupported {
            what: "listing or removing named objects (Windows cannot list a session's objects)",
        })
    }

    pub(crate) fn init(_: &Path) -> Result<(PathBuf, Vec<String>, Vec<String>)> {
        no_listing()
    }
    pub(crate) fn list(_: &Path) -> Result<(Vec<ObjectInfo>, Vec<crate::Refused>)> {
        no_listing()
    }
    /// What Windows tells of a named object: its kind, a mapping's size (and, for one
    /// that filemap made, its creator and creation time), a synchronization object's
    /// state, and how many handles are open to it.
    pub(crate) fn info(_: &Path, name: &Name) -> Result<ObjectInfo> {
        // The probe that finds the kind also opens the handle to inspect it with.
        let (kind, handle) = probe(name).ok_or_else(|| not_found(name))?;
        let handle = handle.ok_or_else(|| {
            Error::denied(format!(
                "{name} exists, but its security does not allow inspecting it"
            ))
        })?;
        let mut info = ObjectInfo {
            name: name.clone(),
            kind: Some(kind),
            size: None,
            owner_uid: None,
            mode: None,
            live: Some(true),
            persistent: false,
            file_backed: false,
            creator_pid: None,
            created: None,
            holders: Vec::new(),
            handles: basic_information(handle.0).map(|i| i.HandleCount.saturating_sub(1)),
            os_path: None,
            state: None,
        };
        match kind {
            Kind::Mapping => {
                let section = Section::map(handle.0)
                    .map_err(|code| object_error(code, name, kind, "reading"))?;
                let record = section.record();
                info.size = Some(section.size(record.as_ref()));
                if let Some(r) = record {
                    info.file_backed = r.file_backed();
                    info.creator_pid = Some(r.creator_pid);
                    let since_epoch = Duration::from_nanos(r.created_ns);
                    info.created = (r.created_ns != 0).then(|| UNIX_EPOCH + since_epoch);
                }
            }
            Kind::Mutex => {
                let mut m = MutantBasicInformation {
                    current_count: 1,
                    owned_by_caller: 0,
                    abandoned: 0,
                };
                // SAFETY: `m` is writable and of the size given; the handle has
                // MUTANT_QUERY_STATE.
                let status = unsafe {
                    NtQueryMutant(
                        handle.0,
                        0,
                        &mut m,
                        std::mem::size_of::<MutantBasicInformation>() as u32,
                        std::ptr::null_mut(),
                    )
                };
                if status >= 0 {
                    info.state = Some(SyncState::Mutex {
                        owned: m.current_count <= 0,
                        owner_pid: None,
                        abandoned: m.abandoned != 0,
                    });
                }
            }
            Kind::Semaphore => {
                let (count, max) = query_semaphore(handle.0);
                info.state = Some(SyncState::Semaphore { count, max });
            }
            Kind::Event => {
                let e = query_event(handle.0);
                info.state = Some(SyncState::Event {
                    set: e.state != 0,
                    manual_reset: e.kind == 0,
                });
            }
        }
        Ok(info)
    }
    pub(crate) fn kind(_: &Path, name: &Name) -> Result<Kind> {
        kind_holding(name).ok_or_else(|| not_found(name))
    }
    pub(crate) fn remove(_: &Path, _: &Name) -> Result<()> {
        no_listing()
    }
    /// Nothing goes stale on Windows: the kernel destroys an object with its last handle.
    pub(crate) fn gc(_: &Path) -> Result<(Vec<Name>, Vec<crate::Refused>, Vec<crate::Refused>)> {
        Ok((Vec::new(), Vec::new(), Vec::new()))
    }
}

/// No user database here.
pub(crate) fn user_name(_: u32) -> Option<String> {
    None
}
