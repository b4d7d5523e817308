//! Shared futexes, the parker of every algorithm in shared memory (`sync/algo.rs`):
//! `futex_wait`, and `futex_waitv` for waiting on several words at once.
//!
//! And the channels' asymmetric fences. A channel's producer stores `tail` and then loads
//! the consumer's "I may sleep" flag on every message; the consumer stores the flag and
//! loads `tail` before it sleeps. That is a Dekker pair, which needs a full fence between
//! the store and the load on both sides, about 20 to 40 cycles per message. With
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` the side about to sleep (rare, and about
//! to make a system call anyway) makes every CPU that runs a registered process execute a
//! full fence, so the per-message side needs only a compiler fence, as in Folly's
//! `asymmetric_thread_fence_light/heavy`. A process skips its fences only once it has
//! registered (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`); a forked child is not
//! registered and fences fully; and the sleeping side always calls `membarrier` when the
//! kernel has it, so a peer that skips its fence is always covered.

use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use crate::sync::algo::{Parked, Parker, Words, MAX_WORDS};

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

/// Whether this process is registered for global expedited memory barriers (reset in a
/// forked child, whose registration the kernel does not carry over).
static REGISTERED: AtomicBool = AtomicBool::new(false);
/// Whether the kernel has `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: 0 not asked yet, 1 yes, 2 no.
static GLOBAL_EXPEDITED: AtomicU8 = AtomicU8::new(0);

extern "C" fn unregistered_in_child() {
    REGISTERED.store(false, Ordering::Relaxed);
}

/// Registers this process for the channels' asymmetric fences, once (see the module
/// documentation). Without `membarrier` the fences stay full ones.
pub(crate) fn register_asymmetric() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use rustix::thread::{membarrier, MembarrierCommand};
        if membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok() {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe, as
            // a child-side fork handler must be.
            #[allow(unsafe_code)]
            unsafe {
                libc::pthread_atfork(None, None, Some(unregistered_in_child));
            }
            REGISTERED.store(true, Ordering::SeqCst);
        }
    });
}

/// `membarrier(GLOBAL_EXPEDITED)`, if the kernel has it.
fn global_barrier() -> bool {
    use rustix::thread::{membarrier, MembarrierCommand};
    if GLOBAL_EXPEDITED.load(Ordering::Relaxed) == 2 {
        return false;
    }
    let ok = membarrier(MembarrierCommand::GlobalExpedited).is_ok();
    GLOBAL_EXPEDITED.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
    ok
}

impl Parker for Futex {
    #[inline]
    fn fence_fast(&self) {
        if REGISTERED.load(Ordering::Relaxed) {
            // The sleeping side's `membarrier` fences this CPU for us.
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    fn fence_slow(&self) {
        // Our own full fence first (membarrier orders the caller too, but this keeps the
        // protocol correct for a peer that fences fully, whatever membarrier does here).
        fence(Ordering::SeqCst);
        global_barrier();
    }

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

    fn park_any(&self, words: &Words<'_>, deadline: Option<Instant>) -> Parked {
        let Some(left) = remaining(deadline) else {
            return Parked::TimedOut;
        };
        let Some(first) = words.first() else {
            return Parked::Woken;
        };
        // On the stack: a wait allocates nothing.
        let mut waits: [futex::Wait; MAX_WORDS] = std::array::from_fn(|_| futex::Wait::new());
        for (w, (word, val)) in waits.iter_mut().zip(words.iter()) {
            w.val = u64::from(val);
            w.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
            w.flags = futex::WaitFlags::SIZE_U32;
        }
        let abs = left.map(monotonic_after);
        match futex::waitv(
            &waits[..words.len()],
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
                self.park(first.0, first.1, d);
                Parked::Woken
            }
            _ => Parked::Woken,
        }
    }

    fn unpark(&self, word: &AtomicU32, n: u32) {
        let _ = futex::wake(word, futex::Flags::empty(), n);
    }
}
