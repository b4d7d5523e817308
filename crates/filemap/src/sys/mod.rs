//! The platform door: everything that differs between operating systems is behind it.
//!
//! Each backend provides the same items, checked by building for each target (there is no
//! trait):
//!
//! - `Mapping` with `create`, `open`, `from_file`, `size`, `access`, `created`, `os_path`,
//!   `name` and `map`, and `CreateOptions { mode, persistent }`;
//! - `Region` (one mapped view) with `ptr`, `len` and `flush`, unmapped on drop;
//! - `open_for_mapping(path, access)` and `dup_file(&File)`, giving an `OwnedFd`-like file;
//! - `admin::{list, info, remove, gc}` over a namespace root;
//! - `default_root()`.
//!
//! `unix` is the Linux implementation and `windows` the Windows one (kernel objects).
//! `unsupported` serves every other target and returns
//! [`Error::Unsupported`](crate::Error::Unsupported).

use crate::layout::FLAG_PERSISTENT;

/// Options for a new object, from [`Options`](crate::Options).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateOptions {
    /// Unix permission bits; Windows objects get the creator's default security.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) mode: u32,
    pub(crate) persistent: bool,
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
