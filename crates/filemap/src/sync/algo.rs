//! The mutex, semaphore, event and wait-for-any state machines, as pure atomics.
//!
//! The states are `#[repr(C)]` records of fixed-width atomics that live in shared memory,
//! where any process with write access can change them: they hold numbers only, never
//! pointers, and every value is a valid state. The algorithms never block by themselves:
//! they take a [`Parker`], which on Linux is a shared (not `PRIVATE`) futex and in unit
//! tests a yielding loop, so that Miri can check them on heap memory.
//!
//! # The waiting protocol of events and semaphores
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
//! **Every wake wakes every sleeper.** A waiter that is woken may die (SIGKILL) before it
//! takes the object, and a futex wake that it absorbed would be lost to the others. Waking
//! them all means that every live sleeper looks again after every signal, so no death
//! leaves a waiter asleep on a signalled object. The price is that the sleepers that lose
//! the race go back to sleep.
//!
//! # The mutex
//!
//! See `docs/mutex.md` for the whole design, and `docs/mutex.pml` for its model. In short,
//! the lock word follows the kernel's robust-futex convention:
//!
//! - bits 0–29: the *process id word* of the owning process (0: free). On Linux it is the
//!   thread id of a sentinel thread of that process, whose robust list the kernel walks
//!   when the process dies;
//! - bit 30, [`OWNER_DIED`]: the previous owner died holding it (set by the kernel, or by
//!   the owner's thread-exit handler). The next locker takes it as abandoned;
//! - bit 31, [`WAITERS`]: somebody may sleep on the word, so the unlocker must wake them.
//!
//! Which thread of the owning process owns the mutex, and how deeply, is kept in that
//! process's private memory, out of other processes' reach.
//!
//! Each process that holds the mutex open claims one of [`SLOTS`] slots. A waiting thread
//! writes the owner's process id word (with [`WAITERS`]) into its slot's *watch* word and
//! sleeps on both the lock word and the watch word. When the owning process dies, the
//! kernel marks every word that holds its id, the watch words included, and wakes a
//! sleeper on each. So every waiting process gets a wake-up of its own, and a woken waiter
//! that dies at once cannot take the wake-up away from the others.

// The algorithms are portable; only the Linux backend uses them (Windows has kernel objects).
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::time::{Duration, Instant};

use crate::atomic::{
    AtomicU32,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

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
    fn park_any(&self, words: &Words<'_>, deadline: Option<Instant>) -> Parked;
    /// Wakes up to `n` sleepers on `word`.
    fn unpark(&self, word: &AtomicU32, n: u32);
    /// The fence of the fast side of an asymmetric Dekker pair (a side that stores, then
    /// loads the other side's flag, on every message). A full fence, unless the slow side's
    /// [`fence_slow`](Parker::fence_slow) makes every other CPU fence for it.
    #[inline]
    fn fence_fast(&self) {
        crate::atomic::fence(SeqCst);
    }
    /// The fence of the slow side (one about to sleep): strong enough for a fast side that
    /// used [`fence_fast`](Parker::fence_fast).
    #[inline]
    fn fence_slow(&self) {
        crate::atomic::fence(SeqCst);
    }
}

/// How a waiter took an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Signalled (an event or semaphore), or a mutex that was free.
    Signalled,
    /// A mutex whose previous owner died holding it.
    Abandoned,
}

/// Something a thread can wait for.
pub(crate) trait Waitable {
    /// Starts a wait; the token goes to the other calls of the same wait.
    fn begin(&self) -> u32;
    /// Takes the object if it is signalled, or was signalled since `begin` for kinds that
    /// release every waiter (consuming what an acquire consumes).
    fn try_take(&self, token: u32) -> Option<Taken>;
    /// Announces a sleeper, and adds the words to sleep on, with the values they have
    /// while the waiter must sleep, to `words`. `false` if there is no value to sleep on
    /// (a mutex found free): the waiter then looks again instead of sleeping.
    fn prepare_sleep<'a>(&'a self, token: u32, words: &mut Words<'a>) -> bool;
    /// Withdraws what `prepare_sleep` announced.
    fn finish_sleep(&self);
    /// Whether every wake-up that this object needs reaches its sleepers. A mutex waiter
    /// without a watch word is not (see [`UNWATCHED_RECHECK_MS`]): its sleeps are cut short.
    fn watched(&self) -> bool {
        true
    }
    /// How often a sleeper looks again if the object is not [`watched`](Self::watched).
    fn recheck_ms(&self) -> u64 {
        UNWATCHED_RECHECK_MS
    }
}

/// The most objects one wait takes (Windows' `MAXIMUM_WAIT_OBJECTS`).
pub(crate) const MAX_OBJECTS: usize = 64;

/// The most words one wait sleeps on: two per object at most (also `futex_waitv`'s
/// limit).
pub(crate) const MAX_WORDS: usize = 2 * MAX_OBJECTS;

/// The words a wait sleeps on, with the values they have while it must sleep: on the
/// stack, so that a wait allocates nothing.
#[derive(Debug)]
pub(crate) struct Words<'a> {
    items: [Option<(&'a AtomicU32, u32)>; MAX_WORDS],
    len: usize,
}

impl<'a> Words<'a> {
    pub(crate) fn new() -> Words<'a> {
        Words {
            items: [None; MAX_WORDS],
            len: 0,
        }
    }

    /// Adds a word. Past [`MAX_WORDS`] (which [`MAX_OBJECTS`] objects cannot reach) the
    /// word is left out, and the sleep is cut short instead (see [`wait_any`]).
    pub(crate) fn push(&mut self, word: (&'a AtomicU32, u32)) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(word);
        }
        self.len += 1;
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Whether some word was left out.
    fn overflowed(&self) -> bool {
        self.len > MAX_WORDS
    }

    pub(crate) fn len(&self) -> usize {
        self.len.min(MAX_WORDS)
    }

    /// The words, in the order they were added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a AtomicU32, u32)> + '_ {
        self.items[..self.len()].iter().flatten().copied()
    }

    /// The first word.
    pub(crate) fn first(&self) -> Option<(&'a AtomicU32, u32)> {
        self.iter().next()
    }
}

/// The most that `FUTEX_WAKE` takes for "everyone" (the count is a C `int`).
pub(crate) const WAKE_ALL: u32 = i32::MAX as u32;

/// Waits until one of `objects` can be taken, takes it and returns its index and how it
/// was taken; the lowest index wins when several are signalled, as in
/// `WaitForMultipleObjects`. `None` means the deadline passed. At most [`MAX_OBJECTS`]
/// objects (the callers check; more are left out). Nothing is allocated.
pub(crate) fn wait_any(
    objects: &[&dyn Waitable],
    parker: &dyn Parker,
    deadline: Option<Instant>,
) -> Option<(usize, Taken)> {
    let objects = &objects[..objects.len().min(MAX_OBJECTS)];
    let mut tokens = [0u32; MAX_OBJECTS];
    for (t, o) in tokens.iter_mut().zip(objects) {
        *t = o.begin();
    }
    let tokens = &tokens[..objects.len()];
    let take = || {
        objects
            .iter()
            .zip(tokens)
            .enumerate()
            .find_map(|(i, (o, &t))| o.try_take(t).map(|how| (i, how)))
    };
    let mut words = Words::new();
    // How often to look again while asleep, if some object's wake-ups may not reach us.
    let unwatched = objects
        .iter()
        .filter(|o| !o.watched())
        .map(|o| o.recheck_ms())
        .min();
    loop {
        // 1. Take the first one that is signalled.
        if let Some(taken) = take() {
            return Some(taken);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        // 2. Announce ourselves, then look once more before sleeping.
        words.clear();
        let mut sleep = true;
        for (o, &t) in objects.iter().zip(tokens) {
            sleep &= o.prepare_sleep(t, &mut words);
        }
        let taken = take();
        if taken.is_none() && sleep {
            let until = if unwatched.is_some() || words.overflowed() {
                let ms = unwatched.unwrap_or(UNWATCHED_RECHECK_MS);
                let recheck = Instant::now() + Duration::from_millis(ms);
                Some(deadline.map_or(recheck, |d| d.min(recheck)))
            } else {
                deadline
            };
            match (words.len(), words.first()) {
                (1, Some((word, val))) => parker.park(word, val, until),
                _ => parker.park_any(&words, until),
            };
        }
        // 3. Leave, and look again.
        for o in objects {
            o.finish_sleep();
        }
        if taken.is_some() {
            return taken;
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

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<SemaphoreState>() == 64);
#[cfg(not(loom))]
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

    /// Adds `n` to the count and wakes the sleepers; returns the previous count. Past the
    /// maximum, nothing changes.
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
        // All of them, not n: see the module documentation.
        if n > 0 && self.waiters.load(SeqCst) != 0 {
            parker.unpark(&self.count, WAKE_ALL);
        }
        Ok(count)
    }
}

impl Waitable for SemaphoreState {
    fn begin(&self) -> u32 {
        0
    }

    fn try_take(&self, _: u32) -> Option<Taken> {
        let mut count = self.count.load(SeqCst);
        while count > 0 {
            match self
                .count
                .compare_exchange_weak(count, count - 1, SeqCst, SeqCst)
            {
                Ok(_) => return Some(Taken::Signalled),
                Err(actual) => count = actual,
            }
        }
        None
    }

    fn prepare_sleep<'a>(&'a self, _: u32, words: &mut Words<'a>) -> bool {
        self.waiters.fetch_add(1, SeqCst);
        words.push((&self.count, 0));
        true
    }

    fn finish_sleep(&self) {
        self.waiters.fetch_sub(1, SeqCst);
    }
}

/// The shared state of an event: 64 bytes.
///
/// Waiters of an auto-reset event sleep on `signalled`, and each set wakes them. Waiters of
/// a manual-reset event sleep on `generation`, which every set advances: a waiter that was
/// asleep when the event was set is released even if the event is reset before it runs, as
/// Windows releases every thread waiting at the time of `SetEvent`.
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

#[cfg(not(loom))]
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

    /// Signals the event and wakes the sleepers. A manual-reset event stays signalled; the
    /// first waiter to take an auto-reset event resets it, and the others sleep again.
    pub(crate) fn set(&self, parker: &dyn Parker) {
        self.signalled.store(1, SeqCst);
        let word = if self.manual_reset() {
            self.generation.fetch_add(1, SeqCst);
            &self.generation
        } else {
            &self.signalled
        };
        if self.waiters.load(SeqCst) != 0 {
            parker.unpark(word, WAKE_ALL);
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

    fn try_take(&self, token: u32) -> Option<Taken> {
        let taken = if self.manual_reset() {
            self.signalled.load(SeqCst) != 0 || self.generation.load(SeqCst) != token
        } else {
            self.signalled
                .compare_exchange(1, 0, SeqCst, SeqCst)
                .is_ok()
        };
        taken.then_some(Taken::Signalled)
    }

    fn prepare_sleep<'a>(&'a self, token: u32, words: &mut Words<'a>) -> bool {
        self.waiters.fetch_add(1, SeqCst);
        words.push(if self.manual_reset() {
            (&self.generation, token)
        } else {
            (&self.signalled, 0)
        });
        true
    }

    fn finish_sleep(&self) {
        self.waiters.fetch_sub(1, SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// The mutex.

/// Somebody may sleep on the lock word (the kernel's `FUTEX_WAITERS`).
pub(crate) const WAITERS: u32 = 0x8000_0000;
/// The owner died holding the mutex (the kernel's `FUTEX_OWNER_DIED`).
pub(crate) const OWNER_DIED: u32 = 0x4000_0000;
/// The owning process's id word (the kernel's `FUTEX_TID_MASK`).
pub(crate) const ID_MASK: u32 = 0x3fff_ffff;

/// The processes per mutex that get a watch word (see the module documentation). Waiters
/// in further processes re-check every [`UNWATCHED_RECHECK_MS`] instead.
pub(crate) const SLOTS: usize = 32;

/// How often a waiter without a slot looks at the lock word while it sleeps.
pub(crate) const UNWATCHED_RECHECK_MS: u64 = 50;

/// A 32-bit word and 32 bits of company, 8 bytes in all, so that words that a robust list
/// names are 8 bytes apart (their list entries are pointers, at the same offsets).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Cell {
    pub(crate) word: AtomicU32,
    pub(crate) extra: AtomicU32,
}

/// The shared state of a mutex: 520 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct MutexState {
    /// `word`: the lock word (see the module documentation). `extra`: the pid of the owning
    /// process, for `ls`/`info` only; 0 when free.
    pub(crate) lock: Cell,
    /// `word`: the id word of the process that claimed slot `j`, or 0 (free). The kernel
    /// sets [`OWNER_DIED`] in it when that process dies, which frees the slot too.
    pub(crate) claims: [Cell; SLOTS],
    /// `word`: the id word (with [`WAITERS`]) of the owner that slot `j`'s waiters wait
    /// for. Written by those waiters, marked by the kernel when that owner dies.
    pub(crate) watches: [Cell; SLOTS],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<MutexState>() == 8 * (1 + 2 * SLOTS));

/// Releasing a mutex whose lock word does not name this process: someone outside the
/// protocol changed it while this thread owned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Foreign {
    /// The lock word that was found.
    pub(crate) word: u32,
}

impl MutexState {
    /// Takes a free mutex for the process `me`; `None` if it is owned. `Some(true)` means
    /// that it was abandoned.
    #[inline]
    pub(crate) fn try_lock(&self, me: u32) -> Option<bool> {
        // The common case first: free, and nobody waits.
        if self
            .lock
            .word
            .compare_exchange(0, me, Acquire, Relaxed)
            .is_ok()
        {
            return Some(false);
        }
        let mut v = self.lock.word.load(Relaxed);
        while v & ID_MASK == 0 {
            // Free, but abandoned or with sleepers: keep WAITERS so that the unlock wakes
            // them, and drop OWNER_DIED, which this taker reports.
            match self
                .lock
                .word
                .compare_exchange(v, me | (v & WAITERS), Acquire, Relaxed)
            {
                Ok(_) => return Some(v & OWNER_DIED != 0),
                Err(actual) => v = actual,
            }
        }
        None
    }

    /// Releases the mutex held by process `me` and wakes every sleeper if there may be any.
    /// A lock word that does not name `me` is left as it is.
    #[inline]
    pub(crate) fn unlock(&self, me: u32, parker: &dyn Parker) -> Result<(), Foreign> {
        if self
            .lock
            .word
            .compare_exchange(me, 0, Release, Relaxed)
            .is_ok()
        {
            return Ok(());
        }
        self.unlock_slow(me, parker)
    }

    #[cold]
    fn unlock_slow(&self, me: u32, parker: &dyn Parker) -> Result<(), Foreign> {
        let mut v = self.lock.word.load(Relaxed);
        loop {
            if v & ID_MASK != me {
                return Err(Foreign { word: v });
            }
            match self.lock.word.compare_exchange(v, 0, Release, Relaxed) {
                Ok(_) => break,
                Err(actual) => v = actual,
            }
        }
        if v & WAITERS != 0 {
            // All of them: a woken waiter may die before it takes the mutex.
            parker.unpark(&self.lock.word, WAKE_ALL);
        }
        Ok(())
    }

    /// Marks the mutex held by process `me` as abandoned and wakes every sleeper: what a
    /// thread that exits while owning it leaves behind. `false` if the word does not name
    /// `me` (nothing changes then).
    pub(crate) fn abandon(&self, me: u32, parker: &dyn Parker) -> bool {
        let mut v = self.lock.word.load(Relaxed);
        loop {
            if v & ID_MASK != me {
                return false;
            }
            match self
                .lock
                .word
                .compare_exchange(v, OWNER_DIED | (v & WAITERS), Release, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => v = actual,
            }
        }
        // The owner's pid stays: `info` tells who abandoned it.
        if v & WAITERS != 0 {
            parker.unpark(&self.lock.word, WAKE_ALL);
        }
        true
    }

    /// Claims a free slot for process `me`: one that is 0, or whose claimer died. Its
    /// watch word starts at 0.
    pub(crate) fn claim_slot(&self, me: u32) -> Option<usize> {
        self.claims
            .iter()
            .position(|c| {
                let v = c.word.load(Relaxed);
                v & ID_MASK == 0 && c.word.compare_exchange(v, me, SeqCst, Relaxed).is_ok()
            })
            .inspect(|&j| self.watches[j].word.store(0, SeqCst))
    }

    /// Gives back a slot claimed by `me` (left alone if someone else changed it).
    pub(crate) fn release_slot(&self, slot: usize, me: u32) {
        if let Some(c) = self.claims.get(slot) {
            let _ = c.word.compare_exchange(me, 0, SeqCst, Relaxed);
        }
    }

    /// The owning process's pid: a hint written by the owner, for `ls`/`info`. It stays
    /// after the owner died, until the next owner writes its own. Anyone who may write the
    /// mutex can write any number there: one that no process can have (0, or above
    /// `i32::MAX`, which `kill` would take for a process group) is none.
    pub(crate) fn owner_pid(&self) -> Option<u32> {
        Some(self.lock.extra.load(Relaxed)).filter(|&p| p != 0 && i32::try_from(p).is_ok())
    }

    /// What the kernel does to the word of a robust futex when the thread `dead` dies
    /// (`handle_futex_death`, non-PI): if the word names `dead`, it becomes
    /// `OWNER_DIED | (WAITERS if it was set)`, and one sleeper is woken if it was.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn kernel_death(word: &AtomicU32, dead: u32, parker: &dyn Parker) {
        let mut v = word.load(SeqCst);
        while v & ID_MASK == dead {
            match word.compare_exchange(v, (v & WAITERS) | OWNER_DIED, SeqCst, SeqCst) {
                Ok(_) => {
                    if v & WAITERS != 0 {
                        parker.unpark(word, 1);
                    }
                    return;
                }
                Err(actual) => v = actual,
            }
        }
    }
}

/// One process's view of a mutex while one of its threads waits for it.
#[derive(Debug)]
pub(crate) struct MutexWait<'a> {
    pub(crate) state: &'a MutexState,
    /// This process's id word.
    pub(crate) me: u32,
    /// This process's slot, whose watch word its waiters use.
    pub(crate) slot: Option<usize>,
    /// The waiting thread owns the mutex already (the caller knows it from its private
    /// bookkeeping): taking it is immediate, a recursive acquire.
    pub(crate) recursive: bool,
}

impl Waitable for MutexWait<'_> {
    fn begin(&self) -> u32 {
        0
    }

    fn try_take(&self, _: u32) -> Option<Taken> {
        if self.recursive {
            return Some(Taken::Signalled);
        }
        match self.state.try_lock(self.me)? {
            true => Some(Taken::Abandoned),
            false => Some(Taken::Signalled),
        }
    }

    fn prepare_sleep<'a>(&'a self, _: u32, words: &mut Words<'a>) -> bool {
        let lock = &self.state.lock.word;
        // Only ever sleep on an owned word with WAITERS set: the unlock of exactly that
        // word wakes us. (A free value would be wrong: the word may go from free to owned
        // and back to free before the kernel compares it, and then nobody wakes us.)
        let mut v = lock.load(Relaxed);
        loop {
            if v & ID_MASK == 0 {
                return false;
            }
            if v & WAITERS != 0 {
                break;
            }
            match lock.compare_exchange(v, v | WAITERS, Relaxed, Relaxed) {
                Ok(_) => v |= WAITERS,
                Err(actual) => v = actual,
            }
        }
        words.push((lock, v));
        if let Some(slot) = self.slot {
            // Watch the owner: if its process dies, the kernel marks this word too, and
            // wakes us through it. SeqCst against the kernel's marking order (lock word
            // first, then watch words): either we see the lock word marked, or the kernel
            // sees this store.
            let watch = &self.state.watches[slot].word;
            let d = (v & ID_MASK) | WAITERS;
            watch.store(d, SeqCst);
            words.push((watch, d));
        }
        true
    }

    fn finish_sleep(&self) {}

    fn watched(&self) -> bool {
        self.slot.is_some() || self.recursive
    }
}

/// The parker of the unit tests (here and in the channels): it sleeps by yielding, so that
/// Miri (which has no futexes) can run the waits, and every return is an early one, which
/// the algorithms must handle.
#[cfg(all(test, not(loom)))]
pub(crate) mod test_parker {
    use super::*;

    pub(crate) struct Yield;

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
        fn park_any(&self, words: &Words<'_>, deadline: Option<Instant>) -> Parked {
            match words.first() {
                Some((word, val)) => self.park(word, val, deadline),
                None => Parked::Woken,
            }
        }
        fn unpark(&self, _: &AtomicU32, _: u32) {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! The algorithms on heap memory, with threads and a yielding parker (Miri-friendly).
    //! Threads stand for processes; a process's death is what the kernel does to its
    //! robust words ([`MutexState::kernel_death`]).

    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::sync::Arc;
    use std::time::Duration;

    use super::test_parker::Yield;

    /// Counts wake-ups by word address and size, to check who gets woken and how many.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(usize, u32)>>);

    impl Parker for Recorder {
        fn park(&self, w: &AtomicU32, e: u32, d: Option<Instant>) -> Parked {
            Yield.park(w, e, d)
        }
        fn park_any(&self, w: &Words<'_>, d: Option<Instant>) -> Parked {
            Yield.park_any(w, d)
        }
        fn unpark(&self, word: &AtomicU32, n: u32) {
            self.0
                .lock()
                .unwrap()
                .push((word as *const AtomicU32 as usize, n));
        }
    }

    fn addr(w: &AtomicU32) -> usize {
        w as *const AtomicU32 as usize
    }

    fn zeroed<T: Default>() -> Box<T> {
        Box::default()
    }

    const THREADS: usize = if cfg!(miri) { 3 } else { 8 };
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 2000 };

    fn taken(r: Option<(usize, Taken)>) -> Option<usize> {
        r.map(|(i, how)| {
            assert_eq!(how, Taken::Signalled);
            i
        })
    }

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
            assert_eq!(s.try_take(0), Some(Taken::Signalled));
        }
        assert_eq!(s.try_take(0), None);
        let start = Instant::now();
        assert_eq!(
            wait_any(&[&*s], &Yield, Some(start + Duration::from_millis(20))),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn semaphore_hands_out_exactly_what_is_released() {
        let _w = crate::testing::watchdog(120);
        let s: Arc<SemaphoreState> = Arc::from(zeroed::<SemaphoreState>());
        s.init(0, u32::MAX);
        let got = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (s, got) = (s.clone(), got.clone());
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        assert_eq!(taken(wait_any(&[&*s], &Yield, None)), Some(0));
                        got.fetch_add(1, SeqCst);
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
        assert_eq!(got.load(SeqCst), THREADS * ROUNDS);
        assert_eq!(s.count(), 0);
    }

    /// Every signal wakes every sleeper, so that a sleeper that dies after its wake-up
    /// cannot strand the others (issue 8, defect 3).
    #[test]
    fn signals_wake_every_sleeper() {
        let (s, auto, manual) = (
            zeroed::<SemaphoreState>(),
            zeroed::<EventState>(),
            zeroed::<EventState>(),
        );
        s.init(0, 10);
        auto.init(false, false);
        manual.init(true, false);
        let rec = Recorder::default();
        // Nobody sleeps: no system call.
        s.release(1, &rec).unwrap();
        auto.set(&rec);
        assert!(rec.0.lock().unwrap().is_empty());
        // Three sleepers each.
        let mut words = Words::new();
        for o in [&*s as &dyn Waitable, &*auto, &*manual] {
            for _ in 0..3 {
                assert!(o.prepare_sleep(o.begin(), &mut words));
            }
        }
        s.release(1, &rec).unwrap();
        auto.set(&rec);
        manual.set(&rec);
        assert_eq!(
            *rec.0.lock().unwrap(),
            [
                (addr(&s.count), WAKE_ALL),
                (addr(&auto.signalled), WAKE_ALL),
                (addr(&manual.generation), WAKE_ALL)
            ]
        );
    }

    #[test]
    fn auto_reset_event_releases_one_waiter_per_set() {
        let _w = crate::testing::watchdog(120);
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
        assert_eq!(e.try_take(token), None);
        e.set(&Yield);
        for _ in 0..5 {
            assert!(e.try_take(e.begin()).is_some(), "stays signalled");
        }
        e.reset();
        assert_eq!(e.try_take(e.begin()), None);
        // A wait that began before the set is released even after the reset.
        assert!(e.try_take(token).is_some());
    }

    #[test]
    fn manual_reset_releases_every_waiter_of_a_set_even_if_reset_at_once() {
        let _w = crate::testing::watchdog(120);
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
                    let mut words = Words::new();
                    while e.try_take(token).is_none() {
                        words.clear();
                        assert!(e.prepare_sleep(token, &mut words));
                        let (word, val) = words.first().unwrap();
                        Yield.park(word, val, None);
                        e.finish_sleep();
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
        assert_eq!(taken(wait_any(&objs, &Yield, soon())), Some(1));
        assert_eq!(taken(wait_any(&objs, &Yield, soon())), Some(1));
        assert_eq!(taken(wait_any(&objs, &Yield, soon())), Some(2));
        a.set(&Yield);
        assert_eq!(taken(wait_any(&objs, &Yield, soon())), Some(0));
        assert!(!a.is_set(), "taking an auto-reset event resets it");
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn wait_any_across_threads() {
        let _w = crate::testing::watchdog(120);
        let e: Arc<EventState> = Arc::from(zeroed::<EventState>());
        let s: Arc<SemaphoreState> = Arc::from(zeroed::<SemaphoreState>());
        e.init(false, false);
        s.init(0, 1000);
        let got = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (e, s, got) = (e.clone(), s.clone(), got.clone());
                std::thread::spawn(move || {
                    let i = taken(wait_any(&[&*e, &*s], &Yield, None)).unwrap();
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

    // -----------------------------------------------------------------------------------
    // The mutex.

    fn mutex() -> Arc<MutexState> {
        Arc::from(zeroed::<MutexState>())
    }

    fn lock(m: &MutexState, me: u32, slot: Option<usize>, d: Option<Instant>) -> Option<Taken> {
        let w = MutexWait {
            state: m,
            me,
            slot,
            recursive: false,
        };
        wait_any(&[&w], &Yield, d).map(|(i, how)| {
            assert_eq!(i, 0);
            how
        })
    }

    /// What the kernel does when process `dead` dies: its robust list names the lock word
    /// first, then every watch word, then its claim.
    fn die(m: &MutexState, dead: u32, parker: &dyn Parker) {
        MutexState::kernel_death(&m.lock.word, dead, parker);
        for w in &m.watches {
            MutexState::kernel_death(&w.word, dead, parker);
        }
        for c in &m.claims {
            MutexState::kernel_death(&c.word, dead, parker);
        }
    }

    #[test]
    fn mutex_excludes_across_threads_that_stand_for_processes() {
        let _w = crate::testing::watchdog(120);
        let m = mutex();
        // Relaxed and non-atomic on purpose: only the mutex's Acquire/Release orders them,
        // so a broken mutex loses updates (and Miri sees stale values).
        let counter = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (m, counter) = (m.clone(), counter.clone());
                std::thread::spawn(move || {
                    let me = 100 + t as u32;
                    let slot = m.claim_slot(me);
                    assert!(slot.is_some());
                    for _ in 0..ROUNDS {
                        assert_eq!(lock(&m, me, slot, None), Some(Taken::Signalled));
                        let v = counter.load(Relaxed);
                        std::thread::yield_now();
                        counter.store(v + 1, Relaxed);
                        m.unlock(me, &Yield).unwrap();
                    }
                    m.release_slot(slot.unwrap(), me);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(SeqCst), (THREADS * ROUNDS) as u64);
        assert_eq!(m.lock.word.load(SeqCst) & ID_MASK, 0);
        assert!(m.claims.iter().all(|c| c.word.load(SeqCst) == 0));
    }

    #[test]
    fn a_dead_owner_hands_the_mutex_on_as_abandoned_once() {
        let _w = crate::testing::watchdog(120);
        let m = mutex();
        let owner = 7;
        assert_eq!(m.try_lock(owner), Some(false));
        let results = Arc::new(std::sync::Mutex::new(Vec::new()));
        let waiting = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (m, results, waiting) = (m.clone(), results.clone(), waiting.clone());
                std::thread::spawn(move || {
                    let me = 100 + t as u32;
                    let slot = m.claim_slot(me);
                    waiting.fetch_add(1, SeqCst);
                    let how = lock(&m, me, slot, None).unwrap();
                    results.lock().unwrap().push(how);
                    m.unlock(me, &Yield).unwrap();
                })
            })
            .collect();
        while waiting.load(SeqCst) < THREADS {
            std::thread::yield_now();
        }
        die(&m, owner, &Yield);
        for h in handles {
            h.join().unwrap();
        }
        let results = results.lock().unwrap();
        assert_eq!(results.len(), THREADS);
        assert_eq!(
            results.iter().filter(|&&h| h == Taken::Abandoned).count(),
            1,
            "{results:?}"
        );
        assert_eq!(
            m.lock.word.load(SeqCst) & !WAITERS,
            0,
            "free and not abandoned"
        );
    }

    #[test]
    fn the_kernel_marks_the_watch_words_of_the_dead_owner_and_wakes_each() {
        let m = mutex();
        let (owner, a, b) = (7, 8, 9);
        assert_eq!(m.try_lock(owner), Some(false));
        let (sa, sb) = (m.claim_slot(a).unwrap(), m.claim_slot(b).unwrap());
        assert_ne!(sa, sb);
        // Both waiting processes announce themselves, as before sleeping.
        let waits = [(a, sa), (b, sb)].map(|(me, slot)| MutexWait {
            state: &m,
            me,
            slot: Some(slot),
            recursive: false,
        });
        let mut words = Words::new();
        for w in &waits {
            assert_eq!(w.try_take(0), None);
            assert!(w.prepare_sleep(0, &mut words));
        }
        assert_eq!(m.lock.word.load(SeqCst), owner | WAITERS);
        for s in [sa, sb] {
            assert_eq!(m.watches[s].word.load(SeqCst), owner | WAITERS);
        }
        let rec = Recorder::default();
        die(&m, owner, &rec);
        // One wake on the lock word and one on each watch word: each waiting process gets
        // its own, whatever happens to the others.
        assert_eq!(
            *rec.0.lock().unwrap(),
            [
                (addr(&m.lock.word), 1),
                (addr(&m.watches[sa].word), 1),
                (addr(&m.watches[sb].word), 1)
            ]
        );
        assert_eq!(m.lock.word.load(SeqCst), OWNER_DIED | WAITERS);
        // The claims of the living stay; the first taker reports the abandonment, keeping
        // WAITERS so that its unlock wakes the other.
        assert_eq!(m.claims[sa].word.load(SeqCst), a);
        assert_eq!(m.try_lock(b), Some(true));
        assert_eq!(m.lock.word.load(SeqCst), b | WAITERS);
        assert_eq!(m.try_lock(a), None);
        let rec = Recorder::default();
        m.unlock(b, &rec).unwrap();
        assert_eq!(*rec.0.lock().unwrap(), [(addr(&m.lock.word), WAKE_ALL)]);
        assert_eq!(m.try_lock(a), Some(false));
    }

    #[test]
    fn a_waiter_sleeps_only_on_an_owned_word_with_waiters_set() {
        let m = mutex();
        let w = MutexWait {
            state: &m,
            me: 2,
            slot: Some(0),
            recursive: false,
        };
        let mut words = Words::new();
        // Free: no value to sleep on (it could be free again when the kernel compares).
        assert!(!w.prepare_sleep(0, &mut words));
        assert_eq!(words.len(), 0);
        m.lock.word.store(WAITERS | OWNER_DIED, SeqCst);
        assert!(!w.prepare_sleep(0, &mut words), "free and abandoned");
        // Owned: WAITERS is set first, and that is the value slept on.
        m.lock.word.store(1, SeqCst);
        assert!(w.prepare_sleep(0, &mut words));
        let got: Vec<(usize, u32)> = words.iter().map(|(w, v)| (addr(w), v)).collect();
        assert_eq!(
            got,
            [
                (addr(&m.lock.word), 1 | WAITERS),
                (addr(&m.watches[0].word), 1 | WAITERS)
            ]
        );
    }

    #[test]
    fn an_owner_thread_that_exits_abandons_the_mutex() {
        let m = mutex();
        assert_eq!(m.try_lock(5), Some(false));
        m.lock.extra.store(1234, SeqCst);
        assert_eq!(m.owner_pid(), Some(1234));
        assert!(!m.abandon(6, &Yield), "not 6's to abandon");
        assert!(m.abandon(5, &Yield));
        assert_eq!(
            m.owner_pid(),
            Some(1234),
            "abandoned by 1234, as `info` tells"
        );
        assert_eq!(m.try_lock(6), Some(true));
        m.unlock(6, &Yield).unwrap();
        assert_eq!(m.try_lock(6), Some(false), "reported once");
        // Numbers that no process can have, written by someone else, are no pid.
        for p in [0, 0x8000_0000, u32::MAX] {
            m.lock.extra.store(p, SeqCst);
            assert_eq!(m.owner_pid(), None, "{p:#x}");
        }
        m.lock.extra.store(0x7fff_ffff, SeqCst);
        assert_eq!(m.owner_pid(), Some(0x7fff_ffff));
    }

    #[test]
    fn a_word_changed_behind_the_owners_back_is_refused_and_left_alone() {
        let m = mutex();
        assert_eq!(m.try_lock(5), Some(false));
        m.lock.word.store(77 | WAITERS, SeqCst);
        assert_eq!(m.unlock(5, &Yield), Err(Foreign { word: 77 | WAITERS }));
        assert_eq!(m.lock.word.load(SeqCst), 77 | WAITERS);
        // Any value is a state: garbage is an owned mutex that times out, not a crash.
        m.lock.word.store(u32::MAX, SeqCst);
        let soon = Some(Instant::now() + Duration::from_millis(5));
        assert_eq!(lock(&m, 5, None, soon), None);
        for c in &m.claims {
            c.word.store(!OWNER_DIED, SeqCst);
        }
        assert_eq!(m.claim_slot(5), None, "every slot looks taken");
    }

    #[test]
    fn slots_are_claimed_released_and_reclaimed_from_the_dead() {
        let m = mutex();
        let slots: Vec<usize> = (1..=SLOTS as u32)
            .map(|me| m.claim_slot(me).unwrap())
            .collect();
        assert_eq!(slots, (0..SLOTS).collect::<Vec<_>>());
        assert_eq!(m.claim_slot(999), None);
        m.release_slot(3, 4);
        m.watches[5].word.store(1 | WAITERS, SeqCst);
        die(&m, 6, &Yield);
        assert_eq!(m.claims[5].word.load(SeqCst), OWNER_DIED);
        assert_eq!(m.claim_slot(1000), Some(3));
        assert_eq!(m.claim_slot(1001), Some(5));
        assert_eq!(
            m.watches[5].word.load(SeqCst),
            0,
            "a new claim starts clean"
        );
        m.release_slot(5, 1234);
        assert_eq!(
            m.claims[5].word.load(SeqCst),
            1001,
            "not 1234's to give back"
        );
    }

    #[test]
    fn wait_any_takes_a_mutex_and_reports_abandonment_by_index() {
        let (e, m) = (*zeroed::<EventState>(), mutex());
        e.init(false, false);
        assert_eq!(m.try_lock(3), Some(false));
        let w = |recursive| MutexWait {
            state: &m,
            me: 4,
            slot: None,
            recursive,
        };
        let soon = || Some(Instant::now() + Duration::from_millis(5));
        let (w0, w1) = (w(false), w(true));
        assert_eq!(wait_any(&[&e, &w0], &Yield, soon()), None);
        assert_eq!(
            wait_any(&[&e, &w1], &Yield, soon()),
            Some((1, Taken::Signalled)),
            "a recursive acquire is immediate"
        );
        die(&m, 3, &Yield);
        e.set(&Yield);
        assert_eq!(
            wait_any(&[&w0, &e], &Yield, soon()),
            Some((0, Taken::Abandoned))
        );
        assert_eq!(
            wait_any(&[&w0, &e], &Yield, soon()),
            Some((1, Taken::Signalled))
        );
        // Owned by 4 (perhaps with the WAITERS bit that the timed-out wait left: a spare
        // wake-up at most).
        assert_eq!(m.lock.word.load(SeqCst) & !WAITERS, 4);
    }

    /// A parker that never hears a wake-up: a sleep ends only at its deadline.
    struct Deaf;

    impl Parker for Deaf {
        fn park(&self, _: &AtomicU32, _: u32, deadline: Option<Instant>) -> Parked {
            let d = deadline.expect("a sleep without a deadline would never end");
            std::thread::sleep(d.saturating_duration_since(Instant::now()));
            Parked::TimedOut
        }
        fn park_any(&self, w: &Words<'_>, d: Option<Instant>) -> Parked {
            match w.first() {
                Some((word, val)) => self.park(word, val, d),
                None => Parked::Woken,
            }
        }
        fn unpark(&self, _: &AtomicU32, _: u32) {}
    }

    #[test]
    fn an_unwatched_waiter_notices_a_free_mutex_by_itself() {
        // No slot: a lost wake-up (here every one is lost) costs at most a recheck.
        let m = mutex();
        assert_eq!(m.try_lock(1), Some(false));
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let w = MutexWait {
                    state: &m,
                    me: 2,
                    slot: None,
                    recursive: false,
                };
                wait_any(&[&w], &Deaf, None)
            });
            std::thread::sleep(Duration::from_millis(1));
            m.unlock(1, &Deaf).unwrap();
            assert_eq!(t.join().unwrap(), Some((0, Taken::Signalled)));
        });
    }
}
