//! The loom stand-in for filemap's `channel/mem.rs`: the same `Shared` interface over a
//! [`LoomMem`], in which every byte of the ring is a loom cell (so loom checks each read
//! and write of a frame against the others) and the slots' words are loom atomics.

use loom::cell::UnsafeCell;

use crate::atomic::{AtomicU32, AtomicU64};

/// Memory for one channel's ring or slots.
pub(crate) struct LoomMem {
    bytes: Vec<UnsafeCell<u8>>,
    u32s: Vec<AtomicU32>,
    u64s: Vec<AtomicU64>,
}

impl LoomMem {
    pub(crate) fn new(len: usize) -> LoomMem {
        LoomMem {
            bytes: (0..len).map(|_| UnsafeCell::new(0)).collect(),
            u32s: (0..len / 4).map(|_| AtomicU32::new(0)).collect(),
            u64s: (0..len / 8).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// What the algorithms' constructors take as the memory's base address.
    pub(crate) fn base(&self) -> *mut u8 {
        self as *const LoomMem as *mut u8
    }
}

/// See filemap's `Shared`; here a pointer to a [`LoomMem`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared {
    mem: *const LoomMem,
}

impl Shared {
    /// # Safety
    ///
    /// `base` is [`LoomMem::base`] of a memory that outlives every use.
    pub(crate) unsafe fn new(base: *mut u8) -> Shared {
        Shared {
            mem: base as *const LoomMem,
        }
    }

    fn mem<'a>(self) -> &'a LoomMem {
        // SAFETY: `new`'s promise.
        unsafe { &*self.mem }
    }

    pub(crate) fn ptr(self, _off: usize) -> *mut u8 {
        unimplemented!("the loom checks do not use raw pointers into the ring")
    }

    /// A hint to the CPU, no access: nothing for loom to check.
    pub(crate) fn prefetch(self, _off: usize) {}

    pub(crate) unsafe fn u32_at<'a>(self, off: usize) -> &'a AtomicU32 {
        assert_eq!(off % 4, 0);
        &self.mem().u32s[off / 4]
    }

    pub(crate) unsafe fn u64_at<'a>(self, off: usize) -> &'a AtomicU64 {
        assert_eq!(off % 8, 0);
        &self.mem().u64s[off / 8]
    }

    pub(crate) unsafe fn read_u32(self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: loom checks that no write races this read.
        unsafe { self.copy_out(off, &mut b) };
        u32::from_ne_bytes(b)
    }

    pub(crate) unsafe fn write_u32(self, off: usize, v: u32) {
        // SAFETY: loom checks that no access races this write.
        unsafe { self.copy_in(off, &v.to_ne_bytes()) }
    }

    pub(crate) unsafe fn copy_in(self, off: usize, src: &[u8]) {
        for (i, &b) in src.iter().enumerate() {
            // SAFETY: loom's cell checks the access.
            self.mem().bytes[off + i].with_mut(|p| unsafe { *p = b });
        }
    }

    pub(crate) unsafe fn copy_out(self, off: usize, dst: &mut [u8]) {
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: loom's cell checks the access.
            *d = self.mem().bytes[off + i].with(|p| unsafe { *p });
        }
    }

    pub(crate) unsafe fn copy_out_uninit(self, off: usize, dst: &mut [std::mem::MaybeUninit<u8>]) {
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: loom's cell checks the access.
            d.write(self.mem().bytes[off + i].with(|p| unsafe { *p }));
        }
    }
}
