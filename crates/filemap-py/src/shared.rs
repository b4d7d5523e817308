//! Channel ends that Python threads share.
//!
//! An end plays one role (a stream's producer, a server...), and its Rust type takes
//! `&mut self`. A call takes the end out of its [`Shared`] for the call's duration, so that
//! no borrow of the Python object spans a wait without the GIL; a call from another thread
//! meanwhile waits for its turn (without the GIL, within its own deadline, and
//! interruptibly), instead of failing with PyO3's "Already borrowed".

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::closed;

/// Counts the `fork`s this process has been through (`after_fork_in_child`, which the
/// Python package registers with `os.register_at_fork`).
static FORKS: AtomicU32 = AtomicU32::new(0);

/// Called in the child after each `fork`: the ends that other threads of the parent had
/// taken stay taken in the child, by threads that do not exist there.
pub(crate) fn after_fork_in_child() {
    FORKS.fetch_add(1, Relaxed);
}

/// Who has an end: a thread, in the fork generation it took it in, for a call or (`lent`)
/// for an open loan or in-place message, which holds the end until it ends.
#[derive(Clone, Copy)]
struct Holder {
    thread: ThreadId,
    forks: u32,
    lent: bool,
}

enum State<T> {
    Idle(T),
    Busy(Holder),
    Closed,
}

/// A channel end between calls. The lock is only ever held for a moment, never across a
/// wait or a GIL operation, so a thread that holds the GIL may take it. It is also only
/// ever taken with the GIL held, so a `fork` (which Python makes holding the GIL) never
/// copies it locked into the child.
pub(crate) struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    pub(crate) fn new(end: T) -> Shared<T> {
        Shared {
            state: Mutex::new(State::Idle(end)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The end, for one call: at once if no other thread's call has it; otherwise after
    /// that call returns, polling without the GIL (Ctrl-C interrupts). `None` if `deadline`
    /// passes first.
    pub(crate) fn take(
        &self,
        py: Python<'_>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<Taken<'_, T>>> {
        let me = Holder {
            thread: std::thread::current().id(),
            forks: FORKS.load(Relaxed),
            lent: false,
        };
        let mut pause = Duration::from_micros(20);
        loop {
            {
                let mut state = self.lock();
                match std::mem::replace(&mut *state, State::Busy(me)) {
                    State::Idle(end) => {
                        return Ok(Some(Taken {
                            home: self,
                            end: Some(end),
                        }))
                    }
                    State::Busy(holder) => {
                        *state = State::Busy(holder);
                        if holder.forks != me.forks {
                            // Taken in the parent by a thread that this child does not have:
                            // it is never given back here, and the role is the parent's.
                            return Err(PyValueError::new_err(
                                "this channel end was in use by another thread when this process forked, and its role stays with the parent; make the end in the child instead (and not in the parent)",
                            ));
                        }
                        if holder.lent && holder.thread == me.thread {
                            return Err(PyRuntimeError::new_err(
                                "this channel end has an open loan or message: end it (commit or cancel a loan, release or keep a message, or leave its with block) before another call on it",
                            ));
                        }
                        if holder.thread == me.thread {
                            // A signal handler, run while this thread's call waits.
                            return Err(PyRuntimeError::new_err(
                                "a call on a channel end from inside another call on it (a signal handler?) would wait for itself",
                            ));
                        }
                    }
                    State::Closed => {
                        *state = State::Closed;
                        return Err(closed());
                    }
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let nap = deadline.map_or(pause, |d| pause.min(d - now));
            py.detach(|| std::thread::sleep(nap));
            py.check_signals()?;
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// Gives back an end that [`Taken::lend`] lent out.
    pub(crate) fn give_back(&self, end: T) {
        let mut state = self.lock();
        if let State::Busy(_) = *state {
            *state = State::Idle(end);
        }
    }

    /// Closes the end (drops it). `RuntimeError` while another thread's call has it, since
    /// that call may block for ever.
    pub(crate) fn close(&self, what: &str) -> PyResult<()> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Closed) {
            // Taken in the parent before a fork: nothing here to wait for, or to drop.
            State::Busy(holder) if holder.forks != FORKS.load(Relaxed) => Ok(()),
            State::Busy(holder) => {
                *state = State::Busy(holder);
                Err(PyRuntimeError::new_err(match holder.lent {
                    true => format!(
                        "this {what} has an open loan or message; end it before closing"
                    ),
                    false => format!(
                        "this {what} is in use by another thread's call; close it once that call has returned"
                    ),
                }))
            }
            State::Idle(end) => {
                drop(state);
                drop(end);
                Ok(())
            }
            State::Closed => Ok(()),
        }
    }
}

/// An end taken out for one call; it goes back when this is dropped.
pub(crate) struct Taken<'a, T> {
    home: &'a Shared<T>,
    end: Option<T>,
}

impl<T> Deref for Taken<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.end
            .as_ref()
            .expect("a taken end is there until dropped")
    }
}

impl<T> DerefMut for Taken<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.end
            .as_mut()
            .expect("a taken end is there until dropped")
    }
}

impl<T> Taken<'_, T> {
    /// Keeps the end out after this call, for a loan or an in-place message: other
    /// threads' calls wait for it (this thread's are refused) until [`Shared::give_back`].
    pub(crate) fn lend(mut self) -> T {
        let end = self.end.take().expect("a taken end is there until dropped");
        if let State::Busy(holder) = &mut *self.home.lock() {
            holder.lent = true;
        }
        end
    }
}

impl<T> Drop for Taken<'_, T> {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            *self.home.lock() = State::Idle(end);
        }
    }
}
