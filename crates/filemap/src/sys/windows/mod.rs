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

pub(crate) mod admin;
mod channel;
mod mapping;
mod object;
mod sync;

pub(crate) use channel::{Channel, Claim, Made};
pub(crate) use mapping::{dup_file, open_for_mapping, Mapping, Region};
pub(crate) use sync::{wait_any, Event, Mutex, Semaphore, WaitRef};

pub(crate) fn default_root() -> std::path::PathBuf {
    // Windows objects live in the kernel's namespace; there is no root directory.
    std::path::PathBuf::new()
}

/// No user database here.
pub(crate) fn user_name(_: u32) -> Option<String> {
    None
}
