//! The locks of the lifetime protocol (`object.rs`): open-file-description (OFD) record
//! locks on bytes of each object file (far past its end: a lock needs no data there).
//!
//! - The holders' range ([`HOLDERS`], from byte 2^40 on): every holder keeps a read lock on
//!   one byte of it, [`holder_byte`]: 2^40 + pid × 2^16 + slot, where the slot tells apart
//!   the handles of one process. So the holders of an object, and their pids, can be read
//!   from the object itself with `F_OFD_GETLK` ([`holders`]), without a look at the rest
//!   of the system. A remover converts its own read lock into a write lock on the whole
//!   range, which succeeds only if nobody else locks any of it. OFD locks convert in one
//!   step (a failed conversion keeps the read lock), unlike `flock`.
//! - [`UNLINK`] (byte 2^40 − 1): whoever unlinks the name holds a write lock on it while it
//!   checks that the name is still this file and unlinks it. A remover takes it together
//!   with the holders' range, in one call ([`REMOVE`]); `rm` takes it alone.
//!
//! A write lock needs a descriptor open for writing, so a user who may only read an object
//! can hold it (a read lock, like any holder) but never block anyone else's read lock.
//! The locks belong to the open file description: the kernel drops them when its last
//! descriptor closes, also when the process dies by SIGKILL, and threads that share a
//! descriptor share its locks.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;

/// A range of bytes: `len` 0 means to the end of every possible file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: i64,
    len: i64,
}

/// Every byte: what a holder whose description outlives it gives up.
pub(crate) const ALL: Span = Span { start: 0, len: 0 };
/// The first byte of the holders' range.
const HOLDERS_BASE: i64 = 1 << 40;
/// Slots per process: the handles of one process lock different bytes.
const SLOTS: i64 = 1 << 16;
/// The largest pid Linux gives (`PID_MAX_LIMIT`).
const PID_MAX: i64 = 1 << 22;

/// Every holder's byte: the range that a remover write-locks.
pub(crate) const HOLDERS: Span = Span {
    start: HOLDERS_BASE,
    len: 0,
};
/// The byte that unlinkers write-lock: right before the holders' range, so that a remover
/// takes both in one call ([`REMOVE`]).
pub(crate) const UNLINK: Span = Span {
    start: HOLDERS_BASE - 1,
    len: 1,
};
/// The unlink byte and every holder's byte: what a remover write-locks.
pub(crate) const REMOVE: Span = Span {
    start: HOLDERS_BASE - 1,
    len: 0,
};

/// The first byte of the channel roles' range, far below the unlink byte: a role's owner
/// write-locks `ROLES_BASE + role` through a description of its own while it plays the role.
const ROLES_BASE: i64 = 1 << 39;

/// The byte of a channel's role `role` (0: the producer, 1: the consumer).
pub(crate) fn role_byte(role: u16) -> Span {
    Span {
        start: ROLES_BASE + i64::from(role),
        len: 1,
    }
}

/// The byte that a holder in process `pid` read-locks with slot `slot`.
pub(crate) fn holder_byte(pid: u32, slot: u16) -> Span {
    Span {
        start: HOLDERS_BASE + i64::from(pid) * SLOTS + i64::from(slot),
        len: 1,
    }
}

/// A slot of this process: taken while a handle holds its object, given back on drop.
#[derive(Debug)]
pub(crate) struct Slot(u16);

/// The slots in use in this process, one bit each, without a lock: a thread that `fork`s
/// while another takes a slot leaves no lock held in the child. A forked child inherits
/// the parent's bits; that only makes it skip slots, since its pid differs.
static USED: [AtomicU64; (SLOTS / 64) as usize] =
    [const { AtomicU64::new(0) }; (SLOTS / 64) as usize];

impl Slot {
    /// The lowest free slot. Past 2^16 handles in one process, the last slot is shared,
    /// which only makes `holders` count fewer handles.
    pub(crate) fn take() -> Slot {
        // Relaxed: a bit only hands out a number; nothing is published through it.
        for (i, word) in USED.iter().enumerate() {
            let mut cur = word.load(Relaxed);
            while cur != u64::MAX {
                let bit = cur.trailing_ones();
                match word.compare_exchange_weak(cur, cur | 1 << bit, Relaxed, Relaxed) {
                    Ok(_) => return Slot((i * 64) as u16 + bit as u16),
                    Err(now) => cur = now,
                }
            }
        }
        Slot(u16::MAX)
    }

    pub(crate) fn get(&self) -> u16 {
        self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0 != u16::MAX {
            USED[usize::from(self.0) / 64].fetch_and(!(1 << (self.0 % 64)), Relaxed);
        }
    }
}

fn flock_for(kind: libc::c_short, span: Span) -> libc::flock {
    // SAFETY: an all-zero flock is a valid value (every field is an integer).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = span.start as libc::off_t;
    l.l_len = span.len as libc::off_t;
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

/// Takes (or converts to) a lock on `span` without waiting; `Ok(false)` if another
/// description's lock is in the way.
fn set(fd: impl AsFd, kind: libc::c_short, span: Span) -> Result<bool, Errno> {
    let mut l = flock_for(kind, span);
    match fcntl(fd, libc::F_OFD_SETLK, &mut l) {
        Ok(()) => Ok(true),
        Err(Errno::AGAIN) | Err(Errno::ACCESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A read lock on `span`.
pub(crate) fn try_read(fd: impl AsFd, span: Span) -> Result<bool, Errno> {
    set(fd, libc::F_RDLCK as libc::c_short, span)
}

/// A write lock on `span` (converting our own read locks in it). Needs a descriptor open
/// for writing (`EBADF` otherwise).
pub(crate) fn try_write(fd: impl AsFd, span: Span) -> Result<bool, Errno> {
    set(fd, libc::F_WRLCK as libc::c_short, span)
}

/// Gives up our locks on `span`.
pub(crate) fn unlock(fd: impl AsFd, span: Span) {
    let _ = set(fd, libc::F_UNLCK as libc::c_short, span);
}

/// Whether another open file description locks any of `span` (ours do not count).
pub(crate) fn others_lock(fd: impl AsFd, span: Span) -> Result<bool, Errno> {
    let mut l = flock_for(libc::F_WRLCK as libc::c_short, span);
    fcntl(fd, libc::F_OFD_GETLK, &mut l)?;
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether another open file description write-locks any of `span`. Read locks do not
/// count: anyone who may read a file may take them, but a write lock needs a descriptor
/// open for writing.
pub(crate) fn others_write_lock(fd: impl AsFd, span: Span) -> Result<bool, Errno> {
    let mut l = flock_for(libc::F_RDLCK as libc::c_short, span);
    fcntl(fd, libc::F_OFD_GETLK, &mut l)?;
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// The holders of an object, as read from its locks by a description that holds none.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Holders {
    /// Whether any lock is in the holders' range (a holder's, or a remover's for an instant).
    pub(crate) live: bool,
    /// The holding descriptions (handles), at most [`MAX_LISTED`].
    pub(crate) handles: u32,
    /// Their pids, sorted, each once (as the holders wrote them: see `holder_byte`).
    pub(crate) pids: Vec<u32>,
}

/// The most handles [`holders`] looks for: anyone who may read an object may lock bytes of
/// it, and a listing must not take forever over one object.
pub(crate) const MAX_LISTED: u32 = 4096;

/// Finds every read lock in the holders' range, by asking for the write lock on ever
/// smaller parts of it: each answer names one lock, and the parts left and right of it
/// are asked next. Two calls per holder, and one more.
// `off_t` is `i64` here, but not on every target.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn holders(fd: impl AsFd) -> Result<Holders, Errno> {
    let fd = fd.as_fd();
    let mut found = Holders::default();
    let mut todo = vec![(HOLDERS_BASE, i64::MAX)];
    while let Some((lo, hi)) = todo.pop() {
        if found.handles >= MAX_LISTED {
            break;
        }
        let mut l = flock_for(
            libc::F_WRLCK as libc::c_short,
            Span {
                start: lo,
                len: hi - lo + 1,
            },
        );
        fcntl(fd, libc::F_OFD_GETLK, &mut l)?;
        if l.l_type == libc::F_UNLCK as libc::c_short {
            continue;
        }
        found.live = true;
        let start = l.l_start as i64;
        let end = if l.l_len == 0 {
            i64::MAX
        } else {
            start.saturating_add(l.l_len as i64 - 1)
        };
        if l.l_type == libc::F_RDLCK as libc::c_short {
            found.handles += 1;
            let pid = (start - HOLDERS_BASE) / SLOTS;
            if (1..=PID_MAX).contains(&pid) {
                found.pids.push(pid as u32);
            }
        }
        if start > lo {
            todo.push((lo, start - 1));
        }
        if end < hi {
            todo.push((end + 1, hi));
        }
    }
    found.pids.sort_unstable();
    found.pids.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{self, Mode, OFlags};
    use rustix::process::getpid;

    /// A new unnamed file on tmpfs, and `n` more descriptions of it.
    fn descriptions(n: usize) -> (rustix::fd::OwnedFd, Vec<rustix::fd::OwnedFd>) {
        let fd = fs::open(
            "/dev/shm",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let more = (0..n)
            .map(|_| {
                let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
                fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap()
            })
            .collect();
        (fd, more)
    }

    #[test]
    fn holders_are_read_from_the_locks() {
        let (looker, holders_fds) = descriptions(4);
        assert_eq!(holders(&looker).unwrap(), Holders::default());
        let pid = getpid().as_raw_pid() as u32;
        let slots: Vec<Slot> = (0..3).map(|_| Slot::take()).collect();
        let mut distinct: Vec<u16> = slots.iter().map(Slot::get).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        for (fd, slot) in holders_fds.iter().zip(&slots) {
            assert!(try_read(fd, holder_byte(pid, slot.get())).unwrap());
        }
        // A lock that names no valid pid counts as a handle all the same.
        assert!(try_read(&holders_fds[3], holder_byte(0, 7)).unwrap());
        let found = holders(&looker).unwrap();
        assert_eq!(
            found,
            Holders {
                live: true,
                handles: 4,
                pids: vec![pid],
            }
        );
        // Our own locks do not count for ourselves; a remover's write lock needs the rest
        // gone.
        assert!(others_lock(&holders_fds[0], HOLDERS).unwrap());
        for fd in &holders_fds[1..] {
            unlock(fd, HOLDERS);
        }
        assert!(!others_lock(&holders_fds[0], HOLDERS).unwrap());
        assert!(try_write(&holders_fds[0], HOLDERS).unwrap());
        let removing = holders(&looker).unwrap();
        assert!(removing.live && removing.handles == 0 && removing.pids.is_empty());
    }

    #[test]
    fn a_flood_of_locks_is_counted_only_so_far() {
        let (looker, flooder) = descriptions(1);
        // Separate locks (every other byte), as anyone who may read an object can place.
        for i in 0..(MAX_LISTED as i64 + 100) {
            let span = Span {
                start: HOLDERS_BASE + 2 * i,
                len: 1,
            };
            assert!(try_read(&flooder[0], span).unwrap());
        }
        let found = holders(&looker).unwrap();
        assert_eq!(found.handles, MAX_LISTED);
    }
}
