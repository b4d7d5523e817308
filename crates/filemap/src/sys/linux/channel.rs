//! Channels on Linux: a namespace entry (the same protocol, lifetime and permissions as
//! every object) whose data area holds the control page and the ring of
//! `channel/algo.rs`, mapped shared by every holder.
//!
//! Roles: the producer and the consumer each write-lock a byte of their own in the roles'
//! range (`lock::role_byte`), through an open file description of their own, for as long
//! as they play the role. So a second producer is refused while the first lives, the
//! kernel drops the lock when the player dies (SIGKILL included), and the other side tells
//! a dead peer from a live one with one `F_OFD_GETLK`.
#![allow(unsafe_code)]

use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{self, Mode, OFlags};

use super::dir::NsDir;
use super::futex::Futex;
use super::lock;
use super::memory::{map_shared, Region};
use super::object::{Entry, NewObject};
use crate::channel::algo::{Control, Geometry, Ring, CONTROL_LEN};
use crate::sys::{CreateOptions, Disposition};
use crate::{Error, Kind, Name, Namespace, Result};

/// What channels park on: shared futexes.
pub(crate) const PARKER: Futex = Futex;

/// A role in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn byte(self) -> lock::Span {
        lock::role_byte(match self {
            Role::Producer => 0,
            Role::Consumer => 1,
        })
    }
}

/// A holder's handle to a channel: its entry and its mapped memory.
#[derive(Debug)]
pub(crate) struct Channel {
    // The mapping goes before the entry that keeps the object alive.
    region: Region,
    entry: Entry,
    created: bool,
    geometry: Geometry,
}

/// A role being played: the description whose write lock says so. Dropping it gives the
/// role up.
#[derive(Debug)]
pub(crate) struct Claim {
    _fd: OwnedFd,
}

impl Channel {
    pub(crate) fn create(
        ns: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        geometry: Geometry,
    ) -> Result<Channel> {
        let dir = NsDir::for_create(ns, name)?;
        let size = (CONTROL_LEN as u64) + u64::from(geometry.capacity);
        let header = geometry.encode();
        let new = NewObject {
            kind: Kind::Stream,
            flags: opts.record_flags(),
            size,
            data_len: size,
            init: &header,
            mode: opts.mode,
            // The ring is written at once: reserved, so that no page raises SIGBUS.
            sparse: false,
        };
        let (entry, created) = Entry::create(dir, name, &new, disposition, &mut |_| Ok(()))?;
        Channel::map(entry, created)
    }

    pub(crate) fn open(ns: &Namespace, name: &Name) -> Result<Channel> {
        let dir = NsDir::for_open(ns, name, Kind::Stream)?;
        let entry = Entry::open(dir, name, Kind::Stream, true)?;
        Channel::map(entry, false)
    }

    fn map(entry: Entry, created: bool) -> Result<Channel> {
        super::futex::register_asymmetric();
        let corrupt = |reason: String| Error::Corrupt {
            path: entry.path(),
            reason,
        };
        let size = entry.record().size;
        if size < (CONTROL_LEN as u64) || size > entry.record().data_len {
            return Err(corrupt(format!(
                "its size ({size} bytes) cannot hold a channel's control page and ring"
            )));
        }
        let len = usize::try_from(size)
            .map_err(|_| corrupt(format!("its size ({size} bytes) is too large to map")))?;
        let region = map_shared(entry.fd(), len)?;
        let ring_room = size - CONTROL_LEN as u64;
        let geometry = Geometry::read(control(&region), ring_room).map_err(corrupt)?;
        Ok(Channel {
            region,
            entry,
            created,
            geometry,
        })
    }

    pub(crate) fn name(&self) -> &Name {
        self.entry.name()
    }

    pub(crate) fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn os_path(&self) -> std::path::PathBuf {
        self.entry.path()
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The channel's memory.
    pub(crate) fn ring(&self) -> Ring<'_> {
        // SAFETY: the region maps the control page and at least `capacity` bytes after it
        // (checked in `map`), page-aligned, for as long as `self` lives; the ring's bytes
        // are only accessed through raw pointers and atomics.
        unsafe {
            Ring::new(
                control(&self.region),
                self.region.ptr().add(CONTROL_LEN),
                self.geometry,
            )
        }
    }

    /// Takes `role`, through a description of our own; [`Error::Busy`] if someone lives in
    /// it.
    pub(crate) fn claim(&self, role: Role) -> Result<Claim> {
        // /proc/self/fd/N opens the same inode as a new description, whose locks are its own.
        let path = format!("/proc/self/fd/{}", self.entry.fd().as_raw_fd());
        let fd = fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::io(format!("claiming a role in {}", self.name()), e))?;
        match lock::try_write(&fd, role.byte()) {
            Ok(true) => Ok(Claim { _fd: fd }),
            Ok(false) => Err(Error::Busy {
                name: self.name().to_string(),
                role: match role {
                    Role::Producer => "producer",
                    Role::Consumer => "consumer",
                },
            }),
            Err(e) => Err(Error::io(format!("claiming a role in {}", self.name()), e)),
        }
    }

    /// Whether anyone plays `role` now (our own claims count too).
    pub(crate) fn role_alive(&self, role: Role) -> bool {
        // An error (which a lock query on an open file does not give) counts as alive, so
        // that it never turns into a false "disconnected".
        lock::others_write_lock(self.entry.fd(), role.byte()).unwrap_or(true)
    }
}

/// The control page at the start of `region`.
fn control(region: &Region) -> &Control {
    assert!(region.len() >= CONTROL_LEN);
    // SAFETY: the region is page-aligned (so aligned for Control) and at least a page long;
    // Control is atomics only, so every bit pattern is valid, and it is only accessed
    // through them; it lives as long as the region.
    unsafe { &*region.ptr().cast::<Control>() }
}

/// A channel's geometry, counters and peers, for `info`.
pub(crate) fn read_state(fd: &OwnedFd, size: u64) -> Option<crate::SyncState> {
    if size < CONTROL_LEN as u64 {
        return None;
    }
    // The control page is the first page: mapped private, a read-only descriptor will do.
    let region = super::memory::map_state(fd, false).ok()?;
    let ctl = control(&region);
    let g = Geometry::read(ctl, size - CONTROL_LEN as u64).ok()?;
    let alive = |role: Role| lock::others_write_lock(fd, role.byte()).unwrap_or(false);
    use std::sync::atomic::Ordering::Relaxed;
    let pid = |alive: bool, word: &std::sync::atomic::AtomicU32| {
        alive.then(|| word.load(Relaxed)).filter(|&p| p != 0)
    };
    let (producer, consumer) = (alive(Role::Producer), alive(Role::Consumer));
    Some(crate::SyncState::Stream {
        capacity: g.capacity,
        max_message: g.max_message,
        queued: ctl.queued(),
        producer,
        consumer,
        producer_pid: pid(producer, &ctl.producer_pid),
        consumer_pid: pid(consumer, &ctl.consumer_pid),
    })
}
