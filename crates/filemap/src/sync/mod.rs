//! Named mutexes, semaphores and events, and waiting for any of several.
//!
//! They share the one namespace with mappings (a name held by one kind cannot be taken by
//! another), and follow the same lifetime: an object lives while any process holds a
//! handle, also after SIGKILL of every holder, unless it was created persistent.
//!
//! Waiting takes no CPU: on Linux, threads sleep on shared futexes (`futex_waitv` for
//! [`wait_any`]). The mutex is filemap's own robust mutex, whose owner's death the kernel
//! reports through a robust list kept in private memory (see `docs/mutex.md`).

pub(crate) mod algo;

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sys::{self, Disposition};
use crate::{Error, Name, Options, Result};

#[inline]
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

fn timed_out(what: &Name) -> Error {
    Error::Timeout {
        what: what.to_string(),
    }
}

impl Options {
    /// Creates a mutex (`CreateMutex`), failing if a live one has the name.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`], [`Error::KindMismatch`], naming and mode errors.
    #[doc(alias = "CreateMutexW")]
    #[doc(alias = "CreateMutex")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create_mutex(&self, name: &str) -> Result<Mutex> {
        self.mutex(name, Disposition::CreateNew)
    }

    /// Opens the mutex or creates it; [`Mutex::already_existed`] tells which.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_mutex`], less [`Error::AlreadyExists`].
    #[doc(alias = "CreateMutexW")]
    #[doc(alias = "CreateMutex")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create_mutex(&self, name: &str) -> Result<Mutex> {
        self.mutex(name, Disposition::OpenOrCreate)
    }

    /// Opens an existing mutex (`OpenMutex`).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::KindMismatch`], [`Error::PermissionDenied`] (waiting
    /// needs read-write access to the object).
    #[doc(alias = "OpenMutexW")]
    #[doc(alias = "OpenMutex")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_mutex(&self, name: &str) -> Result<Mutex> {
        let name = Name::parse(name)?;
        Ok(Mutex {
            inner: sys::Mutex::open(self.namespace_ref(), &name)?,
        })
    }

    fn mutex(&self, name: &str, disposition: Disposition) -> Result<Mutex> {
        let name = Name::parse(name)?;
        let opts = self.create_options()?;
        Ok(Mutex {
            inner: sys::Mutex::create(self.namespace_ref(), &name, opts, disposition)?,
        })
    }

    /// Creates a semaphore with an initial and a maximum count (`CreateSemaphore`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `max` is 0 or `initial > max`; as for
    /// [`Options::create_mutex`].
    #[doc(alias = "CreateSemaphoreW")]
    #[doc(alias = "CreateSemaphore")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create_semaphore(&self, name: &str, initial: u32, max: u32) -> Result<Semaphore> {
        self.semaphore(name, initial, max, Disposition::CreateNew)
    }

    /// Opens the semaphore or creates it; an existing one keeps its counts.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_semaphore`], less [`Error::AlreadyExists`].
    #[doc(alias = "CreateSemaphoreW")]
    #[doc(alias = "CreateSemaphore")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create_semaphore(
        &self,
        name: &str,
        initial: u32,
        max: u32,
    ) -> Result<Semaphore> {
        self.semaphore(name, initial, max, Disposition::OpenOrCreate)
    }

    /// Opens an existing semaphore (`OpenSemaphore`).
    ///
    /// # Errors
    ///
    /// As for [`Options::open_mutex`].
    #[doc(alias = "OpenSemaphoreW")]
    #[doc(alias = "OpenSemaphore")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_semaphore(&self, name: &str) -> Result<Semaphore> {
        let name = Name::parse(name)?;
        Ok(Semaphore {
            inner: sys::Semaphore::open(self.namespace_ref(), &name)?,
        })
    }

    fn semaphore(
        &self,
        name: &str,
        initial: u32,
        max: u32,
        disposition: Disposition,
    ) -> Result<Semaphore> {
        let name = Name::parse(name)?;
        if max == 0 {
            return Err(Error::InvalidArgument {
                what: "a semaphore's maximum count must be at least 1".into(),
            });
        }
        // Windows counts in a LONG; the same limit everywhere.
        if max > Semaphore::MAX_COUNT {
            return Err(Error::InvalidArgument {
                what: format!(
                    "a semaphore's maximum count is at most {} (Windows' LONG), not {max}",
                    Semaphore::MAX_COUNT
                ),
            });
        }
        if initial > max {
            return Err(Error::InvalidArgument {
                what: format!("the initial count {initial} is above the maximum count {max}"),
            });
        }
        let opts = self.create_options()?;
        Ok(Semaphore {
            inner: sys::Semaphore::create(
                self.namespace_ref(),
                &name,
                opts,
                disposition,
                initial,
                max,
            )?,
        })
    }

    /// Creates an event (`CreateEvent`): manual-reset or auto-reset, set or not.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_mutex`].
    #[doc(alias = "CreateEventW")]
    #[doc(alias = "CreateEvent")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create_event(
        &self,
        name: &str,
        manual_reset: bool,
        initially_set: bool,
    ) -> Result<Event> {
        self.event(name, manual_reset, initially_set, Disposition::CreateNew)
    }

    /// Opens the event or creates it; an existing one keeps its kind and state.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_mutex`], less [`Error::AlreadyExists`].
    #[doc(alias = "CreateEventW")]
    #[doc(alias = "CreateEvent")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create_event(
        &self,
        name: &str,
        manual_reset: bool,
        initially_set: bool,
    ) -> Result<Event> {
        self.event(name, manual_reset, initially_set, Disposition::OpenOrCreate)
    }

    /// Opens an existing event (`OpenEvent`).
    ///
    /// # Errors
    ///
    /// As for [`Options::open_mutex`].
    #[doc(alias = "OpenEventW")]
    #[doc(alias = "OpenEvent")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_event(&self, name: &str) -> Result<Event> {
        let name = Name::parse(name)?;
        Ok(Event {
            inner: sys::Event::open(self.namespace_ref(), &name)?,
        })
    }

    fn event(
        &self,
        name: &str,
        manual_reset: bool,
        initially_set: bool,
        disposition: Disposition,
    ) -> Result<Event> {
        let name = Name::parse(name)?;
        let opts = self.create_options()?;
        Ok(Event {
            inner: sys::Event::create(
                self.namespace_ref(),
                &name,
                opts,
                disposition,
                manual_reset,
                initially_set,
            )?,
        })
    }
}

/// The accessors that every synchronization object has.
macro_rules! named_object {
    ($t:ident) => {
        impl $t {
            /// The name.
            pub fn name(&self) -> &Name {
                self.inner.name()
            }

            /// Whether `open_or_create` found it already there (`ERROR_ALREADY_EXISTS`).
            pub fn already_existed(&self) -> bool {
                !self.inner.created()
            }

            /// The object's file in the namespace (on Windows, its kernel name).
            pub fn os_path(&self) -> PathBuf {
                self.inner.os_path()
            }
        }
    };
}

named_object!(Mutex);
named_object!(Semaphore);
named_object!(Event);

/// Waits for one event or semaphore, and takes it.
fn wait_one(object: &dyn Waitable, timeout: Option<Duration>) -> Result<()> {
    match sys::wait_any(&[object], deadline(timeout))? {
        Some(_) => Ok(()),
        None => Err(timed_out(sealed::Sealed::name(object))),
    }
}

/// A named, cross-process, recursive mutex (`CreateMutex`), robust to its owner's death.
///
/// If the thread that owns it dies (its process killed by SIGKILL, say, or the thread
/// exiting), the next thread to lock it gets it as [`Lock::Abandoned`], like Windows'
/// `WAIT_ABANDONED`, and can repair the data it guards. The owning thread may lock it again;
/// it must release it as many times.
///
/// As on Windows, ownership belongs to the thread, not to the handle: dropping the handle
/// (or forgetting the guard) does not release the mutex. The thread keeps it until it
/// releases it through another handle, or exits, which abandons it.
///
/// ```
/// # fn main() -> filemap::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("filemap-doc-mutex-{}", std::process::id()));
/// let opts = filemap::Options::new().namespace(filemap::Namespace::at(&dir)).clone();
/// let mutex = opts.open_or_create_mutex("Local\\counter-lock")?;
/// let lock = mutex.lock()?;
/// if lock.is_abandoned() {
///     // The previous owner died while holding it: check the data it guards.
/// }
/// drop(lock); // released
/// # drop(mutex); std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Mutex {
    inner: sys::Mutex,
}

/// The outcome of a successful lock.
#[must_use = "an abandoned mutex means the data it guards may be inconsistent"]
#[derive(Debug)]
pub enum Lock<'a> {
    /// Acquired normally.
    Acquired(MutexGuard<'a>),
    /// Acquired, but its previous owner died holding it (`WAIT_ABANDONED`).
    Abandoned(MutexGuard<'a>),
}

impl<'a> Lock<'a> {
    /// Whether the previous owner died holding the mutex.
    pub fn is_abandoned(&self) -> bool {
        matches!(self, Lock::Abandoned(_))
    }

    /// The guard, whichever way the lock was acquired.
    pub fn guard(self) -> MutexGuard<'a> {
        match self {
            Lock::Acquired(g) | Lock::Abandoned(g) => g,
        }
    }
}

/// Holds a [`Mutex`]; releases it when dropped. It cannot move to another thread: a mutex
/// is released by the thread that owns it.
#[must_use = "dropping the guard releases the mutex at once"]
pub struct MutexGuard<'a> {
    mutex: &'a Mutex,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for MutexGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("mutex", self.mutex.name())
            .finish()
    }
}

impl Drop for MutexGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.mutex.inner.release();
    }
}

impl Mutex {
    /// [`Options::create_mutex`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_mutex`].
    #[doc(alias = "CreateMutex")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create(name: &str) -> Result<Mutex> {
        Options::new().create_mutex(name)
    }

    /// [`Options::open_or_create_mutex`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_or_create_mutex`].
    #[doc(alias = "CreateMutex")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create(name: &str) -> Result<Mutex> {
        Options::new().open_or_create_mutex(name)
    }

    /// [`Options::open_mutex`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_mutex`].
    #[doc(alias = "OpenMutex")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open(name: &str) -> Result<Mutex> {
        Options::new().open_mutex(name)
    }

    /// Waits for the mutex, up to `timeout` (`None`: forever), and takes one level of
    /// ownership without a guard, like `WaitForSingleObject`. Returns whether it was
    /// abandoned. Release it with [`Mutex::release`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`].
    #[inline]
    #[doc(alias = "WaitForSingleObject")]
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool> {
        match self.inner.lock(deadline(timeout))? {
            sys::Locked::Acquired => Ok(false),
            sys::Locked::Abandoned => Ok(true),
            sys::Locked::TimedOut => Err(timed_out(self.name())),
        }
    }

    /// Releases one level of ownership (`ReleaseMutex`).
    ///
    /// # Errors
    ///
    /// [`Error::NotOwner`] if this thread does not own the mutex.
    #[inline]
    #[doc(alias = "ReleaseMutex")]
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    #[inline]
    fn lock_within(&self, timeout: Option<Duration>) -> Result<Lock<'_>> {
        let abandoned = self.acquire(timeout)?;
        let guard = MutexGuard {
            mutex: self,
            _not_send: PhantomData,
        };
        Ok(if abandoned {
            Lock::Abandoned(guard)
        } else {
            Lock::Acquired(guard)
        })
    }

    /// Waits as long as it takes and locks.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if another process wrote into the mutex's state what no filemap
    /// mutex holds (Linux; the state is checked, never trusted).
    #[inline]
    #[doc(alias = "WaitForSingleObject")]
    pub fn lock(&self) -> Result<Lock<'_>> {
        self.lock_within(None)
    }

    /// Locks if that is possible at once.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if another thread owns it.
    #[doc(alias = "WaitForSingleObject")]
    pub fn try_lock(&self) -> Result<Lock<'_>> {
        self.lock_within(Some(Duration::ZERO))
    }

    /// Waits up to `timeout` and locks.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`].
    #[doc(alias = "WaitForSingleObject")]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Lock<'_>> {
        self.lock_within(Some(timeout))
    }
}

/// A named, cross-process counting semaphore (`CreateSemaphore`).
#[derive(Debug)]
pub struct Semaphore {
    inner: sys::Semaphore,
}

impl Semaphore {
    /// The largest maximum count, on every platform: 2147483647, Windows' `LONG`. A larger
    /// maximum is [`Error::InvalidArgument`].
    pub const MAX_COUNT: u32 = i32::MAX as u32;

    /// [`Options::create_semaphore`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_semaphore`].
    #[doc(alias = "CreateSemaphore")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create(name: &str, initial: u32, max: u32) -> Result<Semaphore> {
        Options::new().create_semaphore(name, initial, max)
    }

    /// [`Options::open_or_create_semaphore`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_or_create_semaphore`].
    #[doc(alias = "CreateSemaphore")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create(name: &str, initial: u32, max: u32) -> Result<Semaphore> {
        Options::new().open_or_create_semaphore(name, initial, max)
    }

    /// [`Options::open_semaphore`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_semaphore`].
    #[doc(alias = "OpenSemaphore")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open(name: &str) -> Result<Semaphore> {
        Options::new().open_semaphore(name)
    }

    /// The current count (a snapshot).
    pub fn count(&self) -> u32 {
        self.inner.count()
    }

    /// The maximum count.
    pub fn max(&self) -> u32 {
        self.inner.max()
    }

    /// Adds `n` to the count (`ReleaseSemaphore`) and returns the previous count.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyPosts`] if the count would pass the maximum (which no `n` above
    /// [`Semaphore::MAX_COUNT`] can fail to do); the count is unchanged.
    #[doc(alias = "ReleaseSemaphore")]
    pub fn release(&self, n: u32) -> Result<u32> {
        if n > Semaphore::MAX_COUNT {
            return Err(Error::TooManyPosts {
                name: self.name().to_string(),
                count: self.count(),
                max: self.max(),
                release: n,
            });
        }
        self.inner.release(n)
    }

    /// Waits until the count is above 0 and decrements it.
    ///
    /// # Errors
    ///
    /// None in normal use: it waits as long as it takes. An I/O error if the OS refuses the
    /// wait.
    #[doc(alias = "WaitForSingleObject")]
    pub fn acquire(&self) -> Result<()> {
        wait_one(self, None)
    }

    /// Decrements the count if it is above 0.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the count is 0.
    #[doc(alias = "WaitForSingleObject")]
    pub fn try_acquire(&self) -> Result<()> {
        wait_one(self, Some(Duration::ZERO))
    }

    /// Waits up to `timeout` to decrement the count.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`].
    #[doc(alias = "WaitForSingleObject")]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        wait_one(self, Some(timeout))
    }
}

/// A named, cross-process event (`CreateEvent`), manual-reset or auto-reset.
///
/// A manual-reset event, once set, releases every waiter until it is reset. An auto-reset
/// event releases exactly one waiter per [`Event::set`], and that waiter resets it.
#[derive(Debug)]
pub struct Event {
    inner: sys::Event,
}

impl Event {
    /// [`Options::create_event`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_event`].
    #[doc(alias = "CreateEvent")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create(name: &str, manual_reset: bool, initially_set: bool) -> Result<Event> {
        Options::new().create_event(name, manual_reset, initially_set)
    }

    /// [`Options::open_or_create_event`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_or_create_event`].
    #[doc(alias = "CreateEvent")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create(name: &str, manual_reset: bool, initially_set: bool) -> Result<Event> {
        Options::new().open_or_create_event(name, manual_reset, initially_set)
    }

    /// [`Options::open_event`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_event`].
    #[doc(alias = "OpenEvent")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open(name: &str) -> Result<Event> {
        Options::new().open_event(name)
    }

    /// Signals it (`SetEvent`).
    ///
    /// # Errors
    ///
    /// On Windows, what `SetEvent` reports (a handle without `EVENT_MODIFY_STATE`, say);
    /// on Linux it cannot fail.
    #[doc(alias = "SetEvent")]
    pub fn set(&self) -> Result<()> {
        self.inner.set()
    }

    /// Clears it (`ResetEvent`).
    ///
    /// # Errors
    ///
    /// As for [`Event::set`].
    #[doc(alias = "ResetEvent")]
    pub fn reset(&self) -> Result<()> {
        self.inner.reset()
    }

    /// Whether it is signalled now (a snapshot).
    pub fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    /// Whether it is a manual-reset event.
    pub fn is_manual_reset(&self) -> bool {
        self.inner.manual_reset()
    }

    /// Waits until it is signalled (and resets it, if it is auto-reset).
    ///
    /// # Errors
    ///
    /// As for [`Semaphore::acquire`].
    #[doc(alias = "WaitForSingleObject")]
    pub fn wait(&self) -> Result<()> {
        wait_one(self, None)
    }

    /// Takes it if it is signalled now.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if it is not.
    #[doc(alias = "WaitForSingleObject")]
    pub fn try_wait(&self) -> Result<()> {
        wait_one(self, Some(Duration::ZERO))
    }

    /// Waits up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`].
    #[doc(alias = "WaitForSingleObject")]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        wait_one(self, Some(timeout))
    }
}

pub(crate) mod sealed {
    use crate::sys;

    pub trait Sealed {
        fn wait_ref(&self) -> sys::WaitRef<'_>;
        fn name(&self) -> &crate::Name;
    }

    macro_rules! sync_objects {
        ($($t:ident),*) => {$(
            impl Sealed for super::$t {
                fn wait_ref(&self) -> sys::WaitRef<'_> {
                    sys::WaitRef::$t(&self.inner)
                }
                fn name(&self) -> &crate::Name {
                    self.inner.name()
                }
            }
        )*};
    }

    macro_rules! channel_ends {
        ($($t:ident),*) => {$(
            impl Sealed for crate::$t {
                fn wait_ref(&self) -> sys::WaitRef<'_> {
                    sys::WaitRef::Channel(self.readiness())
                }
                fn name(&self) -> &crate::Name {
                    crate::$t::name(self)
                }
            }
        )*};
    }

    sync_objects!(Event, Semaphore, Mutex);
    channel_ends!(Receiver, Subscriber, LatestReader, RpcServer, RpcClient);
}

/// Objects that [`wait_any`] can wait for: [`Event`], [`Semaphore`], [`Mutex`], and every
/// receiving side of a channel, ready when its receive would not wait: a stream's
/// [`Receiver`](crate::Receiver) and a broadcast's [`Subscriber`](crate::Subscriber) (a
/// message is there, or the writer has gone), a [`LatestReader`](crate::LatestReader) (a
/// value newer than the last it read, or the writer has gone), an
/// [`RpcServer`](crate::RpcServer) (a request waits) and an [`RpcClient`](crate::RpcClient)
/// (the reply has come, the server has gone, or no request is pending). Nothing is taken
/// from a channel: receive after the wait.
pub trait Waitable: sealed::Sealed {}

impl Waitable for Event {}
impl Waitable for Semaphore {}
impl Waitable for Mutex {}
impl Waitable for crate::Receiver {}
impl Waitable for crate::Subscriber {}
impl Waitable for crate::RpcServer {}
impl Waitable for crate::LatestReader {}
impl Waitable for crate::RpcClient {}

/// Which object [`wait_any`] took, like the `WAIT_OBJECT_0 + i` and `WAIT_ABANDONED_0 + i`
/// results of `WaitForMultipleObjects`.
#[must_use = "a mutex that wait_any took is owned by this thread until it is released, and an abandoned one may guard inconsistent data"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// The object at this index was signalled and taken: a semaphore decremented, an
    /// auto-reset event reset, or a mutex acquired (`WAIT_OBJECT_0 + i`).
    Signalled(usize),
    /// The mutex at this index was acquired, but its previous owner died holding it
    /// (`WAIT_ABANDONED_0 + i`).
    Abandoned(usize),
}

impl WaitOutcome {
    /// The index of the object that was taken.
    pub fn index(self) -> usize {
        match self {
            WaitOutcome::Signalled(i) | WaitOutcome::Abandoned(i) => i,
        }
    }

    /// Whether it was a mutex whose previous owner died holding it.
    pub fn is_abandoned(self) -> bool {
        matches!(self, WaitOutcome::Abandoned(_))
    }
}

/// The most objects [`wait_any`] takes, as Windows' `MAXIMUM_WAIT_OBJECTS`.
pub const MAX_WAIT_OBJECTS: usize = 64;
const _: () = assert!(MAX_WAIT_OBJECTS == algo::MAX_OBJECTS);

/// Waits until any of `objects` is signalled, takes it and says which, like
/// `WaitForMultipleObjects` with `bWaitAll = FALSE`: a semaphore is decremented, an
/// auto-reset event reset, and a mutex acquired (it is then owned by the calling thread,
/// which releases it with [`Mutex::release`]; a mutex it owns already is taken again at
/// once). When several are signalled, the lowest index wins.
///
/// A mutex whose owner died holding it is reported as [`WaitOutcome::Abandoned`] with its
/// index, and is owned by the caller as well.
///
/// On Linux this is one `futex_waitv` call (Linux 5.16 and later): no threads and no
/// polling.
///
/// ```
/// # fn main() -> filemap::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("filemap-doc-any-{}", std::process::id()));
/// use std::time::Duration;
/// use filemap::WaitOutcome;
/// let opts = filemap::Options::new().namespace(filemap::Namespace::at(&dir)).clone();
/// let quit = opts.create_event("Local\\quit", true, false)?;
/// let jobs = opts.create_semaphore("Local\\jobs", 0, 100)?;
/// jobs.release(1)?;
/// assert_eq!(filemap::wait_any(&[&quit, &jobs], Some(Duration::from_secs(1)))?, WaitOutcome::Signalled(1));
///
/// // Lock a mutex, or stop when quit is set.
/// let lock = opts.create_mutex("Local\\lock")?;
/// match filemap::wait_any(&[&quit, &lock], None)? {
///     WaitOutcome::Signalled(0) => println!("quit"),
///     outcome => {
///         if outcome.is_abandoned() {
///             // The previous owner died holding it: repair what it guards.
///         }
///         lock.release()?;
///     }
/// }
/// # drop((quit, jobs, lock)); std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Timeout`]; [`Error::InvalidArgument`] for no objects or more than
/// [`MAX_WAIT_OBJECTS`].
#[doc(alias = "WaitForMultipleObjects")]
pub fn wait_any(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<WaitOutcome> {
    if objects.is_empty() || objects.len() > MAX_WAIT_OBJECTS {
        return Err(Error::InvalidArgument {
            what: format!(
                "wait_any takes 1 to {MAX_WAIT_OBJECTS} objects, not {}",
                objects.len()
            ),
        });
    }
    match sys::wait_any(objects, deadline(timeout))? {
        Some((i, false)) => Ok(WaitOutcome::Signalled(i)),
        Some((i, true)) => Ok(WaitOutcome::Abandoned(i)),
        None => Err(Error::Timeout {
            what: format!("any of {} objects", objects.len()),
        }),
    }
}
