//! Platforms without a backend yet: every operation returns `Error::Unsupported`.
//!
//! The types are uninhabited (memmap2's `stub.rs` pattern), so the methods that would need
//! a live object have no bodies to write.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{CreateOptions, Disposition, Locked};
use crate::{Access, Error, Name, Namespace, ObjectInfo, Result};

#[derive(Debug, Clone, Copy)]
enum Never {}

fn unsupported<T>() -> Result<T> {
    Err(Error::Unsupported {
        what: "named file mappings",
    })
}

/// Stands for an open file.
#[derive(Debug)]
pub(crate) struct FileHandle(Never);

#[derive(Debug)]
pub(crate) struct Mapping(Never);

#[derive(Debug)]
pub(crate) struct Region(Never);

// Like the real backends' regions (unmapped on drop), so that `View` drops the same way.
impl Drop for Region {
    fn drop(&mut self) {
        match self.0 {}
    }
}

impl Mapping {
    pub(crate) fn create(
        _: &Namespace,
        _: &Name,
        _: u64,
        _: CreateOptions,
        _: Disposition,
    ) -> Result<Mapping> {
        unsupported()
    }
    pub(crate) fn open(_: &Namespace, _: &Name, _: Access) -> Result<Mapping> {
        unsupported()
    }
    pub(crate) fn from_file(
        file: FileHandle,
        _: Option<&Path>,
        _: u64,
        _: Access,
        _: CreateOptions,
        _: Option<(&Namespace, &Name)>,
    ) -> Result<Mapping> {
        match file.0 {}
    }
    pub(crate) fn size(&self) -> u64 {
        match self.0 {}
    }
    pub(crate) fn access(&self) -> Access {
        match self.0 {}
    }
    pub(crate) fn created(&self) -> bool {
        match self.0 {}
    }
    pub(crate) fn os_path(&self) -> Option<&Path> {
        match self.0 {}
    }
    pub(crate) fn name(&self) -> Option<&Name> {
        match self.0 {}
    }
    pub(crate) fn reopen(&self, _: Access) -> Result<rustix::fd::OwnedFd> {
        match self.0 {}
    }
    pub(crate) fn dup_fd(&self) -> Result<rustix::fd::OwnedFd> {
        match self.0 {}
    }
    pub(crate) fn map(&self, _: Access, _: u64, _: usize) -> Result<Region> {
        match self.0 {}
    }
}

impl Region {
    pub(crate) fn ptr(&self) -> *mut u8 {
        match self.0 {}
    }
    pub(crate) fn len(&self) -> usize {
        match self.0 {}
    }
    pub(crate) fn flush(&self, _: usize, _: usize) -> Result<()> {
        match self.0 {}
    }
}

pub(crate) fn open_for_mapping(_: &Path, _: Access) -> Result<FileHandle> {
    unsupported()
}

pub(crate) fn dup_file(_: &File) -> Result<FileHandle> {
    unsupported()
}

pub(crate) fn default_root() -> PathBuf {
    std::env::temp_dir().join("filemap")
}

pub(crate) mod admin {
    use super::*;

    pub(crate) fn init(_: &Path) -> Result<(PathBuf, Vec<String>, Vec<String>)> {
        unsupported()
    }
    pub(crate) fn list(_: &Path) -> Result<(Vec<ObjectInfo>, Vec<crate::Refused>)> {
        unsupported()
    }
    pub(crate) fn info(_: &Path, _: &Name) -> Result<ObjectInfo> {
        unsupported()
    }
    pub(crate) fn kind(_: &Path, _: &Name) -> Result<crate::Kind> {
        unsupported()
    }
    pub(crate) fn holders(_: &Path, _: &Name) -> Result<Vec<u32>> {
        unsupported()
    }
    pub(crate) fn remove(_: &Path, _: &Name) -> Result<()> {
        unsupported()
    }
    pub(crate) fn gc(_: &Path) -> Result<(Vec<Name>, Vec<crate::Refused>, Vec<crate::Refused>)> {
        unsupported()
    }
}

macro_rules! stub_object {
    ($t:ident) => {
        #[derive(Debug)]
        pub struct $t(Never);

        impl $t {
            pub(crate) fn open(_: &Namespace, _: &Name) -> Result<$t> {
                Err(Error::Unsupported {
                    what: "named synchronization objects",
                })
            }
            pub(crate) fn name(&self) -> &Name {
                match self.0 {}
            }
            pub(crate) fn created(&self) -> bool {
                match self.0 {}
            }
            pub(crate) fn os_path(&self) -> PathBuf {
                match self.0 {}
            }
        }
    };
}

stub_object!(Mutex);
stub_object!(Semaphore);
stub_object!(Event);

fn sync_unsupported<T>() -> Result<T> {
    Err(Error::Unsupported {
        what: "named synchronization objects",
    })
}

impl Mutex {
    pub(crate) fn create(
        _: &Namespace,
        _: &Name,
        _: CreateOptions,
        _: Disposition,
    ) -> Result<Mutex> {
        sync_unsupported()
    }
    pub(crate) fn lock(&self, _: Option<std::time::Instant>) -> Result<Locked> {
        match self.0 {}
    }
    pub(crate) fn release(&self) -> Result<()> {
        match self.0 {}
    }
}

impl Semaphore {
    pub(crate) fn create(
        _: &Namespace,
        _: &Name,
        _: CreateOptions,
        _: Disposition,
        _: u32,
        _: u32,
    ) -> Result<Semaphore> {
        sync_unsupported()
    }
    pub(crate) fn release(&self, _: u32) -> Result<u32> {
        match self.0 {}
    }
    pub(crate) fn count(&self) -> u32 {
        match self.0 {}
    }
    pub(crate) fn max(&self) -> u32 {
        match self.0 {}
    }
}

impl Event {
    pub(crate) fn create(
        _: &Namespace,
        _: &Name,
        _: CreateOptions,
        _: Disposition,
        _: bool,
        _: bool,
    ) -> Result<Event> {
        sync_unsupported()
    }
    pub(crate) fn set(&self) -> Result<()> {
        match self.0 {}
    }
    pub(crate) fn reset(&self) -> Result<()> {
        match self.0 {}
    }
    pub(crate) fn is_set(&self) -> bool {
        match self.0 {}
    }
    pub(crate) fn manual_reset(&self) -> bool {
        match self.0 {}
    }
}

/// One of the objects given to `wait_any`.
#[derive(Debug, Clone, Copy)]
pub enum WaitRef<'a> {
    Event(&'a Event),
    Semaphore(&'a Semaphore),
    Mutex(&'a Mutex),
    Channel(crate::channel::Readiness<'a>),
}

pub(crate) fn wait_any(
    objects: &[&dyn crate::Waitable],
    _: Option<std::time::Instant>,
) -> Result<Option<(usize, bool)>> {
    match objects.first().map(|o| o.wait_ref()) {
        Some(WaitRef::Event(e)) => match e.0 {},
        Some(WaitRef::Semaphore(s)) => match s.0 {},
        Some(WaitRef::Mutex(m)) => match m.0 {},
        // No channel can exist here.
        Some(WaitRef::Channel(_)) | None => Ok(None),
    }
}

/// No user database here.
pub(crate) fn user_name(_: u32) -> Option<String> {
    None
}
