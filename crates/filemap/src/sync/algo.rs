//! The semaphore, event and wait-for-any state machines, as pure atomics.
//!
//! The states are `#[repr(C)]` records of fixed-width atomics that live in shared memory.
//! The algorithms never block by themselves: they take a [`Parker`], which on Linux is a
//! shared (not `PRIVATE`) futex and in unit tests a yielding loop, so that Miri can check
//! them on heap memory.
//!
//! # The waiting protocol
//!
//! Every object has one 32-bit futex word that is 0 exactly when a waiter must sleep: the
//! semaphore's count, the event's "signalled" flag. A waiter
//!
//! 1. tries to take the object (decrement the count, or clear an auto-reset event) and
//!    returns if it could;
//! 2. adds itself to `waiters` (SeqCst), tries once more, and sleeps on the futex word
//!    while it still reads 0;
//! 3. removes itself from `waiters` and starts over.
//!
//! A signaller changes the word (SeqCst) and then wakes sleepers if `waiters` is not 0. The
//! SeqCst pair rules out a lost wake-up: either the waiter sees the new word in step 2, or
//! the signaller sees the waiter's count and wakes it. The kernel's futex check makes the
//! read-and-sleep in step 2 atomic.
//!
//! A waiter that is woken but takes a *different* object (wait-for-any) passes the wake on
//! to the objects it leaves untaken, so that their other waiters do not sleep through a
//! signal.

// The algorithms are portable; only the Linux backend uses them (Windows has kernel objects).
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Instant;

/// How a sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parked {
    /// Woken, or returned early for any reason: the caller re-checks the state.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Sleeping and waking on 32-bit words.
pub(crate) trait Parker {
    /// Sleeps while `*word == expected`, until woken or `deadline`. May return early.
    fn park(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Parked;
    /// Sleeps while every `*word == expected`, until one is woken or `deadline`.
    fn park_any(&self, words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Parked;
    /// Wakes up to `n` sleepers on `word`.
    fn unpark(&self, word: &AtomicU32, n: u32);
}

/// Something a thread can wait for.
pub(crate) trait Waitable {
    /// Starts a wait; the token goes to the other calls of the same wait.
    fn begin(&self) -> u32;
    /// Takes the object if it is signalled, or was signalled since `begin` for kinds that
    /// release every waiter (consuming what an acquire consumes).
    fn try_take(&self, token: u32) -> bool;
    /// The word to sleep on, and the value it has while the waiter must sleep.
    fn sleep_word(&self, token: u32) -> (&AtomicU32, u32);
    /// The number of sleepers that may need a wake.
    fn waiters(&self) -> &AtomicU32;
    /// After a wait-for-any took another object: wake one sleeper here if this object is
    /// still signalled, since the wake we absorbed may have been meant for it.
    fn pass_on(&self, parker: &dyn Parker);
}

/// The most that `FUTEX_WAKE` takes for "everyone" (the count is a C `int`).
pub(crate) const WAKE_ALL: u32 = i32::MAX as u32;

/// Waits until one of `objects` can be taken, takes it and returns its index; the lowest
/// index wins when several are signalled, as in `WaitForMultipleObjects`. `None` means the
/// deadline passed.
pub(crate) fn wait_any(
    objects: &[&dyn Waitable],
    parker: &dyn Parker,
    deadline: Option<Instant>,
) -> Option<usize> {
    let tokens: Vec<u32> = objects.iter().map(|o| o.begin()).collect();
    let take = || {
        objects
            .iter()
            .zip(&tokens)
            .position(|(o, &t)| o.try_take(t))
    };
    loop {
        // 1. Take the first one that is signalled.
        if let Some(i) = take() {
            return Some(i);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        // 2. Announce ourselves, then look once more before sleeping.
        for o in objects {
            o.waiters().fetch_add(1, SeqCst);
        }
        let mut taken = take();
        let parked = match taken {
            Some(_) => Parked::Woken,
            None if objects.len() == 1 => {
                let (word, val) = objects[0].sleep_word(tokens[0]);
                parker.park(word, val, deadline)
            }
            None => {
                let words: Vec<(&AtomicU32, u32)> = objects
                    .iter()
                    .zip(&tokens)
                    .map(|(o, &t)| o.sleep_word(t))
                    .collect();
                parker.park_any(&words, deadline)
            }
        };
        // 3. Leave, and look again if woken.
        for o in objects {
            o.waiters().fetch_sub(1, SeqCst);
        }
        if taken.is_none() && parked == Parked::Woken {
            taken = take();
        }
        if let Some(i) = taken {
            if objects.len() > 1 {
                for (j, o) in objects.iter().enumerate() {
                    if j != i {
                        o.pass_on(parker);
                    }
                }
            }
            return Some(i);
        }
    }
}

/// The shared state of a semaphore: 64 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct SemaphoreState {
    /// The count; the futex word.
    count: AtomicU32,
    /// The maximum count, fixed at creation.
    max: AtomicU32,
    /// Sleepers (see the module documentation).
    waiters: AtomicU32,
    reserved: [AtomicU32; 13],
}

const _: () = assert!(std::mem::size_of::<SemaphoreState>() == 64);
const _: () = assert!(std::mem::align_of::<SemaphoreState>() == 4);

/// Releasing would pass the maximum count (Windows' `ERROR_TOO_MANY_POSTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyPosts {
    pub(crate) count: u32,
    pub(crate) max: u32,
}

impl SemaphoreState {
    /// Sets the counts of a new semaphore, before anyone else can see it.
    pub(crate) fn init(&self, initial: u32, max: u32) {
        self.max.store(max, SeqCst);
        self.count.store(initial, SeqCst);
    }

    pub(crate) fn count(&self) -> u32 {
        self.count.load(SeqCst)
    }

    pub(crate) fn max(&self) -> u32 {
        self.max.load(SeqCst)
    }

    /// Adds `n` to the count and wakes up to `n` sleepers; returns the previous count.
    /// Past the maximum, nothing changes.
    pub(crate) fn release(&self, n: u32, parker: &dyn Parker) -> Result<u32, TooManyPosts> {
        let max = self.max();
        let mut count = self.count.load(SeqCst);
        loop {
            match count.checked_add(n).filter(|&c| c <= max) {
                None => return Err(TooManyPosts { count, max }),
                Some(new) => match self.count.compare_exchange(count, new, SeqCst, SeqCst) {
                    Ok(_) => break,
                    Err(actual) => count = actual,
                },
            }
        }
        if n > 0 && self.waiters.load(SeqCst) != 0 {
            parker.unpark(&self.count, n);
        }
        Ok(count)
    }
}

impl Waitable for SemaphoreState {
    fn begin(&self) -> u32 {
        0
    }

    fn sleep_word(&self, _: u32) -> (&AtomicU32, u32) {
        (&self.count, 0)
    }

    fn waiters(&self) -> &AtomicU32 {
        &self.waiters
    }

    fn pass_on(&self, parker: &dyn Parker) {
        if self.count.load(SeqCst) != 0 && self.waiters.load(SeqCst) != 0 {
            parker.unpark(&self.count, 1);
        }
    }

    fn try_take(&self, _: u32) -> bool {
        let mut count = self.count.load(SeqCst);
        while count > 0 {
            match self
                .count
                .compare_exchange_weak(count, count - 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => count = actual,
            }
        }
        false
    }
}

/// The shared state of an event: 64 bytes.
///
/// Waiters of an auto-reset event sleep on `signalled`, and each set wakes one of them.
/// Waiters of a manual-reset event sleep on `generation`, which every set advances: a
/// waiter that was asleep when the event was set is released even if the event is reset
/// before it runs, as Windows releases every thread waiting at the time of `SetEvent`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct EventState {
    /// 1 when signalled.
    signalled: AtomicU32,
    /// 1 for a manual-reset event, fixed at creation.
    manual: AtomicU32,
    /// Sleepers (see the module documentation).
    waiters: AtomicU32,
    /// Advanced by every set of a manual-reset event (wrapping).
    generation: AtomicU32,
    reserved: [AtomicU32; 12],
}

const _: () = assert!(std::mem::size_of::<EventState>() == 64);

impl EventState {
    /// Sets the kind and state of a new event, before anyone else can see it.
    pub(crate) fn init(&self, manual_reset: bool, initially_set: bool) {
        self.manual.store(u32::from(manual_reset), SeqCst);
        self.signalled.store(u32::from(initially_set), SeqCst);
    }

    pub(crate) fn manual_reset(&self) -> bool {
        self.manual.load(SeqCst) != 0
    }

    pub(crate) fn is_set(&self) -> bool {
        self.signalled.load(SeqCst) != 0
    }

    /// Signals the event. A manual-reset event wakes every sleeper and stays signalled;
    /// an auto-reset event wakes one, and the first waiter to take it resets it.
    pub(crate) fn set(&self, parker: &dyn Parker) {
        self.signalled.store(1, SeqCst);
        if self.manual_reset() {
            self.generation.fetch_add(1, SeqCst);
            if self.waiters.load(SeqCst) != 0 {
                parker.unpark(&self.generation, WAKE_ALL);
            }
        } else if self.waiters.load(SeqCst) != 0 {
            parker.unpark(&self.signalled, 1);
        }
    }

    pub(crate) fn reset(&self) {
        self.signalled.store(0, SeqCst);
    }
}

impl Waitable for EventState {
    fn begin(&self) -> u32 {
        self.generation.load(SeqCst)
    }

    fn sleep_word(&self, token: u32) -> (&AtomicU32, u32) {
        if self.manual_reset() {
            (&self.generation, token)
        } else {
            (&self.signalled, 0)
        }
    }

    fn waiters(&self) -> &AtomicU32 {
        &self.waiters
    }

    fn pass_on(&self, parker: &dyn Parker) {
        // A manual-reset set wakes everyone; only auto-reset wakes can be absorbed.
        if !self.manual_reset()
            && self.signalled.load(SeqCst) != 0
            && self.waiters.load(SeqCst) != 0
        {
            parker.unpark(&self.signalled, 1);
        }
    }

    fn try_take(&self, token: u32) -> bool {
        if self.manual_reset() {
            self.signalled.load(SeqCst) != 0 || self.generation.load(SeqCst) != token
        } else {
            self.signalled
                .compare_exchange(1, 0, SeqCst, SeqCst)
                .is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    //! The algorithms on heap memory, with threads and a yielding parker (Miri-friendly).

    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    /// Sleeps by yielding: every return is an early one, which the algorithms must handle.
    struct Yield;

    impl Parker for Yield {
        fn park(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Parked {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Parked::TimedOut;
            }
            if word.load(SeqCst) == expected {
                std::thread::yield_now();
            }
            Parked::Woken
        }
        fn park_any(&self, words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> Parked {
            self.park(words[0].0, words[0].1, deadline)
        }
        fn unpark(&self, _: &AtomicU32, _: u32) {}
    }

    fn zeroed<T: Default>() -> Box<T> {
        Box::default()
    }

    const THREADS: usize = if cfg!(miri) { 3 } else { 8 };
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 2000 };

    #[test]
    fn semaphore_counts_and_refuses_past_max() {
        let s = zeroed::<SemaphoreState>();
        s.init(1, 3);
        assert_eq!(s.release(2, &Yield), Ok(1));
        assert_eq!(s.release(1, &Yield), Err(TooManyPosts { count: 3, max: 3 }));
        assert_eq!(s.count(), 3, "a refused release changes nothing");
        assert_eq!(
            s.release(u32::MAX, &Yield),
            Err(TooManyPosts { count: 3, max: 3 })
        );
        for _ in 0..3 {
            assert!(s.try_take(0));
        }
        assert!(!s.try_take(0));
        let start = Instant::now();
        assert_eq!(
            wait_any(&[&*s], &Yield, Some(start + Duration::from_millis(20))),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn semaphore_hands_out_exactly_what_is_released() {
        let s: Arc<SemaphoreState> = Arc::from(zeroed::<SemaphoreState>());
        s.init(0, u32::MAX);
        let taken = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (s, taken) = (s.clone(), taken.clone());
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        assert_eq!(wait_any(&[&*s], &Yield, None), Some(0));
                        taken.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        for _ in 0..THREADS * ROUNDS {
            s.release(1, &Yield).unwrap();
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(taken.load(SeqCst), THREADS * ROUNDS);
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn auto_reset_event_releases_one_waiter_per_set() {
        let e: Arc<EventState> = Arc::from(zeroed::<EventState>());
        e.init(false, false);
        let woken = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (e, woken) = (e.clone(), woken.clone());
                std::thread::spawn(move || {
                    if wait_any(
                        &[&*e],
                        &Yield,
                        Some(Instant::now() + Duration::from_secs(5)),
                    )
                    .is_some()
                    {
                        woken.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        for i in 1..=THREADS {
            e.set(&Yield);
            // Exactly one more waiter gets through per set.
            while woken.load(SeqCst) < i {
                std::thread::yield_now();
            }
            assert_eq!(woken.load(SeqCst), i);
        }
        for h in handles {
            h.join().unwrap();
        }
        assert!(!e.is_set(), "the last waiter reset it");
    }

    #[test]
    fn manual_reset_event_releases_everyone_until_reset() {
        let e = zeroed::<EventState>();
        e.init(true, false);
        let token = e.begin();
        assert!(!e.try_take(token));
        e.set(&Yield);
        for _ in 0..5 {
            assert!(e.try_take(e.begin()), "stays signalled");
        }
        e.reset();
        assert!(!e.try_take(e.begin()));
        // A wait that began before the set is released even after the reset.
        assert!(e.try_take(token));
    }

    #[test]
    fn manual_reset_releases_every_waiter_of_a_set_even_if_reset_at_once() {
        let e: Arc<EventState> = Arc::from(zeroed::<EventState>());
        e.init(true, false);
        let started = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (e, started) = (e.clone(), started.clone());
                std::thread::spawn(move || {
                    let token = e.begin();
                    started.fetch_add(1, SeqCst);
                    // The same steps as wait_any, with the token taken before the set.
                    while !e.try_take(token) {
                        let (word, val) = e.sleep_word(token);
                        Yield.park(word, val, None);
                    }
                })
            })
            .collect();
        while started.load(SeqCst) < THREADS {
            std::thread::yield_now();
        }
        e.set(&Yield);
        e.reset();
        for h in handles {
            h.join().unwrap();
        }
        assert!(!e.is_set());
    }

    #[test]
    fn wait_any_takes_the_lowest_signalled_index() {
        let (a, b, c) = (
            zeroed::<EventState>(),
            zeroed::<SemaphoreState>(),
            zeroed::<EventState>(),
        );
        a.init(false, false);
        b.init(0, 10);
        c.init(true, false);
        let objs: [&dyn Waitable; 3] = [&*a, &*b, &*c];
        let soon = || Some(Instant::now() + Duration::from_millis(5));
        assert_eq!(wait_any(&objs, &Yield, soon()), None);
        c.set(&Yield);
        b.release(2, &Yield).unwrap();
        assert_eq!(wait_any(&objs, &Yield, soon()), Some(1));
        assert_eq!(wait_any(&objs, &Yield, soon()), Some(1));
        assert_eq!(wait_any(&objs, &Yield, soon()), Some(2));
        a.set(&Yield);
        assert_eq!(wait_any(&objs, &Yield, soon()), Some(0));
        assert!(!a.is_set(), "taking an auto-reset event resets it");
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn wait_any_across_threads() {
        let e: Arc<EventState> = Arc::from(zeroed::<EventState>());
        let s: Arc<SemaphoreState> = Arc::from(zeroed::<SemaphoreState>());
        e.init(false, false);
        s.init(0, 1000);
        let got = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (e, s, got) = (e.clone(), s.clone(), got.clone());
                std::thread::spawn(move || {
                    let i = wait_any(&[&*e, &*s], &Yield, None).unwrap();
                    got.fetch_add(if i == 0 { 1 } else { 1000 }, SeqCst);
                })
            })
            .collect();
        // One wake through the event, the rest through the semaphore.
        e.set(&Yield);
        s.release(THREADS as u32 - 1, &Yield).unwrap();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(got.load(SeqCst), 1 + 1000 * (THREADS - 1));
    }
}
