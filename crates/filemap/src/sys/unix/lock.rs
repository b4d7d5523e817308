//! The locks of the lifetime protocol (`object.rs`): open-file-description (OFD) record
//! locks on two bytes of each object file.
//!
//! - [`HOLDERS`] (byte 0): every holder keeps a read lock; a remover converts its own read
//!   lock into a write lock, which succeeds only if nobody else locks the byte. OFD locks
//!   convert in one step (a failed conversion keeps the read lock), unlike `flock`.
//! - [`UNLINK`] (byte 1): whoever unlinks the name holds a write lock on it while it checks
//!   that the name is still this file and unlinks it.
//!
//! A write lock needs a descriptor open for writing, so a user who may only read an object
//! can hold it (a read lock, like any holder) but never block anyone else's read lock.
//! The locks belong to the open file description: the kernel drops them when its last
//! descriptor closes, also when the process dies by SIGKILL, and threads that share a
//! descriptor share its locks.
#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;

/// The byte that holders read-lock.
pub(crate) const HOLDERS: i64 = 0;
/// The byte that unlinkers write-lock.
pub(crate) const UNLINK: i64 = 1;

fn flock_for(kind: libc::c_short, byte: i64) -> libc::flock {
    // SAFETY: an all-zero flock is a valid value (every field is an integer).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = byte as libc::off_t;
    l.l_len = 1;
    l
}

fn fcntl(fd: impl AsFd, cmd: libc::c_int, l: &mut libc::flock) -> Result<(), Errno> {
    loop {
        // SAFETY: `l` is a valid flock for F_OFD_SETLK/F_OFD_GETLK, which read it (and for
        // GETLK write it); the descriptor is open.
        let rc = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), cmd, l as *mut libc::flock) };
        if rc != -1 {
            return Ok(());
        }
        match Errno::from_io_error(&std::io::Error::last_os_error()) {
            Some(Errno::INTR) => continue,
            Some(e) => return Err(e),
            None => return Err(Errno::IO),
        }
    }
}

/// Takes (or converts to) a lock on `byte` without waiting; `Ok(false)` if another
/// description's lock is in the way.
fn set(fd: impl AsFd, kind: libc::c_short, byte: i64) -> Result<bool, Errno> {
    let mut l = flock_for(kind, byte);
    match fcntl(fd, libc::F_OFD_SETLK, &mut l) {
        Ok(()) => Ok(true),
        Err(Errno::AGAIN) | Err(Errno::ACCESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A read lock on `byte`.
pub(crate) fn try_read(fd: impl AsFd, byte: i64) -> Result<bool, Errno> {
    set(fd, libc::F_RDLCK as libc::c_short, byte)
}

/// A write lock on `byte` (converting our own read lock, if we hold one). Needs a
/// descriptor open for writing (`EBADF` otherwise).
pub(crate) fn try_write(fd: impl AsFd, byte: i64) -> Result<bool, Errno> {
    set(fd, libc::F_WRLCK as libc::c_short, byte)
}

/// Gives up our lock on `byte`.
pub(crate) fn unlock(fd: impl AsFd, byte: i64) {
    let _ = set(fd, libc::F_UNLCK as libc::c_short, byte);
}

/// Whether another open file description locks `byte` (ours do not count).
pub(crate) fn others_lock(fd: impl AsFd, byte: i64) -> Result<bool, Errno> {
    let mut l = flock_for(libc::F_WRLCK as libc::c_short, byte);
    fcntl(fd, libc::F_OFD_GETLK, &mut l)?;
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}
