//! Synchronization objects: kernel mutexes, semaphores and events, and waiting for any
//! of them.

use std::path::PathBuf;
use std::time::Instant;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_NOT_OWNER, ERROR_TOO_MANY_POSTS, HANDLE, WAIT_ABANDONED_0,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, CreateMutexW, CreateSemaphoreW, OpenEventW, OpenMutexW, OpenSemaphoreW,
    ReleaseMutex, ReleaseSemaphore, ResetEvent, SetEvent, WaitForMultipleObjects,
    WaitForSingleObject, EVENT_ALL_ACCESS, INFINITE, MUTEX_ALL_ACCESS, SEMAPHORE_ALL_ACCESS,
};

use super::object::*;
use crate::sys::{CreateOptions, Disposition, Locked};
use crate::{Error, Kind, Name, Namespace, Result, SyncState};

/// Milliseconds to wait until `deadline` (`INFINITE` for none), capped below `INFINITE`.
pub(super) fn millis(deadline: Option<Instant>) -> u32 {
    match deadline {
        None => INFINITE,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
            ms.min(u128::from(INFINITE - 1)) as u32
        }
    }
}

macro_rules! common_methods {
    () => {
        pub(crate) fn name(&self) -> &Name {
            &self.name
        }

        pub(crate) fn created(&self) -> bool {
            self.created
        }

        pub(crate) fn os_path(&self) -> PathBuf {
            PathBuf::from(self.name.to_string())
        }
    };
}

#[derive(Debug)]
pub struct Mutex {
    handle: Handle,
    name: Name,
    created: bool,
}

impl Mutex {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
    ) -> Result<Mutex> {
        no_persistence(&opts)?;
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { CreateMutexW(std::ptr::null(), 0, w.as_ptr()) };
        let (handle, created) = created_handle(h, name, Kind::Mutex, disposition)?;
        Ok(Mutex {
            handle,
            name: name.clone(),
            created,
        })
    }

    pub(crate) fn open(_: &Namespace, name: &Name) -> Result<Mutex> {
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenMutexW(MUTEX_ALL_ACCESS, 0, w.as_ptr()) };
        Ok(Mutex {
            handle: opened_handle(h, name, Kind::Mutex)?,
            name: name.clone(),
            created: false,
        })
    }

    common_methods!();

    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked> {
        loop {
            let ms = millis(deadline);
            // SAFETY: a live mutex handle.
            let r = unsafe { WaitForSingleObject(self.handle.0, ms) };
            return match r {
                WAIT_OBJECT_0 => Ok(Locked::Acquired),
                WAIT_ABANDONED_0 => Ok(Locked::Abandoned),
                WAIT_TIMEOUT if deadline.is_some_and(|d| Instant::now() < d) => continue,
                WAIT_TIMEOUT => Ok(Locked::TimedOut),
                _ => Err(os_error(format!("waiting for {}", self.name), last_error())),
            };
        }
    }

    pub(crate) fn release(&self) -> Result<()> {
        // SAFETY: a live mutex handle.
        if unsafe { ReleaseMutex(self.handle.0) } == 0 {
            return Err(match last_error() {
                ERROR_NOT_OWNER => Error::NotOwner {
                    name: self.name.to_string(),
                },
                code => os_error(format!("releasing {}", self.name), code),
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Semaphore {
    handle: Handle,
    name: Name,
    created: bool,
}

/// `NtQuerySemaphore`'s basic information.
#[repr(C)]
pub(super) struct SemaphoreBasicInformation {
    current: i32,
    maximum: i32,
}

/// `NtQueryMutant`'s basic information.
#[repr(C)]
pub(super) struct MutantBasicInformation {
    /// 1 when free; 0 or less while owned (minus the recursion depth).
    current_count: i32,
    owned_by_caller: u8,
    abandoned: u8,
}

/// `NtQueryEvent`'s basic information.
#[repr(C)]
pub(super) struct EventBasicInformation {
    kind: u32,
    state: i32,
}

// Not in windows-sys: the queries of a mutant's, a semaphore's and an event's state.
#[link(name = "ntdll")]
extern "system" {
    fn NtQuerySemaphore(
        h: HANDLE,
        class: u32,
        info: *mut SemaphoreBasicInformation,
        len: u32,
        ret: *mut u32,
    ) -> i32;
    fn NtQueryMutant(
        h: HANDLE,
        class: u32,
        info: *mut MutantBasicInformation,
        len: u32,
        ret: *mut u32,
    ) -> i32;
    fn NtQueryEvent(
        h: HANDLE,
        class: u32,
        info: *mut EventBasicInformation,
        len: u32,
        ret: *mut u32,
    ) -> i32;
}

/// A semaphore's count and maximum; (0, 0) if the handle lacks SEMAPHORE_QUERY_STATE.
pub(super) fn query_semaphore(h: HANDLE) -> (u32, u32) {
    let mut info = SemaphoreBasicInformation {
        current: 0,
        maximum: 0,
    };
    // SAFETY: `info` is writable and of the size given; a failure leaves it zeroed.
    let status = unsafe {
        NtQuerySemaphore(
            h,
            0,
            &mut info,
            std::mem::size_of::<SemaphoreBasicInformation>() as u32,
            std::ptr::null_mut(),
        )
    };
    if status < 0 {
        return (0, 0);
    }
    (info.current.max(0) as u32, info.maximum.max(0) as u32)
}

/// An event's type (0: notification, i.e. manual-reset) and state.
pub(super) fn query_event(h: HANDLE) -> EventBasicInformation {
    let mut info = EventBasicInformation { kind: 0, state: 0 };
    // SAFETY: `info` is writable and of the size given; a failure leaves it zeroed.
    unsafe {
        NtQueryEvent(
            h,
            0,
            &mut info,
            std::mem::size_of::<EventBasicInformation>() as u32,
            std::ptr::null_mut(),
        )
    };
    info
}

impl Semaphore {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        initial: u32,
        max: u32,
    ) -> Result<Semaphore> {
        no_persistence(&opts)?;
        let w = wide(name);
        // Both are at most Semaphore::MAX_COUNT, checked by the caller.
        let (initial, max) = (initial as i32, max as i32);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { CreateSemaphoreW(std::ptr::null(), initial, max, w.as_ptr()) };
        let (handle, created) = created_handle(h, name, Kind::Semaphore, disposition)?;
        Ok(Semaphore {
            handle,
            name: name.clone(),
            created,
        })
    }

    pub(crate) fn open(_: &Namespace, name: &Name) -> Result<Semaphore> {
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenSemaphoreW(SEMAPHORE_ALL_ACCESS, 0, w.as_ptr()) };
        Ok(Semaphore {
            handle: opened_handle(h, name, Kind::Semaphore)?,
            name: name.clone(),
            created: false,
        })
    }

    common_methods!();

    fn query(&self) -> (u32, u32) {
        query_semaphore(self.handle.0)
    }

    pub(crate) fn release(&self, n: u32) -> Result<u32> {
        let mut prev = 0i32;
        // `n` is at most Semaphore::MAX_COUNT, checked by the caller.
        let n_long = n as i32;
        // SAFETY: a live semaphore handle and a writable `prev`.
        if unsafe { ReleaseSemaphore(self.handle.0, n_long, &mut prev) } == 0 {
            let code = last_error();
            let (count, max) = self.query();
            return Err(match code {
                ERROR_TOO_MANY_POSTS => Error::TooManyPosts {
                    name: self.name.to_string(),
                    count,
                    max,
                    release: n,
                },
                code => os_error(format!("releasing {}", self.name), code),
            });
        }
        Ok(prev.max(0) as u32)
    }

    pub(crate) fn count(&self) -> u32 {
        self.query().0
    }

    pub(crate) fn max(&self) -> u32 {
        self.query().1
    }
}

#[derive(Debug)]
pub struct Event {
    handle: Handle,
    name: Name,
    created: bool,
}

impl Event {
    pub(crate) fn create(
        _: &Namespace,
        name: &Name,
        opts: CreateOptions,
        disposition: Disposition,
        manual_reset: bool,
        initially_set: bool,
    ) -> Result<Event> {
        no_persistence(&opts)?;
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe {
            CreateEventW(
                std::ptr::null(),
                i32::from(manual_reset),
                i32::from(initially_set),
                w.as_ptr(),
            )
        };
        let (handle, created) = created_handle(h, name, Kind::Event, disposition)?;
        Ok(Event {
            handle,
            name: name.clone(),
            created,
        })
    }

    pub(crate) fn open(_: &Namespace, name: &Name) -> Result<Event> {
        let w = wide(name);
        // SAFETY: `w` is NUL-terminated.
        let h = unsafe { OpenEventW(EVENT_ALL_ACCESS, 0, w.as_ptr()) };
        Ok(Event {
            handle: opened_handle(h, name, Kind::Event)?,
            name: name.clone(),
            created: false,
        })
    }

    common_methods!();

    fn query(&self) -> EventBasicInformation {
        query_event(self.handle.0)
    }

    pub(crate) fn set(&self) -> Result<()> {
        // SAFETY: a live event handle.
        if unsafe { SetEvent(self.handle.0) } == 0 {
            return Err(self.state_error("setting", last_error()));
        }
        Ok(())
    }

    pub(crate) fn reset(&self) -> Result<()> {
        // SAFETY: a live event handle.
        if unsafe { ResetEvent(self.handle.0) } == 0 {
            return Err(self.state_error("resetting", last_error()));
        }
        Ok(())
    }

    fn state_error(&self, doing: &str, code: u32) -> Error {
        match code {
            ERROR_ACCESS_DENIED => Error::denied(format!(
                "{doing} {}: this handle may not change its state",
                self.name
            )),
            code => os_error(format!("{doing} {}", self.name), code),
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.query().state != 0
    }

    pub(crate) fn manual_reset(&self) -> bool {
        // NotificationEvent (0) is manual-reset; SynchronizationEvent (1) is auto-reset.
        self.query().kind == 0
    }
}

/// One of the objects given to `wait_any`.
#[derive(Debug, Clone, Copy)]
pub enum WaitRef<'a> {
    Event(&'a Event),
    Semaphore(&'a Semaphore),
    Mutex(&'a Mutex),
    Channel(crate::channel::Readiness<'a>),
}

/// `WaitForMultipleObjects` on `objects` (at most `MAXIMUM_WAIT_OBJECTS`, which the caller
/// checks): the index of the object taken, and whether it was a mutex whose owner had
/// died (`WAIT_ABANDONED_0 + i`); `None` on timeout. Nothing is allocated (after a
/// channel's first wait, which makes its semaphore).
pub(crate) fn wait_any(
    objects: &[&dyn crate::Waitable],
    deadline: Option<Instant>,
) -> Result<Option<(usize, bool)>> {
    const MAX: usize = crate::sync::algo::MAX_OBJECTS;
    let objects: [Option<WaitRef<'_>>; MAX] =
        std::array::from_fn(|i| objects.get(i).map(|o| o.wait_ref()));
    let objects = &objects[..objects.iter().take_while(|o| o.is_some()).count()];
    // A stream receiver is waited for through the semaphore its producer releases (see
    // `channel.rs`); a token may be stale, so the index counts only if it is ready.
    let mut sems: [Option<std::sync::Arc<Handle>>; MAX] = [const { None }; MAX];
    let mut handles: [HANDLE; MAX] = [std::ptr::null_mut(); MAX];
    for ((o, h), sem) in objects.iter().zip(&mut handles).zip(&mut sems) {
        *h = match o {
            Some(WaitRef::Event(e)) => e.handle.0,
            Some(WaitRef::Semaphore(s)) => s.handle.0,
            Some(WaitRef::Mutex(m)) => m.handle.0,
            Some(WaitRef::Channel(r)) => {
                let s = r.chan().parker().semaphore(r.word().0).ok_or_else(|| {
                    os_error(format!("waiting for {}", r.chan().name()), last_error())
                })?;
                sem.insert(s).0
            }
            None => std::ptr::null_mut(),
        };
    }
    let channels = || {
        objects.iter().filter_map(|o| match o {
            Some(WaitRef::Channel(r)) => Some(r),
            _ => None,
        })
    };
    let has_channels = channels().next().is_some();
    let n = objects.len() as u32;
    loop {
        // A ready channel, unless a kernel object before it is signalled already.
        let ready = objects
            .iter()
            .position(|o| matches!(o, Some(WaitRef::Channel(r)) if r.ready()));
        let wait_ms = if ready.is_some() { 0 } else { millis(deadline) };
        // A channel's producer does not wake a sleeper when it dies (nor, if the reader has
        // no sleeping bit, when it writes): look again in a while.
        let wait_ms = if has_channels {
            channels()
                .filter_map(|r| r.poll_ms())
                .fold(wait_ms, |ms, poll| ms.min(poll as u32))
                .min(crate::channel::algo::LIVENESS_PERIOD.as_millis() as u32)
        } else {
            wait_ms
        };
        channels().for_each(|r| r.begin_sleep());
        // SAFETY: live handles, at most MAXIMUM_WAIT_OBJECTS (checked by the caller).
        let r = unsafe { WaitForMultipleObjects(n, handles.as_ptr(), 0, wait_ms) };
        channels().for_each(|r| r.end_sleep());
        if (WAIT_OBJECT_0..WAIT_OBJECT_0 + n).contains(&r) {
            let i = (r - WAIT_OBJECT_0) as usize;
            match &objects[i] {
                Some(WaitRef::Channel(c)) if !c.ready() => continue,
                _ => return Ok(Some((ready.map_or(i, |j| j.min(i)), false))),
            }
        }
        if (WAIT_ABANDONED_0..WAIT_ABANDONED_0 + n).contains(&r) {
            return Ok(Some(((r - WAIT_ABANDONED_0) as usize, true)));
        }
        if r == WAIT_TIMEOUT {
            if let Some(i) = ready {
                return Ok(Some((i, false)));
            }
            if deadline.is_none_or(|d| Instant::now() < d) {
                continue;
            }
            return Ok(None);
        }
        return Err(os_error(
            format!("waiting for any of {n} objects"),
            last_error(),
        ));
    }
}

/// The state of the mutex, semaphore or event `h` (`None` for a mapping, or if the handle
/// may not query it).
pub(super) fn sync_state(kind: Kind, h: HANDLE) -> Option<SyncState> {
    match kind {
        Kind::Mapping | Kind::Stream | Kind::Broadcast | Kind::Latest | Kind::RequestReply => None,
        Kind::Mutex => {
            let mut m = MutantBasicInformation {
                current_count: 1,
                owned_by_caller: 0,
                abandoned: 0,
            };
            // SAFETY: `m` is writable and of the size given; the handle has
            // MUTANT_QUERY_STATE.
            let status = unsafe {
                NtQueryMutant(
                    h,
                    0,
                    &mut m,
                    std::mem::size_of::<MutantBasicInformation>() as u32,
                    std::ptr::null_mut(),
                )
            };
            (status >= 0).then_some(SyncState::Mutex {
                owned: m.current_count <= 0,
                owner_pid: None,
                abandoned: m.abandoned != 0,
            })
        }
        Kind::Semaphore => {
            let (count, max) = query_semaphore(h);
            Some(SyncState::Semaphore { count, max })
        }
        Kind::Event => {
            let e = query_event(h);
            Some(SyncState::Event {
                set: e.state != 0,
                manual_reset: e.kind == 0,
            })
        }
    }
}
