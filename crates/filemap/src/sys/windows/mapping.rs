//! Sections (`CreateFileMappingW`) and their views.

use std::ffi::c_void;
use std::fs::File;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_READ_DATA, FILE_WRITE_DATA};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, FlushViewOfFile, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile,
    VirtualQuery, FILE_MAP_COPY, FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION,
    MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READONLY, PAGE_READWRITE, PAGE_WRITECOPY,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

use super::object::*;
use crate::layout::{Record, RECORD_LEN, RECORD_USED};
use crate::sys::{CreateOptions, Disposition, FileChecks};
use crate::{Access, Error, Kind, Name, Namespace, Result};
pub(super) fn granularity() -> u64 {
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
    pub(super) fn map(
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
pub(super) struct Section {
    whole: Region,
    /// The size of the view: the section's page-rounded size, all that Windows keeps.
    total: u64,
}

impl Section {
    pub(super) fn map(handle: HANDLE) -> std::result::Result<Section, u32> {
        let whole = Region::map(handle, Access::Read, 0, 0)?;
        let total = view_len(whole.base)?;
        Ok(Section { whole, total })
    }

    /// The record in the last page, if filemap made the section and has finished writing
    /// the record (a half-written one fails its checks). The view is shared, so a later
    /// call sees what the creator has written since.
    pub(super) fn record(&self) -> Option<Record> {
        if self.total < RECORD_LEN {
            return None;
        }
        let last = self
            .whole
            .base
            .cast::<u8>()
            .wrapping_add((self.total - RECORD_LEN) as usize);
        if !all_readable(last, RECORD_USED) {
            return None;
        }
        let mut buf = [0u8; RECORD_USED];
        // SAFETY: the last page of the region is inside the live view, committed and
        // readable (checked above); the copy goes through raw pointers, so no reference to
        // memory another process writes is made.
        unsafe { std::ptr::copy_nonoverlapping(last, buf.as_mut_ptr(), RECORD_USED) };
        Record::decode(&buf, self.total).ok()
    }

    /// The exact size from the record, or else the page-rounded size.
    pub(super) fn size(&self, record: Option<&Record>) -> u64 {
        record.map_or(self.total, |r| r.size)
    }

    /// The first byte of the read-only view, which is [`total`](Self::total) bytes long.
    pub(super) fn ptr(&self) -> *const u8 {
        self.whole.base.cast::<u8>()
    }

    /// The view's length: the section's page-rounded size.
    pub(super) fn total(&self) -> u64 {
        self.total
    }
}

/// The length of the live view that starts at `base`: the sum of its runs of pages alike.
/// `VirtualQuery` describes one run at a time, and a view has several when its pages
/// differ: another program's section made with `SEC_RESERVE` and partly committed (on
/// Windows a commit is the section's, so every view sees it), or pages whose protection
/// was changed. The runs of a view share its `AllocationBase`; the first run past it has
/// another (or is free).
fn view_len(base: *mut c_void) -> std::result::Result<u64, u32> {
    let mut total = 0u64;
    loop {
        let info = match run_at(base.cast::<u8>().wrapping_add(total as usize)) {
            Some(info) => info,
            None if total == 0 => return Err(last_error()),
            None => return Ok(total),
        };
        if info.AllocationBase != base || info.RegionSize == 0 {
            return Ok(total);
        }
        total += info.RegionSize as u64;
    }
}

/// `VirtualQuery` of `addr`: the run of pages alike that holds it (`None` on failure,
/// with the error in `GetLastError`).
fn run_at(addr: *const u8) -> Option<MEMORY_BASIC_INFORMATION> {
    let mut info = MEMORY_BASIC_INFORMATION::default();
    // SAFETY: `info` is writable and of the size given; any address may be asked about.
    let n = unsafe {
        VirtualQuery(
            addr.cast(),
            &mut info,
            std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    (n != 0).then_some(info)
}

/// Whether the `len` bytes at `addr`, in a live view, may all be read: committed, and
/// neither no-access nor guard pages. Another program's section made with `SEC_RESERVE`
/// has pages that are only reserved, and reading one is an access violation. A channel's
/// section, which filemap makes committed, must be; a section that claims to be a channel
/// and is not was made to fault its readers.
pub(super) fn all_readable(addr: *const u8, len: usize) -> bool {
    use windows_sys::Win32::System::Memory::{MEM_COMMIT, PAGE_GUARD, PAGE_NOACCESS};
    let end = addr.wrapping_add(len);
    let mut at = addr;
    while at < end {
        let Some(info) = run_at(at) else {
            return false;
        };
        if info.State != MEM_COMMIT
            || info.Protect & (PAGE_NOACCESS | PAGE_GUARD) != 0
            || info.RegionSize == 0
        {
            return false;
        }
        // The run of pages alike that starts at `BaseAddress` ends here.
        at = info.BaseAddress.cast::<u8>().wrapping_add(info.RegionSize);
    }
    true
}

/// How long an opener waits for the record of a section that has none yet. Thousands of
/// times what a creator needs to write it, yet short enough that opening a section made by
/// another program (the C# sample, say) is not a noticeable stall.
pub(super) const RECORD_WAIT: Duration = Duration::from_millis(250);

/// The size and record of the section `h`, waiting up to [`RECORD_WAIT`] for a creator to
/// write its record.
pub(super) fn wait_for_record(h: HANDLE, name: &Name, kind: Kind) -> Result<(u64, Option<Record>)> {
    let section = Section::map(h).map_err(|code| object_error(code, name, kind, "reading"))?;
    let deadline = Instant::now() + RECORD_WAIT;
    loop {
        let record = section.record();
        if record.is_some() || Instant::now() >= deadline {
            return Ok((section.size(record.as_ref()), record));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A pagefile section for an object of `kind` with `size` bytes before filemap's record:
/// a new one (`existed` false: the caller initialises it, record last), or the one that
/// already holds the name. With [`Disposition::CreateNew`] an existing one is an error:
/// `AlreadyExists` for the same kind, `KindMismatch` for another (a section that another
/// program made counts as a mapping).
pub(super) fn create_section(
    name: &Name,
    kind: Kind,
    size: u64,
    disposition: Disposition,
) -> Result<(Handle, bool)> {
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
        return Err(match object_error(code, name, kind, "creating") {
            Error::NoSpace { name, .. } => Error::NoSpace { name, size },
            e => e,
        });
    }
    let handle = Handle(h);
    let existed = code == ERROR_ALREADY_EXISTS;
    if existed && disposition == Disposition::CreateNew {
        let found = super::object::section_kind(handle.0).unwrap_or(Kind::Mapping);
        return Err(if found == kind {
            Error::AlreadyExists {
                name: name.to_string(),
                kind,
            }
        } else {
            Error::KindMismatch {
                name: name.to_string(),
                expected: kind,
                found,
            }
        });
    }
    Ok((handle, existed))
}

/// Writes the record of a new object of `kind` and `size` bytes into its section: the
/// last step of making it, which tells openers that it is ready.
pub(super) fn write_record(h: HANDLE, name: &Name, kind: Kind, size: u64) -> Result<()> {
    // `create_section` made a section this large, so the size was checked there.
    let data_len = Record::data_len_for(size).unwrap_or(0);
    let record = Record {
        kind,
        flags: 0,
        creator_pid: std::process::id(),
        size,
        data_len,
        created_ns: std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        name_len: 0,
    };
    let view = Region::map(h, Access::ReadWrite, data_len, RECORD_LEN as usize)
        .map_err(|c| object_error(c, name, kind, "initialising"))?;
    let bytes = record.encode();
    // SAFETY: the view is RECORD_LEN bytes, writable, and ours.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), view.ptr(), bytes.len()) };
    Ok(())
}

impl Mapping {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        size: u64,
        opts: CreateOptions,
        disposition: Disposition,
    ) -> Result<Mapping> {
        no_persistence(&opts)?;
        let (handle, existed) = create_section(name, Kind::Mapping, size, disposition)?;
        let size = if existed {
            Self::wait_for_record(&handle, name)?
        } else {
            write_record(handle.0, name, Kind::Mapping, size)?;
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
        let (size, record) = wait_for_record(handle.0, name, Kind::Mapping)?;
        match record {
            // A channel is a section too; as a mapping, it is another kind.
            Some(r) if r.kind != Kind::Mapping => Err(Error::KindMismatch {
                name: name.to_string(),
                expected: Kind::Mapping,
                found: r.kind,
            }),
            _ => Ok(size),
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

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Memory::{
        VirtualAlloc, VirtualProtect, MEM_COMMIT, SEC_RESERVE,
    };

    /// A pagefile section of `len` bytes, unnamed, with `flags` added to `PAGE_READWRITE`.
    fn section(len: u32, flags: u32) -> HANDLE {
        // SAFETY: a new unnamed pagefile-backed section.
        let h = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                std::ptr::null(),
                PAGE_READWRITE | flags,
                0,
                len,
                std::ptr::null(),
            )
        };
        assert!(!h.is_null(), "{}", std::io::Error::last_os_error());
        h
    }

    /// A view whose pages differ is as long as all its runs, not its first.
    #[test]
    fn a_view_with_several_runs_of_pages_has_its_whole_length() {
        // Committed, with the first 64 KiB made read-only: two runs.
        let h = section(1 << 20, 0);
        let view = Region::map(h, Access::ReadWrite, 0, 0).unwrap();
        let mut old = 0;
        // SAFETY: the first 64 KiB of our live view.
        let ok = unsafe { VirtualProtect(view.base, 1 << 16, PAGE_READONLY, &mut old) };
        assert_ne!(ok, 0, "{}", std::io::Error::last_os_error());
        assert_eq!(view_len(view.base), Ok(1 << 20));
        drop(view);
        // SAFETY: our handle, closed once.
        unsafe { CloseHandle(h) };

        // Reserved, with the first 64 KiB committed: two runs, as another program's
        // `SEC_RESERVE` section shows to every view on Windows once it commits some.
        let h = section(1 << 20, SEC_RESERVE);
        let view = Region::map(h, Access::ReadWrite, 0, 0).unwrap();
        // SAFETY: the first 64 KiB of our live view of a reserved section.
        let p = unsafe { VirtualAlloc(view.base, 1 << 16, MEM_COMMIT, PAGE_READWRITE) };
        assert!(!p.is_null(), "{}", std::io::Error::last_os_error());
        assert_eq!(view_len(view.base), Ok(1 << 20));
        let whole = Section::map(h).unwrap();
        assert_eq!(whole.total(), 1 << 20);
        drop((view, whole));
        // SAFETY: as above.
        unsafe { CloseHandle(h) };
    }
}
