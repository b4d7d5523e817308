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

// SAFETY: a `Shared` is an address and nothing else: it owns nothing, and every access
// through it is one of the `unsafe` methods below, whose callers keep to a channel's
// protocol. That protocol already has the memory touched at once by other processes, and
// by the two ends of a channel in two threads (`Sender` and `Receiver` are `Send`); a copy
// of the address in another thread touches it no differently. Without these, a type that
// keeps a copy of a ring (`Loan`, `Message`) could not go to another thread, where a
// `Loan` that held the `&mut Sender` instead could.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`; shared `&Shared`s only copy the address out.
unsafe impl Sync for Shared {}

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
/// with 16-byte moves inline; docs/BENCHMARKS.md, 2026-11-28). Copies of more than
/// [`LARGE`] bytes go through [`copy_large`], which steps around a `memcpy` cliff.
///
/// Views' `read_at` and `write_at` copy through this too.
///
/// # Safety
///
/// `src..src + len` is readable, `dst..dst + len` is writable, and the two do not overlap.
#[inline(always)]
pub(crate) unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
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
            LARGE_FROM.. => copy_large(src, dst, len),
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

/// The size above which a C library's `memcpy` may move the bytes with `rep movsb`: glibc
/// switches above 2112 bytes on the AMD EPYC here (its `rep_movsb_threshold`, which
/// depends on the CPU, and whose defaults start at 2 KiB; a `GLIBC_TUNABLES` setting below
/// that leaves the copies between the two to `memcpy`, cliff and all).
const LARGE: usize = 2048;
const LARGE_FROM: usize = LARGE + 1;

/// Copies more than [`LARGE`] bytes (as [`copy`]) with `memcpy`, except where the
/// destination lies 1 to 31 bytes past the source within a page: that copy is
/// [`x86::copy_ahead`]'s.
///
/// `rep movsb` on AMD Zen CPUs (which Debian 12's glibc, 2.36, uses there: they report
/// fast short `rep movsb`) takes 11–20x as long for exactly those placements: a 64 KiB
/// copy 21–34 µs instead of 1.3 (`cargo bench -p filemap --bench copy`;
/// docs/BENCHMARKS.md, 2026-11-29). A stream's
/// payload starts 8 bytes into its frame, so a page-aligned buffer sent into a frame at
/// the start of a page lands 8 bytes past it: a 64 KiB round trip through 256 KiB rings
/// with a page-aligned send buffer took 29–72 µs instead of 8–11.
///
/// Cold and out of line, which costs a copy of more than 2 KiB one call: inlined, the
/// check and its second call changed how the 64 B paths that inline [`copy`] compile
/// (`hot_path`, one thread: a batched send 1.5 ns more per message), and with every copy of
/// 32 bytes or more going through one function that then calls `memcpy`, 3.5–7 ns more.
/// Between processes, the 64 B rows move with this version by no more than code layout
/// alone moves them (docs/BENCHMARKS.md, 2026-11-29, evening).
///
/// `extern "C"`, so that it cannot unwind (a panic in it would abort; nothing in it
/// panics): to the compiler, a call that may unwind needs a landing pad in every caller,
/// and one that drops a received `Message` there kept the whole message in memory for it,
/// about ten stores per message. Without that pad a 64 B `recv` + `read_at` costs 5.0 ns in one
/// thread instead of 6.6 (docs/BENCHMARKS.md, 2026-11-30, day).
///
/// # Safety
///
/// As for [`copy`].
#[cold]
#[inline(never)]
unsafe extern "C" fn copy_large(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if matches!((dst as usize).wrapping_sub(src as usize) % 4096, 1..=31) {
        // SAFETY: the caller's promise.
        return unsafe { x86::copy_ahead(src, dst, len) };
    }
    // SAFETY: the caller's promise.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
}

/// A copy with vector moves whose loads run a block ahead of its stores, for destinations
/// a little past their sources within a page (see [`copy_large`]).
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_storeu_si256, _mm_loadu_si128,
        _mm_storeu_si128,
    };

    /// Copies `len` bytes from `src` to `dst` in blocks of four vectors, loading each block
    /// before it stores the one before: so no load follows a store to the same place
    /// within a page, as it would, one vector later, in a plain loop when the destination
    /// lies less than a vector past the source (the CPU then waits to rule out that the
    /// load needs the stored bytes). With AVX2 moves if the CPU has them (1.32 µs for
    /// 64 KiB here at every such placement, as `memcpy` at its good ones), SSE2 moves
    /// otherwise.
    ///
    /// # Safety
    ///
    /// As for [`copy`](super::copy).
    pub(crate) unsafe fn copy_ahead(src: *const u8, dst: *mut u8, len: usize) {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the caller's promise; the CPU has AVX2 (checked above).
            unsafe { ahead_avx2(src, dst, len) }
        } else {
            // SAFETY: the caller's promise; every x86-64 CPU has SSE2.
            unsafe { ahead_sse2(src, dst, len) }
        }
    }

    /// `copy_ahead` with one kind of vector: `$vec`, moved by `$load` and `$store`.
    macro_rules! ahead {
        ($name:ident, $feature:literal, $vec:ty, $load:ident, $store:ident) => {
            /// # Safety
            ///
            /// As for [`copy_ahead`], on a CPU with the feature.
            #[target_feature(enable = $feature)]
            pub(crate) unsafe fn $name(src: *const u8, dst: *mut u8, len: usize) {
                const W: usize = std::mem::size_of::<$vec>();
                if len < 8 * W {
                    // SAFETY: the caller's promise.
                    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
                    return;
                }
                // Two local helpers, called only below, each where its block is inside
                // both ranges. (Loops over a block's vectors instead kept the blocks on the
                // stack: 11–12 µs for 64 KiB, against 1.32.)
                // SAFETY: every block that `at` loads or stores (`W` at a time, unaligned)
                // lies inside both ranges, as said where it is called.
                let load = |at: usize| unsafe {
                    [
                        $load(src.add(at).cast::<$vec>()),
                        $load(src.add(at + W).cast::<$vec>()),
                        $load(src.add(at + 2 * W).cast::<$vec>()),
                        $load(src.add(at + 3 * W).cast::<$vec>()),
                    ]
                };
                // SAFETY: as for `load`.
                let store = |at: usize, [a, b, c, d]: [$vec; 4]| unsafe {
                    $store(dst.add(at).cast::<$vec>(), a);
                    $store(dst.add(at + W).cast::<$vec>(), b);
                    $store(dst.add(at + 2 * W).cast::<$vec>(), c);
                    $store(dst.add(at + 3 * W).cast::<$vec>(), d);
                };
                // The first block: `len >= 8 * W`.
                let mut block = load(0);
                let mut i = 0;
                // Load the block after the one at `i` (it ends at `i + 8 * W <= len`),
                // then store the one at `i`.
                while i + 8 * W <= len {
                    let next = load(i + 4 * W);
                    store(i, block);
                    block = next;
                    i += 4 * W;
                }
                // The last block loaded ends at `i + 4 * W <= len`; fewer than `4 * W` bytes
                // follow it.
                store(i, block);
                let done = i + 4 * W;
                // SAFETY: `done..len` is inside both ranges.
                unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done) };
            }
        };
    }

    ahead!(
        ahead_avx2,
        "avx2",
        __m256i,
        _mm256_loadu_si256,
        _mm256_storeu_si256
    );
    ahead!(
        ahead_sse2,
        "sse2",
        __m128i,
        _mm_loadu_si128,
        _mm_storeu_si128
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte pattern that differs from offset to offset and from buffer to buffer.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    /// Copies `len` bytes with `f` from a source at page offset `from` to a destination
    /// `apart` bytes further on within a page, and checks that exactly those bytes moved.
    fn check(len: usize, from: usize, apart: usize, f: unsafe fn(*const u8, *mut u8, usize)) {
        const GUARD: usize = 64;
        let page = 4096;
        let src_buf = pattern(len + 2 * page, 7);
        let mut dst_buf = pattern(len + page + 2 * GUARD, 200);
        let before = dst_buf.clone();
        // The source at page offset `from`, wherever the allocator put the buffer; the
        // destination at least `GUARD` bytes into its buffer, `apart` past the source
        // within a page.
        let src_at = (page - src_buf.as_ptr() as usize % page) % page + from;
        let s = src_buf.as_ptr() as usize + src_at;
        let d0 = dst_buf.as_ptr() as usize + GUARD;
        let dst_at = GUARD + (s + apart).wrapping_sub(d0) % page;
        assert_eq!(
            (dst_buf.as_ptr() as usize + dst_at).wrapping_sub(s) % page,
            apart
        );
        // SAFETY: both ranges are inside their buffers (the source's starts within its
        // first two pages, the destination's within its first page and `GUARD` bytes),
        // which are distinct allocations.
        unsafe {
            f(
                src_buf.as_ptr().add(src_at),
                dst_buf.as_mut_ptr().add(dst_at),
                len,
            )
        };
        assert_eq!(
            &dst_buf[dst_at..dst_at + len],
            &src_buf[src_at..src_at + len]
        );
        assert_eq!(dst_buf[..dst_at], before[..dst_at], "bytes before the copy");
        assert_eq!(
            dst_buf[dst_at + len..],
            before[dst_at + len..],
            "bytes after it"
        );
    }

    #[test]
    fn copies_of_every_size_and_placement_move_exactly_their_bytes() {
        let lens: &[usize] = if cfg!(miri) {
            &[5, 40, 2183]
        } else {
            &[
                0, 1, 3, 4, 7, 8, 15, 16, 31, 32, 33, 100, 2047, 2048, 2049, 2112, 2113, 3000,
                4096, 65544,
            ]
        };
        let aparts: &[usize] = if cfg!(miri) {
            &[0, 8, 4095]
        } else {
            &[0, 1, 7, 8, 16, 24, 31, 32, 33, 100, 2048, 4088, 4095]
        };
        for &len in lens {
            for &apart in aparts {
                for from in if cfg!(miri) { &[13][..] } else { &[0, 8, 13] } {
                    check(len, *from, apart, copy);
                }
            }
        }
    }

    /// Both of `copy_ahead`'s kernels, whichever the CPU would pick, at lengths that leave
    /// every remainder below 128 bytes to the `memcpy` of the first bytes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_downward_copies_move_exactly_their_bytes() {
        let lens: &[usize] = if cfg!(miri) {
            &[127, 300]
        } else {
            &[0, 1, 63, 64, 127, 128, 129, 255, 256, 2049, 2183, 65544]
        };
        let mut kernels: Vec<unsafe fn(*const u8, *mut u8, usize)> =
            vec![x86::ahead_sse2, x86::copy_ahead];
        if std::arch::is_x86_feature_detected!("avx2") {
            kernels.push(x86::ahead_avx2);
        }
        for &len in lens {
            for &f in &kernels {
                for apart in [0, 8, 31] {
                    check(len, 8, apart, f);
                }
            }
        }
    }
}
