//! Channels on Linux: a namespace entry (the same protocol, lifetime and permissions as
//! every object) whose data area holds a control page and the ring or slots of
//! `channel/algo.rs`, `channel/seqlock.rs` and `channel/rpc.rs`, mapped shared by every
//! holder.
//!
//! Roles: the producer (or server), the consumer, and each subscriber or client write-lock
//! a byte of their own in the roles' range (`lock::role_byte`), through an open file
//! description of their own, for as long as they play the role. So a second producer is
//! refused while the first lives, the kernel drops the lock when the player dies (SIGKILL
//! included), and the other side tells a dead peer from a live one with one `F_OFD_GETLK`.
#![allow(unsafe_code)]

use std::ops::Range;

use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{self, Mode, OFlags};

use super::dir::NsDir;
use super::fork::Made;
use super::futex::Futex;
use super::lock;
use super::memory::{map_shared, Region};
use super::object::{Entry, NewObject};
use crate::channel::algo::{
    kind_name, Control, ControlPage, Geometry, Header, Ring, CONTROL_LEN, KIND_STREAM,
};
use crate::channel::rpc::{Clients, RpcControl};
use crate::channel::seqlock::{SlotControl, Slots};
use crate::sys::{CreateOptions, Disposition};
use crate::{Access, Error, Kind, Name, Namespace, Result};

/// A holder's handle to a channel: its entry and its mapped memory.
#[derive(Debug)]
pub(crate) struct Channel {
    // The mapping goes before the entry that keeps the object alive.
    /// At least a control page long (`map` checks), and never replaced.
    region: Region,
    entry: Entry,
    created: bool,
    geometry: Geometry,
    /// Mapped read-write (`false`: read-only, and every role refused).
    writable: bool,
}

/// A role being played: the description whose write lock says so. Dropping it gives the
/// role up.
#[derive(Debug)]
pub(crate) struct Claim {
    fd: OwnedFd,
    /// The fork generation the role was taken in (see `fork.rs`).
    made: Made,
}

impl Claim {
    /// Whether this is a copy that a forked child inherited: the role is still its
    /// parent's, and the endpoint that holds it must leave the channel alone when it goes.
    #[inline]
    pub(crate) fn inherited(&self) -> bool {
        self.made.inherited()
    }

    /// The fork generation the role was taken in, for what acts for the role elsewhere
    /// (a request/reply server's `Replier`).
    pub(crate) fn made(&self) -> Made {
        self.made
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.inherited() {
            // The parent's role: only the descriptor goes.
            return;
        }
        // Explicitly, not only by closing: a child that another thread is spawning right
        // now has a copy of the descriptor until it runs `exec`, which would keep the
        // description, and with it the role, taken until then.
        lock::unlock(&self.fd, lock::ALL);
    }
}

/// The object kind of a channel kind code.
pub(crate) fn object_kind(code: u32) -> Kind {
    match code {
        KIND_STREAM => Kind::Stream,
        crate::channel::algo::KIND_BROADCAST => Kind::Broadcast,
        crate::channel::algo::KIND_LATEST => Kind::Latest,
        _ => Kind::RequestReply,
    }
}

impl Channel {
    pub(crate) fn create(
        ns: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        geometry: Geometry,
    ) -> Result<Channel> {
        let kind = object_kind(geometry.kind);
        let dir = NsDir::for_create(ns, name)?;
        let size = (CONTROL_LEN as u64) + geometry.area_len();
        let header = geometry.encode();
        let new = NewObject {
            kind,
            flags: opts.record_flags(),
            size,
            data_len: size,
            init: &header,
            mode: opts.mode,
            // Reserved, so that no page raises SIGBUS.
            sparse: false,
        };
        let (entry, created) = Entry::create(dir, name, &new, disposition, &mut |_| Ok(()))?;
        Channel::map(entry, created, kind, true)
    }

    /// Opens the channel, mapped read-write or (for [`Access::Read`]) read-only.
    pub(crate) fn open(ns: &Namespace, name: &Name, kind: Kind, access: Access) -> Result<Channel> {
        let writable = access == Access::ReadWrite;
        let dir = NsDir::for_open(ns, name, kind)?;
        let entry = Entry::open(dir, name, kind, writable)?;
        Channel::map(entry, false, kind, writable)
    }

    fn map(entry: Entry, created: bool, kind: Kind, writable: bool) -> Result<Channel> {
        super::futex::register_asymmetric();
        let corrupt = |reason: String| Error::Corrupt {
            path: entry.path(),
            reason,
        };
        let size = entry.record().size;
        if size < (CONTROL_LEN as u64) || size > entry.record().data_len {
            return Err(corrupt(format!(
                "its size ({size} bytes) cannot hold a channel's control page"
            )));
        }
        let len = usize::try_from(size)
            .map_err(|_| corrupt(format!("its size ({size} bytes) is too large to map")))?;
        let region = map_shared(entry.fd(), len, writable)?;
        let geometry =
            Geometry::read(header(&region), size - CONTROL_LEN as u64).map_err(corrupt)?;
        if object_kind(geometry.kind) != kind {
            return Err(corrupt(format!(
                "its record says {kind}, but its control page holds a {}",
                kind_name(geometry.kind)
            )));
        }
        Ok(Channel {
            region,
            entry,
            created,
            geometry,
            writable,
        })
    }

    /// Whether the channel is mapped read-write (roles need it).
    #[inline]
    pub(crate) fn writable(&self) -> bool {
        self.writable
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

    #[inline]
    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// What this channel's sides sleep on.
    #[inline]
    pub(crate) fn parker(&self) -> &'static Futex {
        &Futex
    }

    /// The control page, as the kind's own layout.
    #[inline]
    pub(crate) fn control<T: ControlPage>(&self) -> &T {
        const { assert!(std::mem::size_of::<T>() <= CONTROL_LEN) };
        // Checked where the channel was mapped, and the region never changes: no panic
        // branch in every send and receive.
        debug_assert!(self.region.len() >= CONTROL_LEN);
        // SAFETY: the region is page-aligned (so aligned for T) and at least a control page
        // long (the field's invariant); ControlPage types are atomics only, so every bit
        // pattern is valid and all access goes through them; it lives as long as `self`.
        unsafe { &*self.region.ptr().cast::<T>() }
    }

    /// The first byte after the control page, and how many bytes follow (at least
    /// `geometry().area_len()`, checked when the channel was opened).
    #[inline]
    pub(crate) fn area(&self) -> (*mut u8, usize) {
        // SAFETY: the region is at least CONTROL_LEN bytes long.
        let base = unsafe { self.region.ptr().add(CONTROL_LEN) };
        (base, self.region.len() - CONTROL_LEN)
    }

    /// A stream's memory.
    #[inline]
    pub(crate) fn ring(&self) -> Ring<'_> {
        debug_assert_eq!(self.geometry.kind, KIND_STREAM);
        let (base, _) = self.area();
        // SAFETY: the area holds at least `capacity` bytes after the control page
        // (checked in `map`), page-aligned, for as long as `self` lives; the ring's bytes
        // are only accessed through raw pointers and atomics.
        unsafe { Ring::new(self.control::<Control>(), base, self.geometry) }
    }

    /// A broadcast's or latest-value channel's slots.
    #[inline]
    pub(crate) fn slots(&self) -> Slots<'_> {
        let (base, _) = self.area();
        // SAFETY: the area holds `capacity * slot_stride` bytes after the control page
        // (checked in `map`), page-aligned, for as long as `self` lives, and is only
        // accessed through atomics.
        unsafe { Slots::new(self.control::<SlotControl>(), base, self.geometry) }
    }

    /// A request/reply channel's client slots.
    pub(crate) fn clients(&self) -> Clients<'_> {
        let (base, _) = self.area();
        // SAFETY: the area holds `capacity * client_stride` bytes after the control page
        // (checked in `map`), page-aligned, for as long as `self` lives, and is only
        // accessed through atomics.
        unsafe { Clients::new(self.control::<RpcControl>(), base, self.geometry) }
    }

    /// Takes role `role`, through a description of our own; [`Error::Busy`] if someone
    /// lives in it.
    pub(crate) fn claim(&self, role: u16, what: &'static str) -> Result<Claim> {
        self.try_claim(role)?.ok_or_else(|| Error::Busy {
            name: self.name().to_string(),
            role: what,
        })
    }

    /// Takes the first free role of `roles`; [`Error::Busy`] if every one is taken.
    pub(crate) fn claim_any(&self, roles: Range<u16>, what: &'static str) -> Result<(u16, Claim)> {
        for role in roles {
            if let Some(c) = self.try_claim(role)? {
                return Ok((role, c));
            }
        }
        Err(Error::Busy {
            name: self.name().to_string(),
            role: what,
        })
    }

    fn try_claim(&self, role: u16) -> Result<Option<Claim>> {
        if !self.writable {
            return Err(crate::channel::read_only(self.name()));
        }
        let failed = |e| Error::io(format!("claiming a role in {}", self.name()), e);
        // /proc/self/fd/N opens the same inode as a new description, whose locks are its own.
        let path = format!("/proc/self/fd/{}", self.entry.fd().as_raw_fd());
        let fd = fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(failed)?;
        match lock::try_write(&fd, lock::role_byte(role)) {
            Ok(true) => Ok(Some(Claim {
                fd,
                made: Made::now(),
            })),
            Ok(false) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    /// Whether anyone plays `role` now (our own claims count too).
    pub(crate) fn role_alive(&self, role: u16) -> bool {
        // An error (which a lock query on an open file does not give) counts as alive, so
        // that it never turns into a false "disconnected".
        lock::others_write_lock(self.entry.fd(), lock::role_byte(role)).unwrap_or(true)
    }
}

/// The header at the start of `region`.
fn header(region: &Region) -> &Header {
    assert!(region.len() >= CONTROL_LEN);
    // SAFETY: the region is page-aligned (so aligned for Header) and at least a page long;
    // Header is atomics only, so every bit pattern is valid, and it is only accessed
    // through them; it lives as long as the region.
    unsafe { &*region.ptr().cast::<Header>() }
}

/// A channel's geometry, counters and peers, for `info`.
pub(crate) fn read_state(fd: &OwnedFd, size: u64) -> Option<crate::SyncState> {
    if size < CONTROL_LEN as u64 {
        return None;
    }
    // The control page is the first page: mapped private, a read-only descriptor will do.
    let region = super::memory::map_state(fd, false).ok()?;
    let g = Geometry::read(header(&region), size - CONTROL_LEN as u64).ok()?;
    let alive = |role: u16| lock::others_write_lock(fd, lock::role_byte(role)).unwrap_or(false);
    // Role 0 is the producer, publisher, writer or server; 1 a stream's consumer; from 2
    // the subscribers, latest-value readers and clients (readers of a read-only mapping
    // take no role, and are not counted).
    let others = match g.kind {
        KIND_STREAM => 1..2,
        _ => 2..2 + crate::channel::algo::MAX_CLIENTS as u16,
    };
    let peers = others.filter(|&r| alive(r)).count() as u32;
    let queued = (g.kind == KIND_STREAM).then(|| {
        // SAFETY: the region is a page, page-aligned; Control is atomics only and fits.
        let ctl = unsafe { &*region.ptr().cast::<Control>() };
        ctl.queued(g.capacity)
    });
    Some(crate::SyncState::Channel {
        kind: object_kind(g.kind),
        capacity: g.capacity,
        max_message: g.max_message,
        queued,
        producer: alive(0),
        peers,
    })
}
