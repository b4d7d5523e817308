//! Broadcast and latest-value channels: slots guarded by sequence numbers (seqlocks), as
//! pure atomics over shared memory, like `algo.rs`.
//!
//! # Slots
//!
//! A slot is a 16-byte slot header (`seq: u64`, `len: u32`, 4 bytes of padding), then the
//! message, every byte inside an 8-byte word, the whole rounded up to 64 bytes. Writing
//! message (or value) number `n` into a slot: store `seq = 2n + 1` (odd: being written),
//! a `Release` fence, the length and the words (`Relaxed`), then `seq = 2n + 2` with
//! `Release`. Reading: load `seq` (`Acquire`), the length and the words (`Relaxed`), an
//! `Acquire` fence, and `seq` again: the copy is whole exactly when both loads give the
//! same even value, the one expected for `n`. This is Boehm's seqlock ("Can seqlocks get
//! along with programming language memory models?", 2012): every access to the slot is
//! atomic, so a reader racing a writer gets a torn copy that it throws away, never
//! undefined behaviour.
//!
//! # Broadcast
//!
//! `capacity` slots (a power of two); message `n` goes to slot `n % capacity`. The
//! publisher never waits: it writes over the oldest message. `published` counts the
//! messages; a subscriber keeps its own next number, and one that finds it older than
//! `published + 1 - capacity` (the oldest message not being written over) has lost the
//! difference, which it is told.
//!
//! # Latest value
//!
//! Two slots; value number `v` (from 1) goes to slot `v % 2`, so the writer always writes
//! the slot that readers are not directed to. `version` is the number of the latest whole
//! value. A writer killed halfway leaves `version` on the previous value, whose slot it
//! did not touch.
//!
//! # Waking
//!
//! Waiting sides set their bit in `sleeping` (one bit per subscriber or reader slot),
//! fence ([`Parker::fence_slow`]) and look again before they sleep on `wake` (the low 32
//! bits of `published` or `version`); the writer stores `wake`, fences
//! ([`Parker::fence_fast`]) and wakes all if `sleeping` is not 0. A waiter killed while
//! asleep leaves its bit set, which costs the writer a futex wake per message until its
//! slot is taken again or the writer sweeps the bits of dead slots.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use crate::atomic::{
    fence, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use crate::channel::algo::{sleep_while, ControlPage, Geometry, Header};
use crate::channel::mem::Shared;
use crate::sync::algo::Parker;

/// The control page of a broadcast or latest-value channel: the header, then the
/// writer's line.
#[cfg_attr(loom, derive(Default))]
#[repr(C, align(128))]
pub(crate) struct SlotControl {
    pub(crate) header: Header,
    /// Broadcast: messages published. Latest: the number of the latest whole value (0:
    /// none yet).
    pub(crate) published: AtomicU64,
    /// The futex word: the low 32 bits of `published`.
    pub(crate) wake: AtomicU32,
    /// The writer's state word (`algo::CONNECTED`, `algo::CLOSED`).
    pub(crate) producer: AtomicU32,
    pub(crate) producer_pid: AtomicU32,
    _pad: AtomicU32,
    /// Unused (the sleeping bits of layout version 1).
    _reserved: AtomicU64,
    _line1: [AtomicU64; 12],
    // The sleeping bits' line: read after every write, written only by a reader about to
    // sleep (or waking), so that it stays cached on every side.
    /// One bit per subscriber or reader slot that may sleep on `wake`.
    pub(crate) sleeping: AtomicU64,
    _line2: [AtomicU64; 15],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<SlotControl>() == 384);

// SAFETY: repr(C), atomics only, 384 bytes, starts with the header.
unsafe impl ControlPage for SlotControl {}

impl std::fmt::Debug for SlotControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotControl")
            .field("published", &self.published.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// Bytes of a slot header.
const SLOT_HEADER: usize = 16;

/// Copies `src` into shared memory at offset `off`, one `Relaxed` atomic 8-byte store per
/// word (the last word padded with zeros).
///
/// # Safety
///
/// `off` is 8-aligned, and `src.len()` rounded up to 8 bytes from it are inside the memory
/// and only ever accessed through atomics.
#[inline]
pub(crate) unsafe fn store_words(mem: Shared, off: usize, src: &[u8]) {
    let mut chunks = src.chunks_exact(8);
    for (i, c) in chunks.by_ref().enumerate() {
        let v = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        // SAFETY: word `i` is inside the range the caller vouches for, 8-aligned.
        unsafe { mem.u64_at(off + 8 * i) }.store(v, Relaxed);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        // SAFETY: the last, partial word is inside the rounded-up range.
        unsafe { mem.u64_at(off + src.len() / 8 * 8) }.store(u64::from_ne_bytes(b), Relaxed);
    }
}

/// Copies `src` to byte `at` of the message area that starts at offset `area`: one
/// `Relaxed` atomic 8-byte store per word, a word that `src` covers only in part merged
/// with what it holds (the writer of a slot is its only writer, so it reads back its own).
///
/// # Safety
///
/// `area` is 8-aligned, and `at + src.len()` bytes from it, rounded up to 8, are inside the
/// memory and only ever accessed through atomics.
pub(crate) unsafe fn store_bytes_at(mem: Shared, area: usize, at: usize, src: &[u8]) {
    let end = at + src.len();
    let mut pos = at;
    while pos < end {
        let word = pos / 8 * 8;
        let (from, to) = (pos - word, (end - word).min(8));
        // SAFETY: the word is inside the rounded-up range the caller vouches for, 8-aligned.
        let w = unsafe { mem.u64_at(area + word) };
        let mut b = match (from, to) {
            (0, 8) => [0; 8],
            _ => w.load(Relaxed).to_ne_bytes(),
        };
        b[from..to].copy_from_slice(&src[pos - at..pos - at + (to - from)]);
        w.store(u64::from_ne_bytes(b), Relaxed);
        pos = word + to;
    }
}

/// Makes `buf` hold the `len` bytes of shared memory at offset `off`, one `Relaxed` atomic
/// 8-byte load per word, written into the vector's spare room (no zeroing first: a 64 KiB
/// value paid a 64 KiB `memset` before its copy).
///
/// # Safety
///
/// As for [`store_words`], with `len` for `src.len()`.
#[inline]
pub(crate) unsafe fn load_words(mem: Shared, off: usize, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve(len);
    // SAFETY: the caller's promise for the source; the vector's room is `len` bytes
    // (reserved above), which nothing else refers to.
    unsafe { load_words_raw(mem, off, len, buf.as_mut_ptr()) };
    // SAFETY: the `len` bytes were written above.
    unsafe { buf.set_len(len) };
}

/// Writes the `len` bytes of shared memory at offset `off` to `dst`, one `Relaxed` atomic
/// 8-byte load per word (each written unaligned).
///
/// # Safety
///
/// As for [`store_words`], with `len` for `src.len()`; `dst` is valid for writes of `len`
/// bytes, and no reference covers them.
#[inline]
unsafe fn load_words_raw(mem: Shared, off: usize, len: usize, dst: *mut u8) {
    for i in 0..len / 8 {
        // SAFETY: word `i` is inside the range the caller vouches for, 8-aligned.
        let v = unsafe { mem.u64_at(off + 8 * i) }.load(Relaxed);
        // SAFETY: `8 * i + 8 <= len`, inside the room the caller vouches for.
        unsafe { dst.add(8 * i).cast::<u64>().write_unaligned(v) };
    }
    let done = len / 8 * 8;
    if done < len {
        // SAFETY: the last, partial word is inside the rounded-up range.
        let v = unsafe { mem.u64_at(off + done) }.load(Relaxed);
        let bytes = v.to_ne_bytes();
        // SAFETY: `len - done` (< 8) bytes from `done`, inside the room.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(done), len - done) };
    }
}

/// Copies the `dst.len()` bytes of shared memory at offset `off` into `dst`, one `Relaxed`
/// atomic 8-byte load per word (straight into a value's bytes, where [`load_words`] fills a
/// vector).
///
/// # Safety
///
/// As for [`store_words`], with `dst.len()` for `src.len()`.
#[inline]
unsafe fn load_words_into(mem: Shared, off: usize, dst: &mut [u8]) {
    let len = dst.len();
    let mut chunks = dst.chunks_exact_mut(8);
    for (i, c) in chunks.by_ref().enumerate() {
        // SAFETY: word `i` is inside the range the caller vouches for, 8-aligned.
        let v = unsafe { mem.u64_at(off + 8 * i) }.load(Relaxed);
        c.copy_from_slice(&v.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        // SAFETY: the last, partial word is inside the rounded-up range.
        let v = unsafe { mem.u64_at(off + len / 8 * 8) }.load(Relaxed);
        let n = rest.len();
        rest.copy_from_slice(&v.to_ne_bytes()[..n]);
    }
}

/// The bytes of a slot that a read has vouched for (at most `max`, inside the slot), for a
/// [`Sink`] to copy out. They are still being read: the copy counts only if the slot's
/// `seq` then reads the same (see [`Slots::read`]).
pub(crate) struct SlotBytes {
    mem: Shared,
    off: usize,
    len: usize,
}

impl SlotBytes {
    /// The message's length.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies the bytes into `buf`, replacing its contents.
    #[inline]
    pub(crate) fn to_vec(&self, buf: &mut Vec<u8>) {
        // SAFETY: `off` is a slot's message area, which holds `max` bytes rounded up to
        // 8, 8-aligned, accessed only through atomics; `len` is at most `max`.
        unsafe { load_words(self.mem, self.off, self.len, buf) };
    }

    /// Writes the bytes to `dst` if they fit in its `room` bytes; `false` (nothing
    /// written) if not.
    ///
    /// # Safety
    ///
    /// `dst` is valid for writes of `room` bytes, and no reference covers them.
    #[inline]
    pub(crate) unsafe fn to_raw(&self, dst: *mut u8, room: usize) -> bool {
        if self.len > room {
            return false;
        }
        // SAFETY: as in `to_vec` for the source; the caller's promise for `dst`, of which
        // `len` ≤ `room` bytes are written.
        unsafe { load_words_raw(self.mem, self.off, self.len, dst) };
        true
    }

    /// Copies the bytes into the start of `dst` if they fit; `false` (nothing copied) if
    /// not.
    #[inline]
    pub(crate) fn to_slice(&self, dst: &mut [u8]) -> bool {
        let Some(dst) = dst.get_mut(..self.len) else {
            return false;
        };
        // SAFETY: as in `to_vec`.
        unsafe { load_words_into(self.mem, self.off, dst) };
        true
    }
}

/// Where a read of a slot puts its bytes.
pub(crate) trait Sink {
    /// Copies what it wants of `bytes` (a torn copy is thrown away by the caller, which
    /// reads again into the same sink).
    fn take(&mut self, bytes: &SlotBytes);

    /// Whether it refused the last message it was given (too long for it): a subscriber
    /// then keeps that message for its next receive.
    fn refused(&self) -> bool {
        false
    }
}

/// A sink of fixed length, which takes a message of at most its length or refuses it:
/// what it took, or the length of what it refused.
pub(crate) trait Fixed: Sink {
    /// The buffer's length.
    fn room(&self) -> usize;

    /// The last message's length: `Ok` if it was copied, `Err` if not.
    fn got(&self) -> Result<usize, usize>;
}

/// A vector, made to hold the message.
impl Sink for Vec<u8> {
    #[inline]
    fn take(&mut self, bytes: &SlotBytes) {
        bytes.to_vec(self);
    }
}

/// A buffer of fixed length.
///
/// - [`exact`](Self::exact), for a value of one size (a typed read): a message of that
///   length is copied; another length is not, and counts as read.
/// - [`up_to`](Self::up_to): a message of at most the buffer's length is copied into its
///   start; a longer one is not, and is [refused](Sink::refused).
///
/// Where a message was not copied, `dst` holds nothing of use (perhaps a torn copy of an
/// earlier message, read before the slot was written over).
pub(crate) struct Buf<'b> {
    dst: &'b mut [u8],
    exact: bool,
    /// The last message's length: `Ok` if it was copied, `Err` if not.
    pub(crate) got: Result<usize, usize>,
}

impl<'b> Buf<'b> {
    #[inline]
    pub(crate) fn exact(dst: &'b mut [u8]) -> Buf<'b> {
        Buf {
            dst,
            exact: true,
            got: Err(0),
        }
    }

    #[inline]
    pub(crate) fn up_to(dst: &'b mut [u8]) -> Buf<'b> {
        Buf {
            dst,
            exact: false,
            got: Err(0),
        }
    }
}

impl Sink for Buf<'_> {
    #[inline]
    fn take(&mut self, bytes: &SlotBytes) {
        let len = bytes.len();
        let fits = match self.exact {
            true => len == self.dst.len(),
            false => len <= self.dst.len(),
        };
        self.got = match fits && bytes.to_slice(self.dst) {
            true => Ok(len),
            false => Err(len),
        };
    }

    #[inline]
    fn refused(&self) -> bool {
        !self.exact && self.got.is_err()
    }
}

/// Memory that a reference cannot stand for (a buffer of another runtime, which its own
/// threads may write meanwhile): a message of at most `room` bytes is written to the start
/// of `dst`; a longer one is not, and is [refused](Sink::refused), as with
/// [`Buf::up_to`].
pub(crate) struct Raw {
    dst: *mut u8,
    room: usize,
    /// The last message's length: `Ok` if it was written, `Err` if not.
    pub(crate) got: Result<usize, usize>,
}

impl Raw {
    /// # Safety
    ///
    /// `dst` is valid for writes of `room` bytes while the `Raw` lives, and no reference
    /// covers them.
    #[inline]
    pub(crate) unsafe fn up_to(dst: *mut u8, room: usize) -> Raw {
        Raw {
            dst,
            room,
            got: Err(0),
        }
    }
}

impl Sink for Raw {
    #[inline]
    fn take(&mut self, bytes: &SlotBytes) {
        let len = bytes.len();
        // SAFETY: `up_to`'s promise.
        self.got = match unsafe { bytes.to_raw(self.dst, self.room) } {
            true => Ok(len),
            false => Err(len),
        };
    }

    #[inline]
    fn refused(&self) -> bool {
        self.got.is_err()
    }
}

impl Fixed for Buf<'_> {
    #[inline]
    fn room(&self) -> usize {
        self.dst.len()
    }

    #[inline]
    fn got(&self) -> Result<usize, usize> {
        self.got
    }
}

impl Fixed for Raw {
    #[inline]
    fn room(&self) -> usize {
        self.room
    }

    #[inline]
    fn got(&self) -> Result<usize, usize> {
        self.got
    }
}

/// A channel's slots.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slots<'a> {
    pub(crate) ctl: &'a SlotControl,
    mem: Shared,
    stride: usize,
    count: u64,
    pub(crate) max: u32,
}

/// The sequence word of a slot while number `n` is written into it (odd).
///
/// Numbers come from shared memory (`published`), which anyone who may write the channel
/// can set to anything: arithmetic on them wraps, and never panics.
fn writing(n: u64) -> u64 {
    n.wrapping_mul(2).wrapping_add(1)
}

/// The sequence word of a slot once number `n` is in it (even).
fn written(n: u64) -> u64 {
    n.wrapping_mul(2).wrapping_add(2)
}

/// What went wrong reading a slot: shared state that no correct writer leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

impl<'a> Slots<'a> {
    /// # Safety
    ///
    /// `base` points at `g.capacity * g.slot_stride()` bytes, 8-aligned, that stay mapped
    /// (readable and writable) for `'a` and are only accessed through atomics.
    pub(crate) unsafe fn new(ctl: &'a SlotControl, base: *mut u8, g: Geometry) -> Slots<'a> {
        Slots {
            ctl,
            // SAFETY: the caller's promise, which is `Shared::new`'s.
            mem: unsafe { Shared::new(base) },
            stride: g.slot_stride() as usize,
            count: u64::from(g.capacity),
            max: g.max_message,
        }
    }

    /// The offset of slot `i` (`i` < count, so the slot is inside the area).
    #[inline]
    fn slot(&self, i: u64) -> usize {
        assert!(i < self.count);
        i as usize * self.stride
    }

    #[inline]
    fn seq(&self, i: u64) -> &AtomicU64 {
        // SAFETY: the slot starts 8-aligned (the stride is a multiple of 64) inside the
        // area.
        unsafe { self.mem.u64_at(self.slot(i)) }
    }

    #[inline]
    fn len(&self, i: u64) -> &AtomicU32 {
        // SAFETY: as above, 8 bytes in.
        unsafe { self.mem.u32_at(self.slot(i) + 8) }
    }

    /// Starts writing number `n`, of `len` bytes (at most `max`, checked by the caller),
    /// into slot `i`: from here until [`end`](Self::end), readers of the slot throw away
    /// what they read.
    pub(crate) fn begin(&self, i: u64, n: u64, len: u32) {
        assert!(len <= self.max);
        self.seq(i).store(writing(n), Relaxed);
        // Release fence: the odd `seq` is visible before any of the words written after
        // it, to a reader that sees one of them (its Acquire fence pairs with this one).
        fence(Release);
        self.len(i).store(len, Relaxed);
    }

    /// Writes all of the message being written into slot `i` (between
    /// [`begin`](Self::begin) and [`end`](Self::end); at most `max` bytes): whole words, the
    /// last padded with zeros.
    pub(crate) fn fill(&self, i: u64, msg: &[u8]) {
        assert!(msg.len() <= self.max as usize);
        // SAFETY: the slot's message area holds `max` bytes rounded up to 8 (the stride),
        // 8-aligned, and is only accessed through atomics.
        unsafe { store_words(self.mem, self.slot(i) + SLOT_HEADER, msg) };
    }

    /// Writes `data` at byte `at` of the message being written into slot `i` (between
    /// [`begin`](Self::begin) and [`end`](Self::end); `at + data.len()` at most `max`).
    pub(crate) fn put(&self, i: u64, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.max as usize);
        // SAFETY: as in `write`: the range is inside the slot's message area.
        unsafe { store_bytes_at(self.mem, self.slot(i) + SLOT_HEADER, at, data) };
    }

    /// Finishes writing number `n` into slot `i`: readers may take it from here.
    pub(crate) fn end(&self, i: u64, n: u64) {
        // Release: the words happen before a reader's Acquire load of the even `seq`.
        self.seq(i).store(written(n), Release);
    }

    /// Reads number `n` from slot `i` into `sink`: `Ok(true)` if the copy is whole,
    /// `Ok(false)` if the slot holds another number (written over, or not yet written),
    /// `Err` if it holds nonsense.
    #[inline]
    pub(crate) fn read(&self, i: u64, n: u64, sink: &mut impl Sink) -> Result<bool, Corrupt> {
        let want = written(n);
        let seq = self.seq(i);
        let s1 = seq.load(Acquire);
        if s1 != want {
            return Ok(false);
        }
        let len = self.len(i).load(Relaxed);
        let torn = len > self.max;
        let len = len.min(self.max) as usize;
        // At most `max` bytes, in the slot's message area (see `SlotBytes::to_vec`).
        sink.take(&SlotBytes {
            mem: self.mem,
            off: self.slot(i) + SLOT_HEADER,
            len,
        });
        // Acquire fence: if we read any word of a later write, the `seq` load below sees
        // that write's odd number (or later).
        fence(Acquire);
        if seq.load(Relaxed) != s1 {
            return Ok(false);
        }
        if torn {
            // Whole, yet longer than the channel allows: not written by a correct writer.
            return Err(Corrupt);
        }
        Ok(true)
    }
}

/// How long a reader without a sleeping bit (one that opened the channel read-only, and so
/// cannot ask the writer to wake it) sleeps before it looks again, at most.
pub(crate) const READ_ONLY_POLL: Duration = Duration::from_millis(1);

/// Sleeps on `ctl.wake` while it reads `seen`, with `bit` set in `sleeping`; at most
/// [`LIVENESS_PERIOD`](super::algo::LIVENESS_PERIOD). Returns `false` if `deadline` passed.
///
/// With `bit` 0 (a reader of a read-only mapping, which may not write `sleeping`), it
/// sleeps at most [`READ_ONLY_POLL`] and writes nothing.
pub(crate) fn park(
    ctl: &SlotControl,
    bit: u64,
    seen: u32,
    parker: &impl Parker,
    deadline: Option<Instant>,
) -> bool {
    if bit == 0 {
        let poll = Instant::now() + READ_ONLY_POLL;
        let until = deadline.map_or(poll, |d| d.min(poll));
        sleep_while(&ctl.wake, seen, parker, Some(until));
        return deadline.is_none_or(|d| Instant::now() < d);
    }
    ctl.sleeping.fetch_or(bit, Relaxed);
    // The slow side of the Dekker pair with the writer's `wake` store and `sleeping` load.
    parker.fence_slow();
    let woke = sleep_while(&ctl.wake, seen, parker, deadline);
    ctl.sleeping.fetch_and(!bit, Relaxed);
    woke
}

/// Publishes number `n` as the latest (stores `published` and `wake`), and wakes the
/// sleepers if there are any.
pub(crate) fn announce(ctl: &SlotControl, n: u64, parker: &impl Parker) {
    ctl.published.store(n, Release);
    ctl.wake.store(n as u32, Release);
    // The fast side of the Dekker pair with `park`.
    parker.fence_fast();
    let sleeping = ctl.sleeping.load(Relaxed);
    if sleeping != 0 {
        // One sleeper per bit, at most.
        parker.unpark(&ctl.wake, sleeping.count_ones());
    }
}

/// A broadcast publisher's private half.
#[derive(Debug)]
pub(crate) struct Publisher {
    next: u64,
}

impl Publisher {
    /// Takes over the publisher's side (after a crash too: a half-written slot is written
    /// again).
    pub(crate) fn attach(s: &Slots<'_>) -> Publisher {
        Publisher {
            next: s.ctl.published.load(Acquire),
        }
    }

    /// Publishes `msg` (at most `max` bytes, checked by the caller), over the oldest.
    pub(crate) fn publish(&mut self, s: &Slots<'_>, msg: &[u8], parker: &impl Parker) {
        let i = self.lend(s, msg.len() as u32);
        s.fill(i, msg);
        self.commit(s, parker);
    }

    /// Starts writing the next message, of `len` bytes, in place (see [`Slots::begin`]);
    /// returns its slot, for [`Slots::put`]. Until [`commit`](Self::commit), nothing is
    /// published; without it, the next message goes to the same slot.
    pub(crate) fn lend(&mut self, s: &Slots<'_>, len: u32) -> u64 {
        let i = self.next & (s.count - 1);
        s.begin(i, self.next, len);
        i
    }

    /// Publishes the message that [`lend`](Self::lend) started.
    pub(crate) fn commit(&mut self, s: &Slots<'_>, parker: &impl Parker) {
        let n = self.next;
        s.end(n & (s.count - 1), n);
        self.next = n.wrapping_add(1);
        announce(s.ctl, self.next, parker);
    }
}

/// A broadcast subscriber's private half: the number of the next message it reads.
#[derive(Debug)]
pub(crate) struct Subscriber {
    next: u64,
}

impl Subscriber {
    /// The number of the next message to read.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Starts with the next message published.
    pub(crate) fn attach(s: &Slots<'_>) -> Subscriber {
        Subscriber {
            next: s.ctl.published.load(Acquire),
        }
    }

    /// The next message into `sink`, without waiting: `Some(lost)` with the number of
    /// messages it lost (written over before it read them) since the last one, or `None`
    /// if there is none yet. A message that `sink` refused is not read: the next call
    /// gives it again (with a `lost` of 0 for what this call counted).
    pub(crate) fn try_recv(
        &mut self,
        s: &Slots<'_>,
        sink: &mut impl Sink,
    ) -> Result<Option<u64>, Corrupt> {
        let mut lost = 0u64;
        for _ in 0..1_000_000 {
            let published = s.ctl.published.load(Acquire);
            if self.next >= published {
                // A publisher that restarted from an older number (or nonsense): follow it.
                self.next = published;
                return Ok(None);
            }
            // The oldest message not being written over now.
            let oldest = published.saturating_add(1).saturating_sub(s.count);
            if self.next < oldest {
                lost = lost.saturating_add(oldest - self.next);
                self.next = oldest;
            }
            let n = self.next;
            if s.read(n & (s.count - 1), n, sink)? {
                // A message that the sink refused stays the next (unless written over
                // before the next receive, which then counts it as lost).
                if !sink.refused() {
                    self.next = n + 1;
                }
                return Ok(Some(lost));
            }
            // Written over while we read (or `published` ran ahead of the slot, which a
            // correct publisher never does): look again.
        }
        Err(Corrupt)
    }
}

/// A latest-value writer's private half.
#[derive(Debug)]
pub(crate) struct Writer {
    version: u64,
}

impl Writer {
    pub(crate) fn attach(s: &Slots<'_>) -> Writer {
        Writer {
            version: s.ctl.published.load(Acquire),
        }
    }

    /// Publishes `value` (at most `max` bytes, checked by the caller) as the latest.
    pub(crate) fn publish(&mut self, s: &Slots<'_>, value: &[u8], parker: &impl Parker) {
        let i = self.lend(s, value.len() as u32);
        s.fill(i, value);
        self.commit(s, parker);
    }

    /// Starts writing the next value, of `len` bytes, in place (into the slot that readers
    /// are not directed to); returns its slot, for [`Slots::put`]. Until
    /// [`commit`](Self::commit), the latest value stays the one before.
    pub(crate) fn lend(&mut self, s: &Slots<'_>, len: u32) -> u64 {
        let v = self.version.wrapping_add(1);
        s.begin(v & 1, v, len);
        v & 1
    }

    /// Publishes the value that [`lend`](Self::lend) started as the latest.
    pub(crate) fn commit(&mut self, s: &Slots<'_>, parker: &impl Parker) {
        let v = self.version.wrapping_add(1);
        s.end(v & 1, v);
        self.version = v;
        announce(s.ctl, v, parker);
    }
}

/// Reads the latest value into `sink`: `Some(version)`, or `None` if none was published.
pub(crate) fn read_latest(s: &Slots<'_>, sink: &mut impl Sink) -> Result<Option<u64>, Corrupt> {
    for _ in 0..1_000_000 {
        let v = s.ctl.published.load(Acquire);
        if v == 0 {
            return Ok(None);
        }
        if s.read(v & 1, v, sink)? {
            return Ok(Some(v));
        }
        // The writer is past `v` and writing this slot again: the newer value is next.
        crate::atomic::spin_loop();
    }
    Err(Corrupt)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::algo::{KIND_BROADCAST, KIND_LATEST};
    use super::*;

    use std::sync::Arc;

    /// The offsets that docs/channels.md gives to C and Python programs.
    #[test]
    fn the_slot_control_page_is_laid_out_as_documented() {
        use std::mem::offset_of;
        let fields = [
            ("published", offset_of!(SlotControl, published), 128),
            ("wake", offset_of!(SlotControl, wake), 136),
            ("producer", offset_of!(SlotControl, producer), 140),
            ("producer_pid", offset_of!(SlotControl, producer_pid), 144),
            ("sleeping", offset_of!(SlotControl, sleeping), 256),
        ];
        for (field, at, documented) in fields {
            assert_eq!(at, documented, "{field}");
        }
    }

    use crate::sync::algo::test_parker::Yield;

    struct Heap {
        ctl: Box<SlotControl>,
        area: Vec<u64>,
        g: Geometry,
    }

    // SAFETY: the memory is only accessed through atomics.
    unsafe impl Sync for Heap {}
    // SAFETY: as above.
    unsafe impl Send for Heap {}

    impl Heap {
        fn new(kind: u32, capacity: u32, max_message: u32) -> Arc<Heap> {
            let g = Geometry::untyped(kind, capacity, max_message, 0);
            g.check().unwrap();
            // SAFETY: SlotControl is atomics only, for which zero bytes are valid.
            let ctl: Box<SlotControl> = unsafe { Box::new(std::mem::zeroed()) };
            g.init(&ctl.header);
            Arc::new(Heap {
                ctl,
                area: vec![0; g.area_len() as usize / 8],
                g,
            })
        }

        fn slots(&self) -> Slots<'_> {
            // SAFETY: the Vec holds area_len bytes, 8-aligned, for as long as self.
            unsafe { Slots::new(&self.ctl, self.area.as_ptr() as *mut u8, self.g) }
        }
    }

    fn msg(i: u64, max: u32) -> Vec<u8> {
        let len = 8 + (i as usize * 7) % (max as usize - 7);
        let mut v: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        v[..8].copy_from_slice(&i.to_le_bytes());
        v
    }

    /// Messages and values lent and written in pieces, at every alignment, read back whole;
    /// a loan dropped without its commit publishes nothing.
    #[test]
    fn loans_written_in_pieces_at_any_offset_read_back_whole() {
        for kind in [KIND_BROADCAST, KIND_LATEST] {
            let cap = if kind == KIND_LATEST { 2 } else { 4 };
            let heap = Heap::new(kind, cap, 40);
            let s = heap.slots();
            let (mut p, mut w) = (Publisher::attach(&s), Writer::attach(&s));
            let mut sub = Subscriber::attach(&s);
            let mut buf = Vec::new();
            for i in 0..60u64 {
                let m = msg(i, 40);
                // Two pieces, cut at `i % len`, written back to front; an abandoned loan of
                // other bytes before it, every third message.
                let cut = i as usize % m.len();
                let lend = |p: &mut Publisher, w: &mut Writer| match kind {
                    KIND_LATEST => w.lend(&s, m.len() as u32),
                    _ => p.lend(&s, m.len() as u32),
                };
                if i % 3 == 0 {
                    let slot = lend(&mut p, &mut w);
                    s.put(slot, 0, &vec![0xee; m.len()]);
                }
                let slot = lend(&mut p, &mut w);
                s.put(slot, cut, &m[cut..]);
                s.put(slot, 0, &m[..cut]);
                match kind {
                    KIND_LATEST => w.commit(&s, &Yield),
                    _ => p.commit(&s, &Yield),
                }
                match kind {
                    KIND_LATEST => assert_eq!(read_latest(&s, &mut buf), Ok(Some(i + 1))),
                    _ => assert_eq!(sub.try_recv(&s, &mut buf), Ok(Some(0))),
                }
                assert_eq!(buf, m, "message {i}, cut at {cut}");
                if kind == KIND_BROADCAST {
                    assert_eq!(sub.try_recv(&s, &mut buf), Ok(None), "only one published");
                }
            }
        }
    }

    #[test]
    fn a_slow_subscriber_is_told_what_it_lost_and_never_reads_a_torn_message() {
        let _w = crate::testing::watchdog(120);
        let n = if cfg!(miri) { 300 } else { 50_000 };
        let heap = Heap::new(KIND_BROADCAST, 8, 40);
        let h2 = heap.clone();
        // Attached before the publisher starts: a subscriber starts with the next message
        // published, so one attached in the thread after all `n` were published waited
        // for message `n - 1` for ever (the test hung about one run in three).
        let mut sub = Subscriber::attach(&heap.slots());
        let reader = std::thread::spawn(move || {
            let s = h2.slots();
            let mut buf = Vec::new();
            let (mut seen, mut lost, mut last) = (0u64, 0u64, None::<u64>);
            loop {
                match sub.try_recv(&s, &mut buf).unwrap() {
                    Some(l) => {
                        let i = u64::from_le_bytes(buf[..8].try_into().unwrap());
                        assert_eq!(buf, msg(i, 40), "message {i} is torn");
                        if let Some(prev) = last {
                            assert_eq!(i, prev + 1 + l, "the count of lost messages");
                        }
                        last = Some(i);
                        seen += 1;
                        lost += l;
                        if i == n - 1 {
                            return (seen, lost);
                        }
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
        let s = heap.slots();
        let mut p = Publisher::attach(&s);
        for i in 0..n {
            p.publish(&s, &msg(i, 40), &Yield);
        }
        let (seen, lost) = reader.join().unwrap();
        assert!(seen > 0);
        assert!(seen + lost <= n);
    }

    #[test]
    fn readers_of_the_latest_value_never_see_a_torn_one() {
        let _w = crate::testing::watchdog(120);
        let n = if cfg!(miri) { 200 } else { 50_000 };
        let heap = Heap::new(KIND_LATEST, 2, 64);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let h = heap.clone();
                std::thread::spawn(move || {
                    let s = h.slots();
                    let mut buf = Vec::new();
                    let mut newest = 0;
                    while newest < n {
                        if let Some(v) = read_latest(&s, &mut buf).unwrap() {
                            assert!(v >= newest, "versions go forward");
                            newest = v;
                            let i = u64::from_le_bytes(buf[..8].try_into().unwrap());
                            assert_eq!(i, v, "the value is the version's");
                            assert_eq!(buf, msg(i, 64), "value {v} is torn");
                        }
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        let s = heap.slots();
        let mut w = Writer::attach(&s);
        for v in 1..=n {
            w.publish(&s, &msg(v, 64), &Yield);
        }
        for r in readers {
            r.join().unwrap();
        }
    }

    /// Reads through a raw pointer ([`Raw`]) write a slot's words one byte past an 8-byte
    /// boundary, a partial last word too, and never keep a torn value; a longer value is
    /// refused, and nothing of it written.
    #[test]
    fn raw_reads_write_unaligned_never_torn_and_refuse_what_does_not_fit() {
        let _w = crate::testing::watchdog(120);
        // The last value 13 bytes long: a reader that starts after the writer ends reads it.
        let n = if cfg!(miri) { 201 } else { 50_001 };
        let value = |v: u64| vec![v as u8; 13 + (v % 3) as usize * 10];
        // Room for 13 and 23 bytes, not for 33, one byte into `mem`.
        let read = |s: &Slots<'_>, mem: &mut Vec<u8>| {
            let dst = mem[1..].as_mut_ptr();
            // SAFETY: `dst` is valid for 24 bytes of `mem`, which no reference covers
            // while the sink lives.
            let mut sink = unsafe { Raw::up_to(dst, 24) };
            let v = read_latest(s, &mut sink).unwrap();
            assert_eq!(sink.refused(), sink.got.is_err());
            // Never past the room.
            assert_eq!(mem[25..], [0xaa; 17]);
            v.map(|v| (v, sink.got))
        };
        let heap = Heap::new(KIND_LATEST, 2, 40);
        let h = heap.clone();
        let reader = std::thread::spawn(move || {
            let s = h.slots();
            let (mut newest, mut whole) = (0, 0);
            let mut mem = vec![0xaau8; 42];
            while newest < n {
                if let Some((v, got)) = read(&s, &mut mem) {
                    newest = v;
                    match got {
                        Ok(len) => {
                            assert_eq!(mem[1..1 + len], value(v)[..], "value {v} is torn");
                            whole += 1;
                        }
                        Err(len) => assert_eq!(len, 33, "value {v}"),
                    }
                }
                std::thread::yield_now();
            }
            whole
        });
        let s = heap.slots();
        let mut w = Writer::attach(&s);
        for v in 1..=n {
            w.publish(&s, &value(v), &Yield);
        }
        assert!(reader.join().unwrap() > 0, "no whole value read");
        // Too long: refused, and nothing of it written.
        w.publish(&s, &[1; 33], &Yield);
        let mut mem = vec![0xaau8; 42];
        assert_eq!(read(&s, &mut mem), Some((n + 1, Err(33))));
        assert_eq!(mem, [0xaa; 42]);
    }

    /// Typed reads ([`Buf::exact`]) copy a slot's words straight into a value, a partial last
    /// word too, and never keep a torn one; a message of another length is not copied but
    /// told with its length, and a subscriber passes over it.
    #[test]
    fn typed_reads_copy_into_the_value_never_torn() {
        let _w = crate::testing::watchdog(120);
        // The last value 13 bytes long: a reader that starts after the writer ends reads it.
        let n = if cfg!(miri) { 201 } else { 50_001 };
        // 13 bytes: a whole word and five bytes of the next, all the number's low byte; every
        // 100th is 5 bytes long instead.
        let value = |v: u64| vec![v as u8; if v % 100 == 0 { 5 } else { 13 }];
        let heap = Heap::new(KIND_LATEST, 2, 16);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let h = heap.clone();
                std::thread::spawn(move || {
                    let s = h.slots();
                    let (mut newest, mut whole) = (0, 0u64);
                    while newest < n {
                        let mut dst = [0xaau8; 13];
                        let mut sink = Buf::exact(&mut dst);
                        if let Some(v) = read_latest(&s, &mut sink).unwrap() {
                            newest = v;
                            match sink.got.err() {
                                None => {
                                    assert_eq!(dst, [v as u8; 13], "value {v} is torn");
                                    whole += 1;
                                }
                                // (`dst` may hold a torn copy of an earlier value, read
                                // before this one was found: of no use, and not used.)
                                Some(len) => assert_eq!((len, v % 100), (5, 0), "value {v}"),
                            }
                        }
                        std::thread::yield_now();
                    }
                    whole
                })
            })
            .collect();
        let s = heap.slots();
        let mut w = Writer::attach(&s);
        for v in 1..=n {
            w.publish(&s, &value(v), &Yield);
        }
        for r in readers {
            assert!(r.join().unwrap() > 0, "no whole value read");
        }

        // A broadcast of 40-byte values (five words of the number), every 7th 16 bytes long.
        let heap = Heap::new(KIND_BROADCAST, 8, 40);
        let s = heap.slots();
        let mut p = Publisher::attach(&s);
        let mut sub = Subscriber::attach(&s);
        for i in 0..30u64 {
            let words = [i; 5];
            let bytes: &[u8] = bytemuck::cast_slice(&words);
            p.publish(&s, if i % 7 == 0 { &bytes[..16] } else { bytes }, &Yield);
            let mut dst = [u64::MAX; 5];
            let mut sink = Buf::exact(bytemuck::cast_slice_mut(&mut dst));
            assert_eq!(sub.try_recv(&s, &mut sink), Ok(Some(0)), "message {i}");
            assert_eq!(sub.try_recv(&s, &mut Vec::new()), Ok(None), "passed over");
            let other = sink.got.err();
            match i % 7 {
                0 => assert_eq!((other, dst), (Some(16), [u64::MAX; 5]), "message {i}"),
                _ => assert_eq!((other, dst), (None, words), "message {i}"),
            }
        }
    }

    #[test]
    fn a_writer_killed_halfway_leaves_the_previous_value() {
        let heap = Heap::new(KIND_LATEST, 2, 64);
        let s = heap.slots();
        let mut w = Writer::attach(&s);
        w.publish(&s, b"first", &Yield);
        // Half a write of value 2: odd seq, no announcement.
        s.seq(0).store(5, Relaxed);
        let mut buf = Vec::new();
        assert_eq!(read_latest(&s, &mut buf).unwrap(), Some(1));
        assert_eq!(buf, b"first");
        // A new writer carries on from the last whole value.
        let mut w = Writer::attach(&s);
        w.publish(&s, b"second", &Yield);
        assert_eq!(read_latest(&s, &mut buf).unwrap(), Some(2));
        assert_eq!(buf, b"second");
        // Nonsense: a whole slot longer than the channel allows.
        s.len(0).store(1000, Relaxed);
        assert_eq!(read_latest(&s, &mut buf), Err(Corrupt));
    }
}
