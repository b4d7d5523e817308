//! Mapped memory that the backends share: a mapped range (`Region`), the state page of a
//! synchronization object or channel (`map_state`), and that page behind a private shadow
//! for robust lists (`ShadowedState`). The bottom layer, with `dir`, `lock` and `futex`:
//! it knows nothing of objects.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::mm::{self, MapFlags, MsyncFlags, ProtFlags};

use super::fork::Made;
use crate::{Error, Result};

/// What a tracked view is: its whole mapping.
#[derive(Debug, Clone, Copy)]
pub(super) struct TrackedView {
    pub(super) base: usize,
    pub(super) len: usize,
    pub(super) offset: u64,
    pub(super) prot: ProtFlags,
}

/// The shared views that map a handle's locked description, and the fork generation that
/// made the list.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    made: Made,
    views: Arc<Mutex<Vec<TrackedView>>>,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            made: Made::now(),
            views: Default::default(),
        }
    }
}

impl Tracker {
    /// The list, locked; `None` in a forked child. There the list is its parent's: the
    /// child's copies of the views need no moving, since its copy of the handle gives no
    /// lock up, and its copy of the list's lock may have been held by a thread it does not
    /// have.
    pub(super) fn lock(&self) -> Option<std::sync::MutexGuard<'_, Vec<TrackedView>>> {
        (!self.made.inherited()).then(|| self.views.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One `mmap`ed range. `ptr()` points at the byte the caller asked for.
#[derive(Debug)]
pub(crate) struct Region {
    pub(super) base: NonNull<u8>,
    pub(super) map_len: usize,
    pub(super) delta: usize,
    pub(super) len: usize,
    /// For a view of a handle's locked description: where it is registered.
    pub(super) tracker: Option<Tracker>,
}

// SAFETY: a Region is plain memory owned by this handle; nothing in it is tied to a thread.
unsafe impl Send for Region {}
// SAFETY: shared references only hand out raw pointers or copy through them; callers
// synchronise as they would for memory that other processes write.
unsafe impl Sync for Region {}

impl Region {
    #[inline]
    pub(crate) fn ptr(&self) -> *mut u8 {
        // SAFETY: `delta` < page size <= `map_len`, so the result stays inside the mapping.
        unsafe { self.base.as_ptr().add(self.delta) }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `msync(MS_SYNC)` over `len` bytes at `offset` in the view (already checked).
    pub(crate) fn flush(&self, offset: usize, len: usize) -> Result<()> {
        let page = rustix::param::page_size();
        let start = self.delta + offset;
        let aligned = start & !(page - 1);
        let sync_len = len + (start - aligned);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: [aligned, aligned + sync_len) lies inside our mapping, which is alive,
        // and msync does not change what the memory holds.
        unsafe {
            mm::msync(
                self.base.as_ptr().add(aligned).cast::<c_void>(),
                sync_len,
                MsyncFlags::SYNC,
            )
        }
        .map_err(|e| Error::io("flushing a view", e))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Unregistered and unmapped under the tracker's lock, so that the handle's drop
        // never maps over a range that is being unmapped.
        let mut live = self.tracker.as_ref().and_then(Tracker::lock);
        if let Some(live) = live.as_mut() {
            let base = self.base.as_ptr() as usize;
            live.retain(|v| v.base != base);
        }
        // SAFETY: we own this mapping; the View that holds us hands out no borrow that
        // outlives it.
        let _ = unsafe { mm::munmap(self.base.as_ptr().cast::<c_void>(), self.map_len) };
        drop(live);
    }
}

/// Maps the first `len` bytes of an object file shared, read-write or (without `writable`)
/// read-only: a channel's control page and ring, with its page tables filled in now
/// (`MAP_POPULATE`). Otherwise each
/// process takes a page fault at its first touch of each page of the ring, in the middle
/// of sending or receiving: about 0.5 ms per MiB of ring, spread over the first lap
/// (docs/BENCHMARKS.md, 2026-11-28). The pages exist already (the file is reserved), so
/// this costs only the page tables, at open: 0.1 ms per MiB here. A page that is not
/// there (a file that another user truncated) is left out, not an error.
pub(crate) fn map_shared(fd: &OwnedFd, len: usize, writable: bool) -> Result<Region> {
    let failed = |e| Error::io("mapping a channel", e);
    let prot = match writable {
        true => ProtFlags::READ | ProtFlags::WRITE,
        false => ProtFlags::READ,
    };
    // SAFETY: a new mapping at an address of the kernel's choosing cannot overlap memory
    // that Rust knows about; the fd is open and offset 0 is page-aligned.
    let base = unsafe {
        mm::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            MapFlags::SHARED | MapFlags::POPULATE,
            fd.as_fd(),
            0,
        )
    }
    .map_err(failed)?;
    let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| failed(Errno::NOMEM))?;
    Ok(Region {
        base,
        map_len: len,
        delta: 0,
        len,
        tracker: None,
    })
}

/// Maps the first page of an object file: its state. With `shared`, writes reach every
/// holder (`MAP_SHARED`); without, the mapping is private but still shows the file's
/// current bytes until written (which the caller does not do), so a read-only fd suffices.
pub(crate) fn map_state(fd: &OwnedFd, shared: bool) -> Result<Region> {
    let len = rustix::param::page_size();
    let flags = if shared {
        MapFlags::SHARED
    } else {
        MapFlags::PRIVATE
    };
    // SAFETY: a new mapping at an address of the kernel's choosing cannot overlap memory
    // that Rust knows about; the fd is open and offset 0 is page-aligned.
    let base = unsafe {
        mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            flags,
            fd.as_fd(),
            0,
        )
    }
    .map_err(|e| Error::io("mapping an object's state", e))?;
    let base = NonNull::new(base.cast::<u8>())
        .ok_or_else(|| Error::io("mapping an object's state", Errno::NOMEM))?;
    Ok(Region {
        base,
        map_len: len,
        delta: 0,
        len,
        tracker: None,
    })
}

/// The first page of an object file mapped shared, right after a private, zeroed page of
/// the same size: the *shadow*. A word at offset `x` of the state has the address
/// `shadow + page + x`, so a robust-list entry at `shadow + x` names it with a constant
/// `futex_offset` of one page (see `robust.rs`). The list's pointers live in the shadow,
/// in this process's own memory, where no other process can read or change them.
#[derive(Debug)]
pub(crate) struct ShadowedState {
    base: NonNull<u8>,
    page: usize,
}

// SAFETY: the mapping is owned by this value and tied to no thread; shared references only
// hand out raw pointers.
unsafe impl Send for ShadowedState {}
// SAFETY: as above; all access to the memory is through atomics or raw pointers whose users
// synchronise.
unsafe impl Sync for ShadowedState {}

impl ShadowedState {
    pub(crate) fn map(fd: &OwnedFd) -> Result<ShadowedState> {
        let page = rustix::param::page_size();
        let failed = |e| Error::io("mapping an object's state", e);
        // 1. Reserve two pages of private, zeroed memory.
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing cannot
        // overlap memory that Rust knows about.
        let base = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                2 * page,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(failed)?;
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| failed(Errno::NOMEM))?;
        let shadowed = ShadowedState { base, page };
        // 2. Put the state over the second page. From here on, dropping `shadowed` unmaps
        //    both pages, whatever happens.
        // SAFETY: MAP_FIXED replaces the second page of our own reservation, which nothing
        // else uses; the fd is open and offset 0 is page-aligned.
        unsafe {
            mm::mmap(
                shadowed.state().cast(),
                page,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(failed)?;
        Ok(shadowed)
    }

    /// The private page.
    pub(crate) fn shadow(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The shared state: one page.
    pub(crate) fn state(&self) -> *mut u8 {
        // SAFETY: the reservation is two pages long.
        unsafe { self.base.as_ptr().add(self.page) }
    }

    pub(crate) fn page(&self) -> usize {
        self.page
    }
}

impl Drop for ShadowedState {
    fn drop(&mut self) {
        // SAFETY: we own both pages; the owner unlinks every robust-list entry in the shadow
        // before dropping us (see `robust.rs`).
        let _ = unsafe { mm::munmap(self.base.as_ptr().cast::<c_void>(), 2 * self.page) };
    }
}
