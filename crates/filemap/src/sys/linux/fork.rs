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
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Incremented in the child after every `fork`.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Relaxed);
}

/// The current fork generation. The first call registers the fork handler, so a handle
/// that records the generation before any `fork` can copy it is told apart afterwards.
#[inline]
pub(crate) fn generation() -> u32 {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    // SAFETY: the handler only increments an atomic, which is async-signal-safe, as a
    // child-side fork handler must be.
    ATFORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    });
    FORKS.load(Relaxed)
}
