//! Channels on Windows: a pagefile-backed section under the channel's own name (so the
//! kernel's one namespace, lifetime and kind collisions apply), holding the control page
//! and ring or slots of `channel/algo.rs`, `seqlock.rs` and `rpc.rs`, then filemap's
//! record, whose kind tells a channel from a mapping.
//!
//! - **Roles.** Playing a role is holding a named event `NAME:filemap-role-N` that only
//!   its player creates: a second creator gets `ERROR_ALREADY_EXISTS` and is refused, and
//!   the kernel destroys the event with the player's last handle, also when the process
//!   dies. A peer is alive while the event can be opened.
//! - **Parking.** There is no futex between processes, so each word that a side sleeps
//!   on has a named semaphore `NAME:filemap-wait-OFFSET` (created by whoever needs it
//!   first). A sleeper checks the word after raising the algorithm's waiting flag and waits
//!   on the semaphore; a waker that sees the flag releases it. A token left by a sleeper
//!   that timed out costs one spurious wake-up, after which the sleeper looks again.
//! - The fences are full fences on both sides (no `membarrier` here).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use windows_sys::Win32::Foundation::{ERROR_ALREADY_EXISTS, ERROR_FILE_NOT_FOUND, WAIT_TIMEOUT};
use windows_sys::Win32::System::Memory::{OpenFileMappingW, FILE_MAP_READ, FILE_MAP_WRITE};
use windows_sys::Win32::System::Threading::{
    CreateEventW, CreateSemaphoreW, OpenEventW, ReleaseSemaphore, WaitForSingleObject,
};

use super::mapping::{create_section, wait_for_record, write_record, Region};
use super::object::*;
use crate::channel::algo::{
    kind_name, Control, ControlPage, Geometry, Header, Ring, CONTROL_LEN, KIND_BROADCAST,
    KIND_LATEST, KIND_STREAM,
};
use crate::channel::rpc::{Clients, RpcControl};
use crate::channel::seqlock::{SlotControl, Slots};
use crate::sync::algo::{Parked, Parker, Words};
use crate::sys::{CreateOptions, Disposition};
use crate::{Access, Error, Kind, Name, Namespace, Result, SyncState};

/// The most tokens a wait semaphore holds: the spurious wake-ups that stale tokens can
/// cause, at most.
const MAX_TOKENS: i32 = 64;

/// The object kind of a channel kind code.
fn object_kind(code: u32) -> Kind {
    match code {
        KIND_STREAM => Kind::Stream,
        KIND_BROADCAST => Kind::Broadcast,
        KIND_LATEST => Kind::Latest,
        _ => Kind::RequestReply,
    }
}

/// A holder's handle to a channel.
#[derive(Debug)]
pub(crate) struct Channel {
    // The view goes before the section handle.
    /// At least a control page long (`attach` checks), and never replaced.
    region: Region,
    _section: Handle,
    name: Name,
    created: bool,
    geometry: Geometry,
    parker: WaitObjects,
    /// A role event's name (see [`Channel::role_name`]), built here at each liveness check
    /// (a waiting side asks every few milliseconds: no allocation for that).
    role_buf: std::sync::Mutex<Vec<u16>>,
    /// Mapped read-write (`false`: read-only, and every role refused).
    writable: bool,
}

/// A role being played: the event whose existence says so.
#[derive(Debug)]
pub(crate) struct Claim {
    _event: Handle,
}

impl Claim {
    /// Always `false`: Windows has no `fork` (see the Linux backend).
    #[inline]
    pub(crate) fn inherited(&self) -> bool {
        false
    }

    /// The role's fork generation: Windows has only one.
    pub(crate) fn made(&self) -> Made {
        Made
    }
}

/// A fork generation, as on Linux; Windows has no `fork`, so nothing is ever inherited.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Made;

impl Made {
    pub(crate) fn inherited(self) -> bool {
        false
    }
}

/// The wait semaphores of one channel, by the offset of their word.
#[derive(Debug)]
pub(crate) struct WaitObjects {
    name: String,
    base: usize,
    len: usize,
    sems: std::sync::Mutex<HashMap<usize, std::sync::Arc<Handle>>>,
}

impl WaitObjects {
    pub(super) fn semaphore(&self, word: &AtomicU32) -> Option<std::sync::Arc<Handle>> {
        let off = (word as *const AtomicU32 as usize).checked_sub(self.base)?;
        if off >= self.len {
            return None;
        }
        let mut sems = self.sems.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = sems.get(&off) {
            return Some(h.clone());
        }
        let w: Vec<u16> = format!("{}:filemap-wait-{off:x}", self.name)
            .encode_utf16()
            .chain(std::iter::once(0))
            .collect();
        // SAFETY: `w` is NUL-terminated; default security; opens the semaphore if it
        // exists.
        let h = unsafe { CreateSemaphoreW(std::ptr::null(), 0, MAX_TOKENS, w.as_ptr()) };
        if h.is_null() {
            return None;
        }
        let h = std::sync::Arc::new(Handle(h));
        sems.insert(off, h.clone());
        Some(h)
    }
}

impl Parker for WaitObjects {
    fn park(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Parked {
        let Some(sem) = self.semaphore(word) else {
            // No semaphore (out of handles): poll.
            std::thread::sleep(std::time::Duration::from_millis(1));
            return Parked::Woken;
        };
        if word.load(std::sync::atomic::Ordering::SeqCst) != expected {
            return Parked::Woken;
        }
        let ms = match deadline {
            None => u32::MAX - 1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                (left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0))
                    .min(u128::from(u32::MAX - 1)) as u32
            }
        };
        // SAFETY: a live semaphore handle.
        match unsafe { WaitForSingleObject(sem.0, ms) } {
            WAIT_TIMEOUT => Parked::TimedOut,
            _ => Parked::Woken,
        }
    }

    fn park_any(&self, words: &Words<'_>, deadline: Option<Instant>) -> Parked {
        match words.first() {
            Some((word, val)) => self.park(word, val, deadline),
            None => Parked::Woken,
        }
    }

    fn unpark(&self, word: &AtomicU32, n: u32) {
        if let Some(sem) = self.semaphore(word) {
            let n = n.clamp(1, MAX_TOKENS as u32) as i32;
            // SAFETY: a live semaphore handle. Past its maximum the call fails and
            // changes nothing: the sleepers are woken already.
            unsafe { ReleaseSemaphore(sem.0, n, std::ptr::null_mut()) };
        }
    }
}

impl Channel {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        geometry: Geometry,
    ) -> Result<Channel> {
        no_persistence(&opts)?;
        let kind = object_kind(geometry.kind);
        let size = CONTROL_LEN as u64 + geometry.area_len();
        let (section, existed) = create_section(name, kind, size, disposition)?;
        if existed {
            return Channel::attach(section, name, kind, false, true);
        }
        // New: the header first, then the record, whose presence tells openers that the
        // channel is ready.
        let region = Region::map(section.0, Access::ReadWrite, 0, size as usize)
            .map_err(|c| object_error(c, name, kind, "initialising"))?;
        let header = geometry.encode();
        // SAFETY: the view is `size` bytes (more than the header), writable, and ours.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), region.ptr(), header.len()) };
        write_record(section.0, name, kind, size)?;
        drop(region);
        Channel::attach(section, name, kind, true, true)
    }

    /// Opens the channel, mapped read-write or (for [`Access::Read`]) read-only.
    pub(crate) fn open(_: &Namespace, name: &Name, kind: Kind, access: Access) -> Result<Channel> {
        let w = wide(name);
        // Read-write, or else read-only (the public API asks for nothing else).
        let writable = access == Access::ReadWrite;
        let rights = match writable {
            true => FILE_MAP_READ | FILE_MAP_WRITE,
            false => FILE_MAP_READ,
        };
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenFileMappingW(rights, 0, w.as_ptr()) };
        if h.is_null() {
            return Err(object_error(last_error(), name, kind, "opening"));
        }
        Channel::attach(Handle(h), name, kind, false, writable)
    }

    fn attach(
        section: Handle,
        name: &Name,
        kind: Kind,
        created: bool,
        writable: bool,
    ) -> Result<Channel> {
        let access = match writable {
            true => Access::ReadWrite,
            false => Access::Read,
        };
        let (_, record) = wait_for_record(section.0, name, kind)?;
        let found = record.as_ref().map_or(Kind::Mapping, |r| r.kind);
        if found != kind {
            return Err(Error::KindMismatch {
                name: name.to_string(),
                expected: kind,
                found,
            });
        }
        let corrupt = |reason: String| Error::Corrupt {
            path: name.to_string().into(),
            reason,
        };
        let size = record.map_or(0, |r| r.size);
        if size < CONTROL_LEN as u64 {
            return Err(corrupt(format!(
                "its size ({size} bytes) cannot hold a channel's control page"
            )));
        }
        let len = usize::try_from(size)
            .map_err(|_| corrupt(format!("its size ({size} bytes) is too large to map")))?;
        let region = Region::map(section.0, access, 0, len)
            .map_err(|c| object_error(c, name, kind, "mapping"))?;
        if !super::mapping::all_readable(region.ptr().cast(), len) {
            return Err(corrupt(
                "some of its pages are reserved and not committed: filemap makes no such channel"
                    .into(),
            ));
        }
        // SAFETY: the view is at least a page, aligned to the allocation granularity;
        // Header is atomics only.
        let header = unsafe { &*region.ptr().cast::<Header>() };
        let geometry = Geometry::read(header, size - CONTROL_LEN as u64).map_err(corrupt)?;
        if object_kind(geometry.kind) != kind {
            return Err(corrupt(format!(
                "its record says {kind}, but its control page holds a {}",
                kind_name(geometry.kind)
            )));
        }
        let parker = WaitObjects {
            // The kernel's name, exactly (`Display` escapes control characters).
            name: name.full(),
            base: region.ptr() as usize,
            len,
            sems: Default::default(),
        };
        Ok(Channel {
            region,
            _section: section,
            name: name.clone(),
            created,
            geometry,
            parker,
            role_buf: std::sync::Mutex::default(),
            writable,
        })
    }

    /// Whether the channel is mapped read-write (roles need it).
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    pub(crate) fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn os_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.name.to_string())
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// What this channel's sides sleep on.
    pub(crate) fn parker(&self) -> &WaitObjects {
        &self.parker
    }

    pub(crate) fn control<T: ControlPage>(&self) -> &T {
        const { assert!(std::mem::size_of::<T>() <= CONTROL_LEN) };
        // Checked where the channel was mapped, and the region never changes: no panic
        // branch in every send and receive.
        debug_assert!(self.region.len() >= CONTROL_LEN);
        // SAFETY: the view is aligned to the allocation granularity and at least a control
        // page long (the field's invariant); ControlPage types are atomics only; it lives
        // as long as `self`.
        unsafe { &*self.region.ptr().cast::<T>() }
    }

    pub(crate) fn area(&self) -> (*mut u8, usize) {
        // SAFETY: the view is at least CONTROL_LEN bytes long.
        let base = unsafe { self.region.ptr().add(CONTROL_LEN) };
        (base, self.region.len() - CONTROL_LEN)
    }

    pub(crate) fn ring(&self) -> Ring<'_> {
        let (base, _) = self.area();
        // SAFETY: the area holds at least `capacity` bytes (checked in `attach`) for as
        // long as `self` lives, accessed only through raw pointers and atomics.
        unsafe { Ring::new(self.control::<Control>(), base, self.geometry) }
    }

    pub(crate) fn slots(&self) -> Slots<'_> {
        let (base, _) = self.area();
        // SAFETY: as in `ring`, for the slots.
        unsafe { Slots::new(self.control::<SlotControl>(), base, self.geometry) }
    }

    pub(crate) fn clients(&self) -> Clients<'_> {
        let (base, _) = self.area();
        // SAFETY: as in `ring`, for the client slots.
        unsafe { Clients::new(self.control::<RpcControl>(), base, self.geometry) }
    }

    /// The NUL-terminated name of the event that says that `role` is played, written
    /// into `w` (which keeps its room from one call to the next).
    fn role_name(&self, role: u16, w: &mut Vec<u16>) {
        role_name(&self.name, role, w);
    }

    pub(crate) fn claim(&self, role: u16, what: &'static str) -> Result<Claim> {
        self.try_claim(role)?.ok_or_else(|| Error::Busy {
            name: self.name.to_string(),
            role: what,
        })
    }

    pub(crate) fn claim_any(&self, roles: Range<u16>, what: &'static str) -> Result<(u16, Claim)> {
        for role in roles {
            if let Some(c) = self.try_claim(role)? {
                return Ok((role, c));
            }
        }
        Err(Error::Busy {
            name: self.name.to_string(),
            role: what,
        })
    }

    fn try_claim(&self, role: u16) -> Result<Option<Claim>> {
        if !self.writable {
            return Err(crate::channel::read_only(&self.name));
        }
        let mut w = Vec::new();
        self.role_name(role, &mut w);
        // SAFETY: `w` is NUL-terminated; default security.
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, w.as_ptr()) };
        let code = last_error();
        if h.is_null() {
            return Err(os_error(format!("claiming a role in {}", self.name), code));
        }
        let event = Handle(h);
        if code == ERROR_ALREADY_EXISTS {
            return Ok(None);
        }
        Ok(Some(Claim { _event: event }))
    }

    pub(crate) fn role_alive(&self, role: u16) -> bool {
        let mut w = self
            .role_buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        role_alive(&self.name, role, &mut w)
    }
}

/// Writes the NUL-terminated name of the event that says that `role` of channel `name` is
/// played into `w` (which keeps its room from one call to the next).
fn role_name(name: &Name, role: u16, w: &mut Vec<u16>) {
    use std::fmt::Write as _;
    /// Encodes what is written into UTF-16 at the end of a vector.
    struct Utf16<'a>(&'a mut Vec<u16>);
    impl std::fmt::Write for Utf16<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend(s.encode_utf16());
            Ok(())
        }
    }
    w.clear();
    // Writing into a vector cannot fail.
    let _ = write!(
        Utf16(w),
        "{}{}:filemap-role-{role}",
        name.scope().prefix(),
        name.base()
    );
    w.push(0);
}

/// Whether anyone plays `role` of channel `name` (its event exists). Any failure other
/// than "not found" (access denied, say) counts as alive: never a false "disconnected".
fn role_alive(name: &Name, role: u16, w: &mut Vec<u16>) -> bool {
    use windows_sys::Win32::Storage::FileSystem::SYNCHRONIZE;
    role_name(name, role, w);
    // SAFETY: `w` is NUL-terminated.
    let h = unsafe { OpenEventW(SYNCHRONIZE, 0, w.as_ptr()) };
    if h.is_null() {
        return last_error() != ERROR_FILE_NOT_FOUND;
    }
    drop(Handle(h));
    true
}

/// A channel's geometry, counters and peers, for `info`: from the section's read-only
/// view (`section`, `size` bytes before filemap's record) and the role events.
pub(super) fn read_state(
    name: &Name,
    section: &super::mapping::Section,
    size: u64,
) -> Option<SyncState> {
    if size < CONTROL_LEN as u64
        || section.total() < CONTROL_LEN as u64
        || !super::mapping::all_readable(section.ptr(), CONTROL_LEN)
    {
        return None;
    }
    // SAFETY: the view is at least a control page long (checked above), aligned to the
    // allocation granularity, and lives while `section` does; Header is atomics only, so
    // every bit pattern is valid, and it is only read through them.
    let header = unsafe { &*section.ptr().cast::<Header>() };
    let g = Geometry::read(header, size - CONTROL_LEN as u64).ok()?;
    let mut w = Vec::new();
    let mut alive = |role: u16| role_alive(name, role, &mut w);
    // As on Linux: role 0 the writing side, 1 a stream's consumer, from 2 the others.
    let others = match g.kind {
        KIND_STREAM => 1..2,
        _ => 2..2 + crate::channel::algo::MAX_CLIENTS as u16,
    };
    let peers = others.filter(|&r| alive(r)).count() as u32;
    let producer = alive(0);
    let queued = (g.kind == KIND_STREAM).then(|| {
        // SAFETY: as for the header: Control is atomics only and fits in the control page.
        let ctl = unsafe { &*section.ptr().cast::<Control>() };
        ctl.queued(g.capacity)
    });
    Some(SyncState::Channel {
        kind: object_kind(g.kind),
        capacity: g.capacity,
        max_message: g.max_message,
        queued,
        producer,
        peers,
    })
}
