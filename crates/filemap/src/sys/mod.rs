//! The platform door: everything that differs between operating systems is behind it.
//!
//! Each backend provides the same items, checked by building for each target (there is no
//! trait):
//!
//! - `Mapping` with `create`, `open`, `from_file`, `size`, `access`, `created`, `os_path`,
//!   `name` and `map`, and `CreateOptions { mode, persistent, sparse }`;
//! - `Region` (one mapped view) with `ptr`, `len` and `flush`, unmapped on drop;
//! - `open_for_mapping(path, access)` and `dup_file(&File)`, giving an `OwnedFd`-like file;
//! - `admin::{list, info, remove, gc}` over a namespace root;
//! - `default_root()`.
//!
//! `unix` is the Linux implementation and `windows` the Windows one (kernel objects).
//! `unsupported` serves every other target and returns
//! [`Error::Unsupported`](crate::Error::Unsupported).

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
mod unix;
#[cfg(target_os = "linux")]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(not(any(target_os = "linux", windows)))]
mod unsupported;
#[cfg(not(any(target_os = "linux", windows)))]
pub(crate) use unsupported::*;
