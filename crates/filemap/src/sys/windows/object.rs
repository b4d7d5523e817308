//! Kernel handles, object names and the errors the kernel reports for them.

use std::collections::HashMap;
use std::fs::File;

use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectBasicInformation};
use windows_sys::Wdk::System::SystemServices::{EVENT_QUERY_STATE, SEMAPHORE_QUERY_STATE};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_COMMITMENT_LIMIT,
    ERROR_DISK_FULL, ERROR_FILENAME_EXCED_RANGE, ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE,
    ERROR_NOT_ENOUGH_MEMORY, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::SYNCHRONIZE;
use windows_sys::Win32::System::Memory::{OpenFileMappingW, FILE_MAP_READ};
use windows_sys::Win32::System::SystemServices::MUTANT_QUERY_STATE;
use windows_sys::Win32::System::Threading::{OpenEventW, OpenMutexW, OpenSemaphoreW};
use windows_sys::Win32::System::WindowsProgramming::PUBLIC_OBJECT_BASIC_INFORMATION;

use crate::sys::{CreateOptions, Disposition};
use crate::{Error, Kind, Name, Result};

/// The file a file-backed mapping is made from.
pub(crate) type FileHandle = File;

/// An owned kernel handle.
#[derive(Debug)]
pub(super) struct Handle(pub(super) HANDLE);

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

/// The kernel's name for `name`, NUL-terminated: exactly the name, control characters
/// and all (`Display` escapes them, for printing).
pub(super) fn wide(name: &Name) -> Vec<u16> {
    name.full()
        .encode_utf16()
        .chain(std::iter::once(0))
        .collect()
}

pub(super) fn last_error() -> u32 {
    // SAFETY: reads this thread's last-error value.
    unsafe { GetLastError() }
}

pub(super) fn os_error(context: String, code: u32) -> Error {
    Error::io(context, std::io::Error::from_raw_os_error(code as i32))
}

/// Opens `w` as an object of `kind`, with no more rights than reading or querying it
/// takes (null on failure).
pub(super) fn open_as(kind: Kind, w: &[u16]) -> HANDLE {
    // SAFETY: `w` is a NUL-terminated UTF-16 string that outlives the call.
    unsafe {
        match kind {
            Kind::Mapping => OpenFileMappingW(FILE_MAP_READ, 0, w.as_ptr()),
            Kind::Event => OpenEventW(SYNCHRONIZE | EVENT_QUERY_STATE, 0, w.as_ptr()),
            Kind::Mutex => OpenMutexW(SYNCHRONIZE | MUTANT_QUERY_STATE, 0, w.as_ptr()),
            Kind::Semaphore => OpenSemaphoreW(SYNCHRONIZE | SEMAPHORE_QUERY_STATE, 0, w.as_ptr()),
            // A channel is a section whose record names its kind (see `probe`).
            Kind::Stream | Kind::Broadcast | Kind::Latest | Kind::RequestReply => {
                OpenFileMappingW(FILE_MAP_READ, 0, w.as_ptr())
            }
        }
    }
}

/// Which kind holds `name`, found by opening it as each kind in turn, with the handle
/// that the probe opened; `None` for the handle when the kind is known only from an
/// access-denied error.
pub(super) fn probe(name: &Name) -> Option<(Kind, Option<Handle>)> {
    let w = wide(name);
    for kind in [Kind::Mapping, Kind::Event, Kind::Mutex, Kind::Semaphore] {
        let h = open_as(kind, &w);
        if !h.is_null() {
            // A section made by filemap says in its record what it is: a channel is a
            // section too.
            let kind = match kind {
                Kind::Mapping => section_kind(h).unwrap_or(Kind::Mapping),
                k => k,
            };
            return Some((kind, Some(Handle(h))));
        }
        if last_error() == ERROR_ACCESS_DENIED {
            return Some((kind, None));
        }
    }
    None
}

/// The kind in the record of the section `h` (opened with at least FILE_MAP_READ), if
/// filemap made it and has written the record.
pub(super) fn section_kind(h: HANDLE) -> Option<Kind> {
    super::mapping::Section::map(h)
        .ok()?
        .record()
        .map(|r| r.kind)
}

/// Which kind holds `name`.
pub(super) fn kind_holding(name: &Name) -> Option<Kind> {
    probe(name).map(|(kind, _)| kind)
}

/// Maps a failed create or open to the error that Linux would give.
pub(super) fn object_error(code: u32, name: &Name, kind: Kind, doing: &str) -> Error {
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

pub(super) fn no_persistence(opts: &CreateOptions) -> Result<()> {
    if opts.persistent {
        return Err(Error::Unsupported {
            what: "persistent objects (Windows destroys an object with its last handle)",
        });
    }
    Ok(())
}

pub(super) fn created_handle(
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

pub(super) fn opened_handle(h: HANDLE, name: &Name, kind: Kind) -> Result<Handle> {
    if h.is_null() {
        return Err(object_error(last_error(), name, kind, "opening"));
    }
    Ok(Handle(h))
}

/// The access rights a handle was opened with, if the kernel tells.
pub(super) fn granted_access(h: HANDLE) -> Option<u32> {
    basic_information(h).map(|i| i.GrantedAccess)
}

/// What `NtQueryObject` says of any handle.
pub(super) fn basic_information(h: HANDLE) -> Option<PUBLIC_OBJECT_BASIC_INFORMATION> {
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

/// The object directory that holds this session's `Local\` names
/// (`\Sessions\N\BaseNamedObjects`, or `\BaseNamedObjects` itself in session 0), and the
/// one that holds `Global\` names; `None` for the second in session 0, where they are the
/// same.
pub(super) fn named_object_directories() -> (String, Option<String>) {
    use windows_sys::Win32::System::RemoteDesktop::ProcessIdToSessionId;
    use windows_sys::Win32::System::Threading::GetCurrentProcessId;
    let mut session = 0u32;
    // SAFETY: `session` is writable; our own process id.
    let ok = unsafe { ProcessIdToSessionId(GetCurrentProcessId(), &mut session) };
    if ok == 0 || session == 0 {
        return (GLOBAL_DIRECTORY.to_owned(), None);
    }
    (
        format!("\\Sessions\\{session}\\BaseNamedObjects"),
        Some(GLOBAL_DIRECTORY.to_owned()),
    )
}

const GLOBAL_DIRECTORY: &str = "\\BaseNamedObjects";

/// The entries of the kernel's object directory `path`: each one's name and type name
/// ("Section", "Event", "Mutant", "Semaphore", "SymbolicLink", ...), as UTF-16, in the
/// kernel's order.
pub(super) fn directory_entries(path: &str) -> std::io::Result<Vec<(Vec<u16>, Vec<u16>)>> {
    use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
    use windows_sys::Wdk::Storage::FileSystem::{NtOpenDirectoryObject, NtQueryDirectoryObject};
    use windows_sys::Wdk::System::SystemServices::DIRECTORY_QUERY;
    use windows_sys::Win32::Foundation::{
        RtlNtStatusToDosError, NTSTATUS, OBJ_CASE_INSENSITIVE, STATUS_NO_MORE_ENTRIES,
        UNICODE_STRING,
    };
    fn failed(status: NTSTATUS) -> std::io::Error {
        // SAFETY: a pure translation of a status code.
        std::io::Error::from_raw_os_error(unsafe { RtlNtStatusToDosError(status) } as i32)
    }
    /// `OBJECT_DIRECTORY_INFORMATION` (`winternl.h`): the entry's strings point into the
    /// same buffer.
    #[repr(C)]
    struct Entry {
        name: UNICODE_STRING,
        type_name: UNICODE_STRING,
    }
    let mut w: Vec<u16> = path.encode_utf16().collect();
    let bytes = (w.len() * 2) as u16;
    let us = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: w.as_mut_ptr(),
    };
    let attributes = OBJECT_ATTRIBUTES {
        Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: std::ptr::null_mut(),
        ObjectName: &us,
        Attributes: OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: std::ptr::null(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let mut dir = std::ptr::null_mut();
    // SAFETY: `attributes` and the string it points to live across the call; `dir` is
    // writable.
    let status = unsafe { NtOpenDirectoryObject(&mut dir, DIRECTORY_QUERY, &attributes) };
    if status < 0 {
        return Err(failed(status));
    }
    let dir = Handle(dir);
    // Room for one entry with the longest name (32,767 UTF-16 units) and its type, in
    // words so that the entry at its start is aligned.
    let mut buf = vec![0u64; 9000];
    let len = (buf.len() * 8) as u32;
    let (mut context, mut out, mut first) = (0u32, Vec::new(), true);
    loop {
        let mut got = 0u32;
        // SAFETY: `buf` is writable for `len` bytes; `context` and `got` are writable.
        let status = unsafe {
            NtQueryDirectoryObject(
                dir.0,
                buf.as_mut_ptr().cast(),
                len,
                true,
                std::mem::take(&mut first),
                &mut context,
                &mut got,
            )
        };
        if status == STATUS_NO_MORE_ENTRIES {
            return Ok(out);
        }
        if status < 0 {
            return Err(failed(status));
        }
        // SAFETY: the kernel wrote an entry at the start of `buf`, which is aligned for it.
        let entry = unsafe { &*buf.as_ptr().cast::<Entry>() };
        if let (Some(name), Some(kind)) =
            (text_in(&buf, &entry.name), text_in(&buf, &entry.type_name))
        {
            out.push((name, kind));
        }
    }
}

/// The text of `s`, a string that the kernel wrote into `buf` along with `s` itself;
/// `None` unless it lies inside `buf` (it is checked before it is read).
fn text_in(buf: &[u64], s: &windows_sys::Win32::Foundation::UNICODE_STRING) -> Option<Vec<u16>> {
    let start = buf.as_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let (at, n) = (s.Buffer as usize, usize::from(s.Length) / 2);
    if n == 0 {
        return Some(Vec::new());
    }
    (at >= start && at % 2 == 0 && at + n * 2 <= end).then(|| {
        // SAFETY: `n` units at `at`, inside `buf`, which the kernel wrote.
        unsafe { std::slice::from_raw_parts(at as *const u16, n) }.to_vec()
    })
}

/// One entry of `SYSTEM_HANDLE_INFORMATION_EX` (`NtQuerySystemInformation` class 64):
/// a handle open in some process.
#[repr(C)]
#[derive(Clone, Copy)]
struct HandleEntry {
    /// The object's kernel address: zero unless the caller may see it (Windows 11 24H2
    /// hides it from all but debuggers; Wine never gives it). Not used.
    _object: usize,
    pid: usize,
    value: usize,
    _access: u32,
    _backtrace: u16,
    type_index: u16,
    _attributes: u32,
    _reserved: u32,
}

/// Every handle open in the system, if the kernel tells.
fn handle_table() -> Option<Vec<HandleEntry>> {
    use windows_sys::Wdk::System::SystemInformation::NtQuerySystemInformation;
    const SYSTEM_EXTENDED_HANDLE_INFORMATION: i32 = 64;
    const STATUS_INFO_LENGTH_MISMATCH: i32 = 0xC000_0004_u32 as i32;
    /// The count and a reserved word come before the entries.
    const HEADER: usize = 16;
    let mut bytes = 1usize << 20;
    // The table grows between calls while processes open handles: try a few times, each
    // with room for what the kernel asked for, and more.
    for _ in 0..8 {
        let mut buf = vec![0u64; bytes / 8];
        let len = u32::try_from(bytes).ok()?;
        let mut needed = 0u32;
        // SAFETY: `buf` is writable for `len` bytes; `needed` is writable.
        let status = unsafe {
            NtQuerySystemInformation(
                SYSTEM_EXTENDED_HANDLE_INFORMATION,
                buf.as_mut_ptr().cast(),
                len,
                &mut needed,
            )
        };
        if status == STATUS_INFO_LENGTH_MISMATCH {
            bytes = (needed as usize).max(bytes) * 2;
            continue;
        }
        if status < 0 {
            return None;
        }
        let room = (bytes - HEADER) / std::mem::size_of::<HandleEntry>();
        let count = (buf[0] as usize).min(room);
        // SAFETY: the kernel wrote `count` entries after the header, inside `buf` (at most
        // `room` fit), and `buf` is aligned for them.
        let entries = unsafe {
            std::slice::from_raw_parts(buf.as_ptr().add(HEADER / 8).cast::<HandleEntry>(), count)
        };
        return Some(entries.to_vec());
    }
    None
}

/// The processes that hold a handle to the object that `ours` is a handle to, sorted;
/// `ours` does not count.
///
/// Windows has no call for this. The system's handle table gives each handle's process
/// and object type, but not (any more) which object. So each handle of that type in this
/// process is compared with `ours` (`CompareObjectHandles`), and each one in another
/// process that we may open with `PROCESS_DUP_HANDLE` is duplicated into this process
/// with no access rights, compared, and closed at once. The duplicates are handles: while
/// one lives (microseconds) it keeps its object, and that object's name, alive, as any
/// program's handle would. This is why only an explicit call does it
/// (`Namespace::holders`), never `info` or `list`. Processes that we may not open (other
/// users', elevated, protected) are not seen.
pub(super) fn holders(ours: HANDLE) -> Vec<u32> {
    use windows_sys::Win32::Foundation::{CompareObjectHandles, DuplicateHandle};
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetCurrentProcessId, OpenProcess, PROCESS_DUP_HANDLE,
    };
    let Some(table) = handle_table() else {
        return Vec::new();
    };
    // SAFETY: plain queries of this process.
    let (me, this) = unsafe { (GetCurrentProcessId() as usize, GetCurrentProcess()) };
    let Some(kind) = table
        .iter()
        .find(|e| e.pid == me && e.value == ours as usize)
        .map(|e| e.type_index)
    else {
        return Vec::new();
    };
    let mut processes: HashMap<usize, Option<Handle>> = HashMap::new();
    let mut pids = Vec::new();
    for e in table.iter().filter(|e| e.type_index == kind) {
        if e.pid == me {
            // Our own handles are compared in place: no new handle. A value closed (or
            // reused) since the snapshot compares unequal, or equal only if it is one to
            // the same object.
            let same = e.value != ours as usize
                // SAFETY: two handle values of this process; the call only compares them.
                && unsafe { CompareObjectHandles(e.value as HANDLE, ours) } != 0;
            if same {
                pids.push(me as u32);
            }
            continue;
        }
        let process = processes.entry(e.pid).or_insert_with(|| {
            let pid = u32::try_from(e.pid).ok()?;
            // SAFETY: a plain call with a process id.
            let h = unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, pid) };
            (!h.is_null()).then_some(Handle(h))
        });
        let Some(process) = process else { continue };
        let mut dup = std::ptr::null_mut();
        // SAFETY: a live process handle; the value is only looked up in it (one closed
        // since the snapshot fails, or names another object, which compares unequal);
        // `dup` is writable. No access rights are asked for: the duplicate is only
        // compared, then closed.
        let ok = unsafe { DuplicateHandle(process.0, e.value as HANDLE, this, &mut dup, 0, 0, 0) };
        if ok == 0 {
            continue;
        }
        let dup = Handle(dup);
        // SAFETY: two live handles of this process.
        if unsafe { CompareObjectHandles(dup.0, ours) } != 0 {
            pids.push(e.pid as u32);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}
