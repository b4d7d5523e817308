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
//! `unix` is the Linux implementation. `windows` and `unsupported` are stubs that return
//! [`Error::Unsupported`](crate::Error::Unsupported) until the Windows backend lands.

#[cfg(target_os = "linux")]
mod unix;
#[cfg(target_os = "linux")]
pub(crate) use unix::*;

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub(crate) use unsupported::*;
