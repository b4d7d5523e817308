//! Linux: objects are files on tmpfs whose lifetime OFD record locks on the files keep;
//! see `object.rs`.

pub(crate) mod admin;
mod channel;
mod dir;
mod fork;
mod futex;
mod lock;
mod mapping;
mod memory;
mod object;
mod robust;
mod sync;
mod user;

pub(crate) use channel::{Channel, Claim};
pub(crate) use fork::Made;
pub(crate) use mapping::{dup_file, open_for_mapping, Mapping};
pub(crate) use memory::Region;
pub(crate) use sync::{wait_any, Event, Mutex, Semaphore, WaitRef};
pub(crate) use user::name_of as user_name;

/// Where namespaces live unless `FILEMAP_ROOT` says otherwise.
pub(crate) fn default_root() -> std::path::PathBuf {
    "/dev/shm/filemap".into()
}
