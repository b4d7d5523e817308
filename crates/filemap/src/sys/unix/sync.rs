//! Named mutexes, semaphores and events on Linux.
//!
//! Each object is a namespace entry (same protocol, lifetime and permissions as mappings)
//! whose first page holds its state, mapped shared in every holder:
//!
//! - events and semaphores: the pure state machines of `sync/algo.rs`, parked on shared
//!   futexes (`futex_wait`, and `futex_waitv` for wait-for-any);
//! - mutexes: glibc's robust, recursive, process-shared pthread mutex. The kernel's robust
//!   futex list marks it when its owner dies, even by SIGKILL, and the next locker gets
//!   `EOWNERDEAD`, which is reported as abandoned. No one polls.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ffi::c_int;
use std::sync::atomic::{
    AtomicU32,
    Ordering::{Relaxed, SeqCst},
};
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::thread::futex;

use super::dir::NsDir;
use super::mapping::{map_state, Region};
use super::object::{Entry, NewObject};
use crate::sync::algo::{self, EventState, Parked, Parker, SemaphoreState, Waitable};
use crate::sys::{CreateOptions, Disposition, Locked};
use crate::{Error, Kind, Name, Namespace, Result, SyncState};

/// Shared futexes: no `FUTEX_PRIVATE_FLAG`, so they work across processes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Futex;

fn remaining(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then_some(Some(left))
        }
    }
}

fn timespec(d: Duration) -> futex::Timespec {
    futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// The absolute CLOCK_MONOTONIC time `left` from now.
fn monotonic_after(left: Duration) -> futex::Timespec {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
    timespec(now.saturating_add(left))
}

impl Parker for Futex {
    fn park(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Parked {
        let Some(left) = remaining(deadline) else {
            return Parked::TimedOut;
        };
        let ts = left.map(timespec);
        match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
            Err(Errno::TIMEDOUT) => Parked::TimedOut,
            // Woken, the word changed (EAGAIN), or a signal (EINTR): look again.
            _ => Parked::Woken,
        }
    }

    fn park_any(&self, words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Parked {
        let Some(left) = remaining(deadline) else {
            return Parked::TimedOut;
        };
        let waits: Vec<futex::Wait> = words
            .iter()
            .map(|(word, val)| {
                let mut w = futex::Wait::new();
                w.val = u64::from(*val);
                w.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
                w.flags = futex::WaitFlags::SIZE_U32;
                w
            })
            .collect();
        let abs = left.map(monotonic_after);
        match futex::waitv(
            &waits,
            futex::WaitvFlags::empty(),
            abs.as_ref(),
            rustix::time::ClockId::Monotonic,
        ) {
            Err(Errno::TIMEDOUT) => Parked::TimedOut,
            // Kernels before 5.16 have no futex_waitv: sleep on the first word for a short
            // while instead. Slower to notice the others, but correct.
            Err(Errno::NOSYS) => {
                let short = Some(Instant::now() + Duration::from_millis(2));
                let d = match deadline {
                    Some(d) if Some(d) < short => Some(d),
                    _ => short,
                };
                self.park(words[0].0, words[0].1, d);
                Parked::Woken
            }
            _ => Parked::Woken,
        }
    }

    fn unpark(&self, word: &AtomicU32, n: u32) {
        let _ = futex::wake(word, futex::Flags::empty(), n);
    }
}

/// State types that may be viewed in shared memory: `#[repr(C)]`, every byte inside an
/// atomic or an `UnsafeCell`, every bit pattern valid.
///
/// # Safety
///
/// Implementors must meet the description above.
unsafe trait SharedState: Sync {}

// SAFETY: only AtomicU32 fields.
unsafe impl SharedState for SemaphoreState {}
// SAFETY: only AtomicU32 fields.
unsafe impl SharedState for EventState {}
// SAFETY: AtomicU32 fields and an UnsafeCell of plain bytes, used only through pthread.
unsafe impl SharedState for MutexState {}

/// The part every synchronization object has: its entry and its mapped state page.
#[derive(Debug)]
struct Shared {
    // The mapping goes before the entry that keeps the object alive.
    region: Region,
    entry: Entry,
    created: bool,
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
        let dir = NsDir::for_create(ns, name)?;
        let size = std::mem::size_of::<T>() as u64;
        let new = NewObject {
            kind,
            flags: opts.record_flags(),
            size,
            data_len: size,
            init: &[],
            mode: opts.mode,
        };
        let mut init = Some(init);
        let mut mapped = None;
        let (entry, created) = Entry::create(dir, name, &new, disposition, &mut |fd: &OwnedFd| {
            let region = map_state(fd, true)?;
            if let Some(init) = init.take() {
                init(state_of(&region))?;
            }
            mapped = Some(region);
            Ok(())
        })?;
        let region = match mapped.filter(|_| created) {
            Some(region) => region,
            None => Self::check_and_map::<T>(&entry)?,
        };
        Ok(Shared {
            region,
            entry,
            created,
        })
    }

    fn open<T: SharedState>(ns: &Namespace, name: &Name, kind: Kind) -> Result<Shared> {
        let dir = NsDir::for_open(ns, name, kind)?;
        let entry = Entry::open(dir, name, kind, true)?;
        let region = Self::check_and_map::<T>(&entry)?;
        Ok(Shared {
            region,
            entry,
            created: false,
        })
    }

    fn check_and_map<T: SharedState>(entry: &Entry) -> Result<Region> {
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
        map_state(entry.fd(), true)
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

    pub(crate) fn set(&self) {
        self.state().set(&Futex);
    }

    pub(crate) fn reset(&self) {
        self.state().reset();
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
}

/// Waits for any of `objects`; `None` on timeout.
pub(crate) fn wait_any(objects: &[WaitRef<'_>], deadline: Option<Instant>) -> Option<usize> {
    let states: Vec<&dyn Waitable> = objects
        .iter()
        .map(|o| match o {
            WaitRef::Event(e) => e.state() as &dyn Waitable,
            WaitRef::Semaphore(s) => s.state() as &dyn Waitable,
        })
        .collect();
    algo::wait_any(&states, &Futex, deadline)
}

// ---------------------------------------------------------------------------------------
// The mutex: glibc's robust, recursive, process-shared pthread mutex.

/// Room for a `pthread_mutex_t` (40 bytes on x86_64, 48 on aarch64 glibc).
#[repr(C, align(8))]
struct RawMutex([u8; 64]);

#[repr(C, align(8))]
struct RawMutexAttr([u8; 16]);

#[repr(C)]
struct CTimespec {
    tv_sec: std::ffi::c_long,
    tv_nsec: std::ffi::c_long,
}

extern "C" {
    fn pthread_mutexattr_init(attr: *mut RawMutexAttr) -> c_int;
    fn pthread_mutexattr_settype(attr: *mut RawMutexAttr, kind: c_int) -> c_int;
    fn pthread_mutexattr_setpshared(attr: *mut RawMutexAttr, pshared: c_int) -> c_int;
    fn pthread_mutexattr_setrobust(attr: *mut RawMutexAttr, robust: c_int) -> c_int;
    fn pthread_mutexattr_destroy(attr: *mut RawMutexAttr) -> c_int;
    fn pthread_mutex_init(m: *mut RawMutex, attr: *const RawMutexAttr) -> c_int;
    fn pthread_mutex_lock(m: *mut RawMutex) -> c_int;
    fn pthread_mutex_trylock(m: *mut RawMutex) -> c_int;
    #[cfg(target_env = "gnu")]
    fn pthread_mutex_clocklock(m: *mut RawMutex, clock: c_int, abstime: *const CTimespec) -> c_int;
    #[cfg(not(target_env = "gnu"))]
    fn pthread_mutex_timedlock(m: *mut RawMutex, abstime: *const CTimespec) -> c_int;
    fn pthread_mutex_unlock(m: *mut RawMutex) -> c_int;
    fn pthread_mutex_consistent(m: *mut RawMutex) -> c_int;
}

const PTHREAD_MUTEX_RECURSIVE: c_int = 1;
const PTHREAD_PROCESS_SHARED: c_int = 1;
const PTHREAD_MUTEX_ROBUST: c_int = 1;
#[cfg(target_env = "gnu")]
const CLOCK_MONOTONIC: c_int = 1;

/// The shared state of a mutex: 80 bytes.
#[repr(C)]
pub(crate) struct MutexState {
    /// The owner's pid and thread id, for `ls`/`info` and for `release` checks. Written only
    /// by the owner while it holds the lock; a dead owner's values stay until the next lock.
    owner_pid: AtomicU32,
    owner_tid: AtomicU32,
    /// Recursion depth of the owner.
    depth: AtomicU32,
    reserved: AtomicU32,
    raw: UnsafeCell<RawMutex>,
}

const _: () = assert!(std::mem::size_of::<MutexState>() == 80);

// SAFETY: the raw mutex is only touched through pthread calls, which synchronise.
unsafe impl Sync for MutexState {}

impl std::fmt::Debug for MutexState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexState")
            .field("owner_pid", &self.owner_pid)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

fn check(rc: c_int, what: &str) -> Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(Error::io(what.to_owned(), Errno::from_raw_os_error(e))),
    }
}

/// Incremented in the child after every `fork`, so that cached ids are refreshed.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Relaxed);
}

extern "C" {
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> c_int;
}

thread_local! {
    /// (fork generation, pid, tid) of this thread, computed once.
    static IDS: std::cell::Cell<(u32, u32, u32)> = const { std::cell::Cell::new((u32::MAX, 0, 0)) };
}

/// This process's pid and this thread's tid, without a system call after the first use
/// (both are needed on every lock and release).
fn ids() -> (u32, u32) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: registering a handler that only increments an atomic, which is
    // async-signal-safe as a child-side fork handler must be.
    REGISTER.call_once(|| unsafe {
        pthread_atfork(None, None, Some(after_fork_in_child));
    });
    let generation = FORKS.load(Relaxed);
    IDS.with(|cell| {
        let (g, pid, tid) = cell.get();
        if g == generation {
            return (pid, tid);
        }
        let pid = rustix::process::getpid().as_raw_pid() as u32;
        let tid = rustix::thread::gettid().as_raw_pid() as u32;
        cell.set((generation, pid, tid));
        (pid, tid)
    })
}

/// A named mutex.
#[derive(Debug)]
pub(crate) struct Mutex(Shared);

impl Mutex {
    pub(crate) fn create(
        ns: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
    ) -> Result<Mutex> {
        Shared::create::<MutexState>(ns, name, Kind::Mutex, opts, disposition, |s| {
            let mut attr = RawMutexAttr([0; 16]);
            // SAFETY: `attr` is writable and large enough for glibc's and musl's
            // pthread_mutexattr_t; `s.raw` is a fresh mutex in memory that no one else
            // can reach yet (the object has no name), large and aligned enough.
            unsafe {
                check(pthread_mutexattr_init(&mut attr), "initialising a mutex")?;
                let r = (|| {
                    check(
                        pthread_mutexattr_settype(&mut attr, PTHREAD_MUTEX_RECURSIVE),
                        "making a mutex recursive",
                    )?;
                    check(
                        pthread_mutexattr_setpshared(&mut attr, PTHREAD_PROCESS_SHARED),
                        "sharing a mutex",
                    )?;
                    check(
                        pthread_mutexattr_setrobust(&mut attr, PTHREAD_MUTEX_ROBUST),
                        "making a mutex robust",
                    )?;
                    check(
                        pthread_mutex_init(s.raw.get(), &attr),
                        "initialising a mutex",
                    )
                })();
                pthread_mutexattr_destroy(&mut attr);
                r
            }
        })
        .map(Mutex)
    }

    pub(crate) fn open(ns: &Namespace, name: &Name) -> Result<Mutex> {
        Shared::open::<MutexState>(ns, name, Kind::Mutex).map(Mutex)
    }

    common_methods!();

    fn state(&self) -> &MutexState {
        self.0.state()
    }

    /// Locks, waiting until `deadline` (`None`: forever).
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked> {
        let s = self.state();
        let raw = s.raw.get();
        let rc = match remaining(deadline) {
            // SAFETY: `raw` is an initialised process-shared mutex in our live mapping.
            Some(None) => unsafe { pthread_mutex_lock(raw) },
            // SAFETY: as above.
            None => unsafe { pthread_mutex_trylock(raw) },
            Some(Some(left)) => {
                let abs = monotonic_after(left);
                let abs = CTimespec {
                    tv_sec: abs.tv_sec as std::ffi::c_long,
                    tv_nsec: abs.tv_nsec as std::ffi::c_long,
                };
                #[cfg(target_env = "gnu")]
                // SAFETY: as above; `abs` is a valid timespec for the call.
                let rc = unsafe { pthread_mutex_clocklock(raw, CLOCK_MONOTONIC, &abs) };
                #[cfg(not(target_env = "gnu"))]
                // SAFETY: as above; other libcs time out on CLOCK_REALTIME.
                let rc = unsafe {
                    let real = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
                    let real = Duration::new(real.tv_sec as u64, real.tv_nsec as u32) + left;
                    let abs = CTimespec {
                        tv_sec: real.as_secs() as _,
                        tv_nsec: real.subsec_nanos() as _,
                    };
                    pthread_mutex_timedlock(raw, &abs)
                };
                rc
            }
        };
        let abandoned = match rc {
            0 => false,
            rc => match Errno::from_raw_os_error(rc) {
                Errno::OWNERDEAD => {
                    // The owner died holding it. Mark it consistent: Windows hands an abandoned
                    // mutex to the next waiter in working order.
                    // SAFETY: we own the mutex now (EOWNERDEAD means acquired).
                    let rc = unsafe { pthread_mutex_consistent(raw) };
                    check(rc, "recovering an abandoned mutex")?;
                    true
                }
                Errno::BUSY | Errno::TIMEDOUT => return Ok(Locked::TimedOut),
                Errno::NOTRECOVERABLE => {
                    return Err(Error::Corrupt {
                        path: self.os_path(),
                        reason: "the mutex was left unrecoverable by a process outside filemap"
                            .into(),
                    })
                }
                e => return Err(Error::io(format!("locking {}", self.name()), e)),
            },
        };
        // The owner fields are written only by the owner, under the mutex, which orders
        // them; other readers (ls, info) only need a recent value.
        let depth = if abandoned {
            1
        } else {
            s.depth.load(Relaxed) + 1
        };
        s.depth.store(depth, Relaxed);
        if depth == 1 {
            let (pid, tid) = ids();
            s.owner_pid.store(pid, Relaxed);
            s.owner_tid.store(tid, Relaxed);
        }
        Ok(if abandoned {
            Locked::Abandoned
        } else {
            Locked::Acquired
        })
    }

    /// Releases one level of ownership (`ReleaseMutex`).
    pub(crate) fn release(&self) -> Result<()> {
        let s = self.state();
        let (pid, me) = ids();
        let depth = s.depth.load(Relaxed);
        if s.owner_tid.load(Relaxed) != me || s.owner_pid.load(Relaxed) != pid || depth == 0 {
            return Err(Error::NotOwner {
                name: self.name().to_string(),
            });
        }
        s.depth.store(depth - 1, Relaxed);
        if depth == 1 {
            s.owner_tid.store(0, Relaxed);
            s.owner_pid.store(0, Relaxed);
        }
        // SAFETY: `raw` is an initialised mutex in our live mapping, owned by this thread.
        match unsafe { pthread_mutex_unlock(s.raw.get()) } {
            0 => Ok(()),
            _ => Err(Error::NotOwner {
                name: self.name().to_string(),
            }),
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
            let pid = s.owner_pid.load(SeqCst);
            let owner = (pid != 0).then_some(pid);
            let alive = owner.is_some_and(|p| {
                rustix::process::Pid::from_raw(p as i32)
                    .is_some_and(|p| rustix::process::test_kill_process(p) != Err(Errno::SRCH))
            });
            SyncState::Mutex {
                owned: owner.is_some(),
                owner_pid: owner,
                abandoned: owner.is_some() && !alive,
            }
        }
        _ => return None,
    })
}
