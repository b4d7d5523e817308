//! The platform door: everything that differs between operating systems is behind it.
//!
//! Each backend provides the same items, checked by building for each target (there is no
//! trait; `unsupported.rs` is the shortest complete list). The shared types here
//! (`CreateOptions`, `Disposition`, `Locked`, `FileChecks`) are what the portable layer
//! hands in and gets back.
//!
//! - **Mappings.** `Mapping` with `create(ns, name, size, CreateOptions, Disposition)`,
//!   `open(ns, name, access)`, `from_file(file, path_hint, size, access, CreateOptions,
//!   Option<(ns, name)>)`, `size`, `access`, `created`, `os_path`, `name` and
//!   `map(access, offset, len) -> Region`. Dropping the last `Mapping` closes the handle
//!   and, as on Windows, the name with it if it was the last handle anywhere, while views
//!   keep the memory.
//! - **Views.** `Region` (one mapped view) with `ptr`, `len` and `flush(offset, len)`,
//!   unmapped on drop. It must not keep the name alive (see `linux/mapping.rs`).
//! - **Files.** `FileHandle` (an `OwnedFd`-like open file), from
//!   `open_for_mapping(path, access)` and `dup_file(&File)`.
//! - **Synchronization objects.** `Mutex`, `Semaphore` and `Event`, each with
//!   `create(ns, name, CreateOptions, Disposition, ...)`, `open(ns, name)`, `name`,
//!   `created` and `os_path`; `Mutex::{lock(deadline) -> Locked, release}`;
//!   `Semaphore::{release(n), count, max}` (counts up to `Semaphore::MAX_COUNT`, checked
//!   by the caller); `Event::{set, reset, is_set, manual_reset}`.
//! - **Waiting.** `WaitRef` (one object to wait for) and
//!   `wait_any(&[WaitRef], deadline) -> Option<(index, abandoned)>`, `None` on timeout.
//! - **Channels.** `Channel` with `create(ns, name, CreateOptions, Disposition, Geometry)`,
//!   `open(ns, name)`, `name`, `created`, `os_path`, `geometry`, `ring()`, `slots()`,
//!   `clients()` and `control()`/`area()` (the control page and ring or slots of
//!   `channel/`, mapped shared), `claim(role) -> Claim` and `claim_any(roles)` (play a
//!   role; `Error::Busy` while someone lives in it; `Claim::inherited()` tells a copy that a
//!   forked child inherited, whose endpoint then leaves the channel alone when it goes) and
//!   `role_alive(Role)`, `parker()` (the `Parker` its sides sleep on: futexes on Linux,
//!   named semaphores on Windows). `no_channels.rs` serves targets without a backend.
//! - **Administration.** `admin::{init, list, info, holders, kind, remove, gc}` over a namespace
//!   root, `default_root()`, and `user_name(uid)`.
//!
//! `linux` is the Linux implementation and `windows` the Windows one (kernel objects), each
//! split by kind. On Linux the modules form layers, each using only those below it:
//! `dir`, `lock`, `futex`, `fork`, `memory` and `user` at the bottom; `object` (the entry protocol
//! that gives every kind its name, lifetime and permissions) above them; `mapping`,
//! `robust` and `sync` above that; `admin` on top. On Windows, `object` (handles, names, the
//! kernel's errors) is the bottom, with `mapping` and `sync` above it and `admin` on top.
//! `unsupported` serves every other target and returns
//! [`Error::Unsupported`].

use crate::layout::FLAG_PERSISTENT;
use crate::{Access, Error, Result};

/// Options for a new object, from [`Options`](crate::Options).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateOptions {
    /// Unix permission bits; Windows objects get the creator's default security.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) mode: u32,
    pub(crate) persistent: bool,
    /// Leave a new mapping's storage unreserved (Linux; Windows commits lazily anyway).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) sparse: bool,
}

impl CreateOptions {
    /// The flags of the object record.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn record_flags(&self) -> u32 {
        if self.persistent {
            FLAG_PERSISTENT
        } else {
            0
        }
    }
}

/// Whether an existing live object may be opened instead of creating one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    CreateNew,
    OpenOrCreate,
}

/// How a lock attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
pub(crate) enum Locked {
    Acquired,
    Abandoned,
    TimedOut,
}

/// What both backends check before mapping a file, in the same words on every platform.
/// `what` names the file (its path, or "the file").
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
pub(crate) struct FileChecks {
    pub(crate) what: String,
}

#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
impl FileChecks {
    /// The file's open mode against the access asked for.
    pub(crate) fn open_mode(&self, readable: bool, writable: bool, access: Access) -> Result<()> {
        if !readable {
            return Err(Error::denied(format!(
                "{} is open write-only; a mapping needs read access",
                self.what
            )));
        }
        if access == Access::ReadWrite && !writable {
            return Err(Error::denied(format!(
                "{} is not open for writing, so it cannot be mapped read-write",
                self.what
            )));
        }
        Ok(())
    }

    /// The size to map: `size`, or the file's length `len` for 0. Mapping past the end
    /// grows the file, which needs read-write access.
    pub(crate) fn size(&self, regular: bool, len: u64, size: u64, access: Access) -> Result<u64> {
        if !regular {
            return Err(Error::InvalidArgument {
                what: format!("{} is not a regular file", self.what),
            });
        }
        let size = if size == 0 { len } else { size };
        if size == 0 {
            return Err(Error::InvalidSize {
                what: format!("{} is empty; give a size to grow it", self.what),
            });
        }
        if size > len && access != Access::ReadWrite {
            return Err(Error::denied(format!(
                "{} is {len} bytes; growing it to {size} needs read-write access",
                self.what
            )));
        }
        Ok(size)
    }
}

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(not(any(target_os = "linux", windows)))]
mod no_channels;
#[cfg(not(any(target_os = "linux", windows)))]
pub(crate) use no_channels::*;

#[cfg(not(any(target_os = "linux", windows)))]
mod unsupported;
#[cfg(not(any(target_os = "linux", windows)))]
pub(crate) use unsupported::*;
