//! Fork generations: which of a process's handles it inherited from its parent by `fork`.
//!
//! A child that `fork`s without `exec` gets copies of its parent's descriptors, and with
//! them the parent's open file descriptions, whose OFD locks are the parent's holds on its
//! objects and the roles it plays in channels. Those copies are the parent's, not the
//! child's: a handle the child inherited does nothing to them when it closes (see
//! `Drop for Entry` and `Drop for Claim`), so that a child closing its copies, or exiting
//! through destructors, never takes the parent's holds away. On Windows, where handles are
//! inherited by `CreateProcess`, closing a child's handle never affects the parent's either.
//!
//! Every handle records the generation it was made in; the generation goes up by one in
//! the child after each `fork` (a `pthread_atfork` handler). `posix_spawn` and `vfork`,
//! which `exec` at once, run no fork handlers and need none.
//!
//! A fork also copies locks that other threads held at that instant, and those threads do
//! not exist in the child. Process-wide state that sits behind a lock is therefore made
//! afresh in each generation ([`PerGeneration`]: the namespace directories' cache, the
//! mutex registry), needs no lock (the holders' slots, `lock.rs`), or is left alone in a
//! child (a mapping's list of views, `memory.rs`).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering::*};

/// Incremented in the child after every `fork`.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Relaxed);
}

/// Whether the fork handler is registered (or being registered).
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// The current fork generation. The first call registers the fork handler, so a handle
/// that records the generation before any `fork` can copy it is told apart afterwards.
/// No lock (not even a `Once`): a thread that forks while another registers must not
/// leave the child waiting for ever.
#[inline]
pub(crate) fn generation() -> u32 {
    if !REGISTERED.load(Acquire) && !REGISTERED.swap(true, AcqRel) {
        // SAFETY: the handler only increments an atomic, which is async-signal-safe, as a
        // child-side fork handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
    FORKS.load(Relaxed)
}

/// The fork generation that something (a handle, a role, a list of views) was made in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Made(u32);

impl Made {
    pub(crate) fn now() -> Made {
        Made(generation())
    }

    /// Whether this process is a child forked since: the thing is a copy it inherited.
    /// One load, cheap enough for a channel's every message: making this stamp registered
    /// the fork handler already.
    #[inline]
    pub(crate) fn inherited(self) -> bool {
        self.0 != FORKS.load(Relaxed)
    }
}

/// A process-wide value that each fork generation makes afresh on first use, for state
/// behind a lock: a thread that held the lock when another thread forked does not exist in
/// the child, so the child's copy of the lock would stay held for ever. Values of earlier
/// generations are leaked (one per generation that used it, plus one per lost race).
pub(crate) struct PerGeneration<T> {
    current: AtomicPtr<(u32, T)>,
}

impl<T: Default> PerGeneration<T> {
    pub(crate) const fn new() -> PerGeneration<T> {
        PerGeneration {
            current: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// This generation's value.
    pub(crate) fn get(&'static self) -> &'static T {
        let gen = generation();
        let current = self.current.load(Acquire);
        // SAFETY: a non-null `current` always points at a leaked, never-freed value.
        if let Some((g, value)) = unsafe { current.as_ref() } {
            if *g == gen {
                return value;
            }
        }
        let fresh: &'static mut (u32, T) = Box::leak(Box::new((gen, T::default())));
        let fresh_ptr: *mut (u32, T) = fresh;
        match self
            .current
            .compare_exchange(current, fresh_ptr, AcqRel, Acquire)
        {
            Ok(_) => &fresh.1,
            // Another thread of this generation installed one first: use it.
            // SAFETY: as above; the exchange failed, so `other` is not null.
            Err(other) => unsafe { &(*other).1 },
        }
    }
}
