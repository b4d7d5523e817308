//! Memory that other processes share, as the channel algorithms touch it: atomics at byte
//! offsets, and copies in and out. Nothing else reads or writes it.
//!
//! This is the seam for the loom model checks (`crates/filemap-loom`), which compile the
//! pure algorithms (`algo.rs`, `seqlock.rs`, `rpc.rs`, `sync/algo.rs`) against a `mem.rs`
//! of their own: there the ring's bytes and the requests and replies are loom cells,
//! whose every access loom checks for races, and the slots' words are loom atomics.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use crate::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// A base address of shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared {
    base: *mut u8,
}

impl Shared {
    /// # Safety
    ///
    /// `base` is 8-aligned and points at memory that stays mapped, readable and writable,
    /// for as long as this value or a copy of it is used, and that is never accessed
    /// through Rust references other than the atomics given out here.
    #[inline]
    pub(crate) unsafe fn new(base: *mut u8) -> Shared {
        Shared { base }
    }

    /// The address of offset `off` (for callers that copy in place; not dereferenced here).
    #[inline]
    pub(crate) fn ptr(self, off: usize) -> *mut u8 {
        self.base.wrapping_add(off)
    }

    /// The `u32` at offset `off`, as an atomic.
    ///
    /// # Safety
    ///
    /// `off` is 4-aligned and `off..off + 4` is inside the memory.
    #[inline]
    pub(crate) unsafe fn u32_at<'a>(self, off: usize) -> &'a AtomicU32 {
        // SAFETY: inside and aligned (the caller's promise); AtomicU32 has no invalid
        // values, and the memory is only ever accessed through atomics and raw copies.
        unsafe { &*self.base.add(off).cast::<AtomicU32>() }
    }

    /// The `u64` at offset `off`, as an atomic.
    ///
    /// # Safety
    ///
    /// `off` is 8-aligned and `off..off + 8` is inside the memory.
    #[inline]
    pub(crate) unsafe fn u64_at<'a>(self, off: usize) -> &'a AtomicU64 {
        // SAFETY: as in `u32_at`.
        unsafe { &*self.base.add(off).cast::<AtomicU64>() }
    }

    /// Reads a frame header word at `off` (`Relaxed`: the protocol orders it).
    ///
    /// # Safety
    ///
    /// As for [`u32_at`](Self::u32_at).
    #[inline]
    pub(crate) unsafe fn read_u32(self, off: usize) -> u32 {
        // SAFETY: the caller's promise.
        unsafe { self.u32_at(off) }.load(Relaxed)
    }

    /// Writes a frame header word at `off` (`Relaxed`: the protocol orders it).
    ///
    /// # Safety
    ///
    /// As for [`u32_at`](Self::u32_at).
    #[inline]
    pub(crate) unsafe fn write_u32(self, off: usize, v: u32) {
        // SAFETY: the caller's promise.
        unsafe { self.u32_at(off) }.store(v, Relaxed)
    }

    /// Asks the CPU to start fetching the cache line at offset `off` (a hint: nothing is
    /// read, and no fault can come of it, wherever `off` points).
    #[inline(always)]
    pub(crate) fn prefetch(self, off: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `prefetcht0` reads nothing the program sees and never faults, even at an
        // address that is not mapped; `wrapping_add` makes the address without a claim
        // that it is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                self.base.wrapping_add(off).cast::<i8>(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// Copies `src` to offset `off`.
    ///
    /// # Safety
    ///
    /// `off..off + src.len()` is inside the memory.
    #[inline]
    pub(crate) unsafe fn copy_in(self, off: usize, src: &[u8]) {
        // SAFETY: inside (the caller's promise); `src` is ordinary memory, so the two
        // cannot overlap, and no reference to the shared bytes is made.
        unsafe { copy(src.as_ptr(), self.base.add(off), src.len()) }
    }

    /// Copies `dst.len()` bytes from offset `off` into `dst`.
    ///
    /// # Safety
    ///
    /// `off..off + dst.len()` is inside the memory.
    #[inline]
    pub(crate) unsafe fn copy_out(self, off: usize, dst: &mut [u8]) {
        // SAFETY: as in `copy_in`.
        unsafe { copy(self.base.add(off), dst.as_mut_ptr(), dst.len()) }
    }

    /// As [`copy_out`](Self::copy_out), into bytes not yet initialized (a vector's spare
    /// room: no zeroing before the copy); all of `dst` is initialized afterwards.
    ///
    /// # Safety
    ///
    /// As for `copy_out`.
    #[inline]
    pub(crate) unsafe fn copy_out_uninit(self, off: usize, dst: &mut [MaybeUninit<u8>]) {
        // SAFETY: as in `copy_in`; `MaybeUninit<u8>` has `u8`'s layout.
        unsafe { copy(self.base.add(off), dst.as_mut_ptr().cast::<u8>(), dst.len()) }
    }
}

/// Copies `len` bytes from `src` to `dst`: under 32 bytes inline, as two overlapping
/// unaligned chunks, and from 32 bytes with `memcpy`. A call per tiny message costs more
/// than the copy (the registers it may clobber are spilled around it, and a side in full
/// flow waits on its store buffer); from 32 bytes the C library's wide vector moves, chosen
/// for this CPU at run time, win (64 B messages one way: 206–217 M/s with `memcpy`, 166–182
/// with 16-byte moves inline; docs/BENCHMARKS.md, 2026-11-28).
///
/// # Safety
///
/// `src..src + len` is readable, `dst..dst + len` is writable, and the two do not overlap.
#[inline(always)]
unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
    /// Copies `N <= len <= 2N` bytes as the first and the last `N`.
    ///
    /// # Safety
    ///
    /// As for `copy`, and `N <= len <= 2 * N`.
    #[inline(always)]
    unsafe fn two<const N: usize>(src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: both chunks lie inside the ranges (N <= len), read and written unaligned.
        unsafe {
            let a = src.cast::<[u8; N]>().read_unaligned();
            let b = src.add(len - N).cast::<[u8; N]>().read_unaligned();
            dst.cast::<[u8; N]>().write_unaligned(a);
            dst.add(len - N).cast::<[u8; N]>().write_unaligned(b);
        }
    }
    // SAFETY: each arm's bounds meet `two`'s condition; the rest is the caller's promise.
    unsafe {
        match len {
            32.. => std::ptr::copy_nonoverlapping(src, dst, len),
            16..=31 => two::<16>(src, dst, len),
            8..=15 => two::<8>(src, dst, len),
            4..=7 => two::<4>(src, dst, len),
            _ => {
                for i in 0..len {
                    dst.add(i).write(src.add(i).read());
                }
            }
        }
    }
}
