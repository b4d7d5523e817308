//! Shared futexes, the parker of every algorithm in shared memory (`sync/algo.rs`):
//! `futex_wait`, and `futex_waitv` for waiting on several words at once.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use crate::sync::algo::{Parked, Parker};

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
