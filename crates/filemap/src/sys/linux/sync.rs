//! Named mutexes, semaphores and events on Linux.
//!
//! Each object is a namespace entry (same protocol, lifetime and permissions as mappings)
//! whose first page holds its state, mapped shared in every holder:
//!
//! - events and semaphores: the pure state machines of `sync/algo.rs`, parked on shared
//!   futexes (`futex_wait`, and `futex_waitv` for wait-for-any);
//! - mutexes: filemap's own robust mutex (`sync/algo.rs` for the shared word protocol,
//!   `robust.rs` for owner death and the private bookkeeping; `docs/mutex.md`). The shared
//!   state holds numbers only. When an owner dies, even by SIGKILL, the kernel marks the
//!   mutex through a robust list in private memory, and the next locker gets it as
//!   abandoned. No one polls.
#![allow(unsafe_code)]

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Instant;

use rustix::fd::OwnedFd;
use rustix::io::Errno;

use super::dir::NsDir;
use super::futex::Futex;
use super::memory::{map_state, Region};
use super::object::{Entry, NewObject};
use super::robust::{self, Core, Fast, Me};
use crate::sync::algo::{
    self, EventState, MutexState, MutexWait, SemaphoreState, Taken, ID_MASK, OWNER_DIED,
};
use crate::sys::{CreateOptions, Disposition, Locked};
use crate::{Error, Kind, Name, Namespace, Result, SyncState};

/// State types that may be viewed in shared memory: `#[repr(C)]`, every byte inside an
/// atomic, every bit pattern valid.
///
/// # Safety
///
/// Implementors must meet the description above.
unsafe trait SharedState: Sync {}

// SAFETY: only AtomicU32 fields.
unsafe impl SharedState for SemaphoreState {}
// SAFETY: only AtomicU32 fields.
unsafe impl SharedState for EventState {}
// SAFETY: only AtomicU32 fields (in `Cell`s).
unsafe impl SharedState for MutexState {}

/// The part every synchronization object has: its entry and its mapped state page.
#[derive(Debug)]
struct Shared {
    // The mapping goes before the entry that keeps the object alive.
    region: Region,
    entry: Entry,
    created: bool,
}

/// Creates (or opens) the entry of a synchronization object whose state is a `T`.
/// `prepare` runs on a new object's file before anyone can open it.
fn create_entry<T: SharedState>(
    ns: &Namespace,
    name: &Name,
    kind: Kind,
    opts: CreateOptions,
    disposition: Disposition,
    prepare: &mut dyn FnMut(&OwnedFd) -> Result<()>,
) -> Result<(Entry, bool)> {
    let dir = NsDir::for_create(ns, name)?;
    let size = std::mem::size_of::<T>() as u64;
    let new = NewObject {
        kind,
        flags: opts.record_flags(),
        size,
        data_len: size,
        init: &[],
        mode: opts.mode,
        // One page of state, always reserved: no SIGBUS when it is first touched.
        sparse: false,
    };
    let (entry, created) = Entry::create(dir, name, &new, disposition, prepare)?;
    if !created {
        check_size::<T>(&entry)?;
    }
    Ok((entry, created))
}

/// Opens the entry of an existing synchronization object whose state is a `T`.
fn open_entry<T: SharedState>(ns: &Namespace, name: &Name, kind: Kind) -> Result<Entry> {
    let dir = NsDir::for_open(ns, name, kind)?;
    let entry = Entry::open(dir, name, kind, true)?;
    check_size::<T>(&entry)?;
    Ok(entry)
}

/// An object of the right kind made by another version of filemap has another size.
fn check_size<T: SharedState>(entry: &Entry) -> Result<()> {
    if entry.record().size != std::mem::size_of::<T>() as u64 {
        return Err(Error::Corrupt {
            path: entry.path(),
            reason: format!(
                "its state is {} bytes, but a {} has {}",
                entry.record().size,
                entry.record().kind,
                std::mem::size_of::<T>()
            ),
        });
    }
    Ok(())
}

impl Shared {
    fn create<T: SharedState>(
        ns: &Namespace,
        name: &Name,
        kind: Kind,
        opts: CreateOptions,
        disposition: Disposition,
        init: impl FnOnce(&T) -> Result<()>,
    ) -> Result<Shared> {
        let mut init = Some(init);
        let mut mapped = None;
        let (entry, created) =
            create_entry::<T>(ns, name, kind, opts, disposition, &mut |fd: &OwnedFd| {
                let region = map_state(fd, true)?;
                if let Some(init) = init.take() {
                    init(state_of(&region))?;
                }
                mapped = Some(region);
                Ok(())
            })?;
        let region = match mapped.filter(|_| created) {
            Some(region) => region,
            None => map_state(entry.fd(), true)?,
        };
        Ok(Shared {
            region,
            entry,
            created,
        })
    }

    fn open<T: SharedState>(ns: &Namespace, name: &Name, kind: Kind) -> Result<Shared> {
        let entry = open_entry::<T>(ns, name, kind)?;
        let region = map_state(entry.fd(), true)?;
        Ok(Shared {
            region,
            entry,
            created: false,
        })
    }

    fn state<T: SharedState>(&self) -> &T {
        state_of(&self.region)
    }
}

fn state_of<T: SharedState>(region: &Region) -> &T {
    assert!(
        std::mem::size_of::<T>() <= region.len()
            && (region.ptr() as usize) % std::mem::align_of::<T>() == 0
    );
    // SAFETY: the region is at least as large as T and aligned for it (checked above; it
    // is page-aligned), it lives as long as `region`, and SharedState guarantees that
    // every bit pattern is a valid T and that all access goes through atomics or pthread.
    unsafe { &*region.ptr().cast::<T>() }
}

macro_rules! common_methods {
    () => {
        pub(crate) fn name(&self) -> &Name {
            self.0.entry.name()
        }

        pub(crate) fn created(&self) -> bool {
            self.0.created
        }

        pub(crate) fn os_path(&self) -> std::path::PathBuf {
            self.0.entry.path()
        }
    };
}

/// A named event.
#[derive(Debug)]
pub struct Event(Shared);

impl Event {
    pub(crate) fn create(
        ns: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        manual_reset: bool,
        initially_set: bool,
    ) -> Result<Event> {
        Shared::create::<EventState>(ns, name, Kind::Event, opts, disposition, |s| {
            s.init(manual_reset, initially_set);
            Ok(())
        })
        .map(Event)
    }

    pub(crate) fn open(ns: &Namespace, name: &Name) -> Result<Event> {
        Shared::open::<EventState>(ns, name, Kind::Event).map(Event)
    }

    common_methods!();

    fn state(&self) -> &EventState {
        self.0.state()
    }

    pub(crate) fn set(&self) -> Result<()> {
        self.state().set(&Futex);
        Ok(())
    }

    pub(crate) fn reset(&self) -> Result<()> {
        self.state().reset();
        Ok(())
    }

    pub(crate) fn is_set(&self) -> bool {
        self.state().is_set()
    }

    pub(crate) fn manual_reset(&self) -> bool {
        self.state().manual_reset()
    }
}

/// A named semaphore.
#[derive(Debug)]
pub struct Semaphore(Shared);

impl Semaphore {
    pub(crate) fn create(
        ns: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        initial: u32,
        max: u32,
    ) -> Result<Semaphore> {
        Shared::create::<SemaphoreState>(ns, name, Kind::Semaphore, opts, disposition, |s| {
            s.init(initial, max);
            Ok(())
        })
        .map(Semaphore)
    }

    pub(crate) fn open(ns: &Namespace, name: &Name) -> Result<Semaphore> {
        Shared::open::<SemaphoreState>(ns, name, Kind::Semaphore).map(Semaphore)
    }

    common_methods!();

    fn state(&self) -> &SemaphoreState {
        self.0.state()
    }

    pub(crate) fn release(&self, n: u32) -> Result<u32> {
        self.state()
            .release(n, &Futex)
            .map_err(|e| Error::TooManyPosts {
                name: self.name().to_string(),
                count: e.count,
                max: e.max,
                release: n,
            })
    }

    pub(crate) fn count(&self) -> u32 {
        self.state().count()
    }

    pub(crate) fn max(&self) -> u32 {
        self.state().max()
    }
}

/// One of the objects given to [`wait_any`].
#[derive(Debug, Clone, Copy)]
pub enum WaitRef<'a> {
    Event(&'a Event),
    Semaphore(&'a Semaphore),
    Mutex(&'a Mutex),
    Channel(crate::channel::Readiness<'a>),
}

/// A stream receiver as something `algo::wait_any` waits for. Its peer's death does not
/// wake it, so it is not "watched": the wait looks again every few tens of milliseconds.
struct ChannelWait<'a>(crate::channel::Readiness<'a>);

impl algo::Waitable for ChannelWait<'_> {
    fn begin(&self) -> u32 {
        0
    }
    fn try_take(&self, _: u32) -> Option<Taken> {
        self.0.ready().then_some(Taken::Signalled)
    }
    fn prepare_sleep<'a>(&'a self, _: u32, words: &mut algo::Words<'a>) -> bool {
        self.0.begin_sleep();
        words.push(self.0.word());
        true
    }
    fn finish_sleep(&self) {
        self.0.end_sleep();
    }
    fn watched(&self) -> bool {
        false
    }
    fn recheck_ms(&self) -> u64 {
        self.0.poll_ms().unwrap_or(algo::UNWATCHED_RECHECK_MS)
    }
}

/// A filler for the unused entries of [`wait_any`]'s fixed arrays; never waited for.
struct Never;

impl algo::Waitable for Never {
    fn begin(&self) -> u32 {
        0
    }
    fn try_take(&self, _: u32) -> Option<Taken> {
        None
    }
    fn prepare_sleep<'a>(&'a self, _: u32, _: &mut algo::Words<'a>) -> bool {
        false
    }
    fn finish_sleep(&self) {}
}

/// Waits for any of `objects` (at most [`algo::MAX_OBJECTS`], which the caller checks)
/// and takes it; `None` on timeout. A mutex that is taken is owned by the calling thread,
/// as after [`Mutex::lock`]. The flag says whether the object was a mutex whose owner had
/// died. Nothing is allocated: the per-object state is in arrays on the stack.
pub(crate) fn wait_any(
    objects: &[&dyn crate::Waitable],
    deadline: Option<Instant>,
) -> Result<Option<(usize, bool)>> {
    const MAX: usize = algo::MAX_OBJECTS;
    let n = objects.len().min(MAX);
    robust::with_thread(|me| {
        let refs: [Option<WaitRef<'_>>; MAX] =
            std::array::from_fn(|i| objects.get(i).map(|o| o.wait_ref()));
        let mut mutexes: [Option<MutexWait<'_>>; MAX] = [const { None }; MAX];
        for (w, r) in mutexes.iter_mut().zip(&refs) {
            if let Some(WaitRef::Mutex(m)) = r {
                *w = Some(m.waiter(me)?);
            }
        }
        let channels: [Option<ChannelWait<'_>>; MAX] = std::array::from_fn(|i| match refs[i] {
            Some(WaitRef::Channel(r)) => Some(ChannelWait(r)),
            _ => None,
        });
        let mut states: [&dyn algo::Waitable; MAX] = [&Never; MAX];
        for (i, state) in states.iter_mut().enumerate().take(n) {
            *state = match (&refs[i], &mutexes[i], &channels[i]) {
                (_, Some(w), _) => w,
                (_, _, Some(c)) => c,
                (Some(WaitRef::Event(e)), ..) => e.state(),
                (Some(WaitRef::Semaphore(s)), ..) => s.state(),
                // Every mutex has a waiter and every channel a wait, and every index below
                // `n` an object.
                _ => &Never,
            };
        }
        let Some((i, how)) = algo::wait_any(&states[..n], &Futex, deadline) else {
            return Ok(None);
        };
        if let (Some(WaitRef::Mutex(m)), Some(w)) = (&refs[i], &mutexes[i]) {
            m.owned_now(me, w.recursive)?;
        }
        Ok(Some((i, how == Taken::Abandoned)))
    })
}

// ---------------------------------------------------------------------------------------
// The mutex.

/// A named mutex: this handle's namespace entry, and the process's core of the object.
#[derive(Debug)]
pub struct Mutex {
    /// `Some` until dropped.
    core: Option<Arc<Core>>,
    // After the core, which may live on (ownership outlives the handle).
    entry: Entry,
    created: bool,
}

impl Mutex {
    pub(crate) fn create(
        ns: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
    ) -> Result<Mutex> {
        // A new state is all zeros: free, no slot claimed.
        let (entry, created) =
            create_entry::<MutexState>(ns, name, Kind::Mutex, opts, disposition, &mut |_| Ok(()))?;
        Self::attach(entry, created)
    }

    pub(crate) fn open(ns: &Namespace, name: &Name) -> Result<Mutex> {
        Self::attach(open_entry::<MutexState>(ns, name, Kind::Mutex)?, false)
    }

    fn attach(entry: Entry, created: bool) -> Result<Mutex> {
        let core = robust::attach(entry.fd(), entry.key())?;
        Ok(Mutex {
            core: Some(core),
            entry,
            created,
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

    #[inline]
    fn core(&self) -> &Core {
        self.core.as_deref().expect("a live mutex has its core")
    }

    /// The core, unless it was opened before this process (a fork child) was forked.
    #[inline]
    fn usable_core(&self) -> Result<&Core> {
        let core = self.core();
        if core.check_fork() {
            Ok(core)
        } else {
            Err(Error::InvalidArgument {
                what: format!(
                    "the handle of {} was opened before this process forked; open the mutex again in the child",
                    self.name()
                ),
            })
        }
    }

    fn waiter<'a>(&'a self, me: &Me<'_>) -> Result<MutexWait<'a>> {
        let core = self.usable_core()?;
        Ok(MutexWait {
            state: core.state(),
            me: core.id(),
            slot: core.slot(),
            recursive: core.owned_by(me),
        })
    }

    /// Books the calling thread as the owner once it took the lock word (or one more level
    /// if it already owned the mutex).
    #[inline]
    fn owned_now(&self, me: &Me<'_>, recursive: bool) -> Result<()> {
        let core = self.core();
        if !recursive {
            core.took(me);
        } else if !core.enter() {
            return Err(Error::InvalidArgument {
                what: format!(
                    "this thread holds {} {} times, the most there can be",
                    self.name(),
                    u32::MAX
                ),
            });
        }
        Ok(())
    }

    /// Locks, waiting until `deadline` (`None`: forever).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked> {
        if self.core().lock_fast() == Fast::Done {
            return Ok(Locked::Acquired);
        }
        self.lock_full(deadline)
    }

    /// Everything that the fast path leaves: a new thread, contention, errors.
    #[inline(never)]
    fn lock_full(&self, deadline: Option<Instant>) -> Result<Locked> {
        robust::with_thread(|me| {
            let core = self.usable_core()?;
            if core.owned_by(me) {
                self.owned_now(me, true)?;
                return Ok(Locked::Acquired);
            }
            let abandoned = match core.state().try_lock(core.id()) {
                Some(abandoned) => abandoned,
                None => {
                    let w = self.waiter(me)?;
                    match algo::wait_any(&[&w], &Futex, deadline) {
                        Some((_, how)) => how == Taken::Abandoned,
                        None => return Ok(Locked::TimedOut),
                    }
                }
            };
            core.took(me);
            Ok(if abandoned {
                Locked::Abandoned
            } else {
                Locked::Acquired
            })
        })
    }

    /// Releases one level of ownership (`ReleaseMutex`).
    #[inline]
    pub(crate) fn release(&self) -> Result<()> {
        match self.core().release_fast() {
            Fast::Done => Ok(()),
            Fast::Unlock => self.unlock_word(),
            Fast::Slow => self.release_full(),
        }
    }

    #[inline(never)]
    fn release_full(&self) -> Result<()> {
        robust::with_thread(|me| {
            let core = self.usable_core()?;
            if !core.owned_by(me) {
                return Err(Error::NotOwner {
                    name: self.name().to_string(),
                });
            }
            if core.leave(me) {
                self.unlock_word()?;
            }
            Ok(())
        })
    }

    /// Frees the lock word once this thread gave up the last level, waking the sleepers.
    #[inline(never)]
    fn unlock_word(&self) -> Result<()> {
        let core = self.core();
        core.state()
            .unlock(core.id(), &Futex)
            .map_err(|f| Error::Corrupt {
                path: self.os_path(),
                reason: format!(
                    "while this thread owned the mutex {}, something outside filemap changed its lock word to {:#010x}; it was released here and may now have another owner",
                    self.name(),
                    f.word
                ),
            })
    }
}

impl Drop for Mutex {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            robust::closing(core);
        }
    }
}

/// Reads the state of a synchronization object for `ls`/`info`, from its file.
pub(crate) fn read_state(fd: &OwnedFd, kind: Kind) -> Option<SyncState> {
    let region = map_state(fd, false).ok()?;
    Some(match kind {
        Kind::Event => {
            let s: &EventState = state_of(&region);
            SyncState::Event {
                set: s.is_set(),
                manual_reset: s.manual_reset(),
            }
        }
        Kind::Semaphore => {
            let s: &SemaphoreState = state_of(&region);
            SyncState::Semaphore {
                count: s.count(),
                max: s.max(),
            }
        }
        Kind::Mutex => {
            let s: &MutexState = state_of(&region);
            let word = s.lock.word.load(SeqCst);
            let owned = word & ID_MASK != 0;
            // Its owner died and nobody has taken it since: the next locker is told.
            let marked = !owned && word & OWNER_DIED != 0;
            let pid = s.owner_pid().filter(|_| owned || marked);
            // `owner_pid` gives only pids that a process can have (1 to `i32::MAX`).
            let gone = pid.is_some_and(|p| {
                rustix::process::Pid::from_raw(p as i32)
                    .is_none_or(|p| rustix::process::test_kill_process(p) == Err(Errno::SRCH))
            });
            SyncState::Mutex {
                owned,
                owner_pid: pid,
                abandoned: marked || (owned && gone),
            }
        }
        _ => return None,
    })
}
