//! Views: mapped ranges of a mapping, with sound access to memory that others write.
#![allow(unsafe_code)]

use std::fmt;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::channel::mem::copy;
use crate::{sys, Access, Error, Plain, Result};

/// A mapped view of a [`FileMapping`](crate::FileMapping) (`MapViewOfFile`).
///
/// # Safety of access
///
/// Another process can write the bytes of a shared view at any moment, so a `&[u8]` over
/// them would break Rust's aliasing rules. A view therefore offers:
///
/// - copies: [`View::read_at`] and [`View::write_at`] (bounds-checked `memcpy`; bytes
///   that another party writes at the same time may be torn, so coordinate with atomics or
///   a named mutex);
/// - atomics on aligned integers: [`View::atomic_u32`], [`View::atomic_u64`] (writable
///   views) and [`View::load_u32`], [`View::load_u64`] (every view);
/// - raw pointers: [`View::as_ptr`], [`View::as_mut_ptr`];
/// - `unsafe` slices for zero-copy, [`View::as_slice`] and [`View::as_mut_slice`], whose
///   callers promise that nobody writes the bytes while the slice lives.
///
/// A read-only view has no way to write: the write methods return
/// [`Error::PermissionDenied`] and the pages are mapped without write permission.
#[must_use = "dropping the view unmaps it"]
pub struct View {
    // No handle: as with `MapViewOfFile`, a view keeps the memory (the kernel's mapping of
    // it), not the name.
    region: sys::Region,
    offset: u64,
    access: Access,
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("ptr", &self.region.ptr())
            .field("offset", &self.offset)
            .field("len", &self.region.len())
            .field("access", &self.access)
            .finish()
    }
}

impl View {
    pub(crate) fn new(region: sys::Region, offset: u64, access: Access) -> View {
        View {
            region,
            offset,
            access,
        }
    }

    /// The length of the view in bytes, exactly as asked for.
    #[inline]
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Always `false`: views are never empty.
    pub fn is_empty(&self) -> bool {
        self.region.len() == 0
    }

    /// The offset of the view in its mapping.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The view's access.
    pub fn access(&self) -> Access {
        self.access
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::OutOfRange {
                offset: offset as u64,
                len: len as u64,
                size: self.len() as u64,
            }),
        }
    }

    #[inline]
    fn check_writable(&self) -> Result<()> {
        if self.access == Access::Read {
            return Err(Error::denied("the view is read-only"));
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` (relative to the view) into `buf`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if the range is not inside the view.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: the range is inside the live mapping (checked above) and cannot overlap
        // `buf`, which is ordinary Rust memory. The copy goes through raw pointers, so no
        // reference to the shared bytes is ever made.
        unsafe { copy(self.region.ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the view at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] on a read-only view; [`Error::OutOfRange`].
    #[inline]
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.check(offset, data.len())?;
        // SAFETY: as in `read_at`; the pages are writable because the view is not read-only.
        unsafe { copy(data.as_ptr(), self.region.ptr().add(offset), data.len()) };
        Ok(())
    }

    /// Copies the `T` at byte `offset` out of the view, at any alignment (as .NET's
    /// `MemoryMappedViewAccessor.Read<T>` does). Any bytes make a valid `T` (it is
    /// [`Plain`]), so another process can put nothing there that this could misread as
    /// something else; but a value that another process writes at the same time can come
    /// out torn, as any copy can: guard it with a [`Mutex`](crate::Mutex), or use a
    /// latest-value channel.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if the value is not inside the view.
    pub fn read_value<T: Plain>(&self, offset: usize) -> Result<T> {
        let mut value = T::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Copies `value` into the view at byte `offset`, at any alignment.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] on a read-only view; [`Error::OutOfRange`].
    pub fn write_value<T: Plain>(&self, offset: usize, value: &T) -> Result<()> {
        self.write_at(offset, bytemuck::bytes_of(value))
    }

    /// Copies `out.len()` values of `T`, one after another from byte `offset`, out of the
    /// view (as .NET's `ReadArray<T>`), with [`read_value`](View::read_value)'s caveats.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] unless all of them are inside the view.
    pub fn read_array<T: Plain>(&self, offset: usize, out: &mut [T]) -> Result<()> {
        self.read_at(offset, bytemuck::cast_slice_mut(out))
    }

    /// Copies `values` into the view, one after another from byte `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] on a read-only view; [`Error::OutOfRange`].
    pub fn write_array<T: Plain>(&self, offset: usize, values: &[T]) -> Result<()> {
        self.write_at(offset, bytemuck::cast_slice(values))
    }

    #[inline]
    fn aligned_ptr(&self, offset: usize, size: usize) -> Result<*mut u8> {
        self.check(offset, size)?;
        // SAFETY: in bounds, checked above.
        let p = unsafe { self.region.ptr().add(offset) };
        if (p as usize) % size != 0 {
            return Err(Error::Unaligned {
                offset: offset as u64,
                align: size as u64,
            });
        }
        Ok(p)
    }

    /// An atomic `u32` at `offset`, for lock-free protocols with other processes.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] on a read-only view (use [`View::load_u32`]);
    /// [`Error::Unaligned`] unless the address is a multiple of 4; [`Error::OutOfRange`].
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        self.check_writable()?;
        let p = self.aligned_ptr(offset, 4)?;
        // SAFETY: aligned, in bounds, writable, and alive as long as `&self`. All access
        // to it from Rust is atomic.
        Ok(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    /// An atomic `u64` at `offset`. As [`View::atomic_u32`], with 8-byte alignment.
    ///
    /// # Errors
    ///
    /// As for [`View::atomic_u32`], with 8-byte alignment.
    #[inline]
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        self.check_writable()?;
        let p = self.aligned_ptr(offset, 8)?;
        // SAFETY: as in `atomic_u32`.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    /// Atomically loads the `u32` at `offset` with acquire ordering. Works on every view,
    /// read-only included.
    ///
    /// # Errors
    ///
    /// [`Error::Unaligned`] unless the address is a multiple of 4; [`Error::OutOfRange`].
    #[inline]
    pub fn load_u32(&self, offset: usize) -> Result<u32> {
        let p = self.aligned_ptr(offset, 4)?;
        // SAFETY: aligned and in bounds. A relaxed load of at most pointer size is allowed
        // on read-only memory (std::sync::atomic, "Atomic accesses to read-only memory").
        let v = unsafe { AtomicU32::from_ptr(p.cast()) }.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        Ok(v)
    }

    /// Atomically loads the `u64` at `offset` with acquire ordering. As [`View::load_u32`].
    ///
    /// # Errors
    ///
    /// As for [`View::load_u32`], with 8-byte alignment.
    #[inline]
    pub fn load_u64(&self, offset: usize) -> Result<u64> {
        let p = self.aligned_ptr(offset, 8)?;
        // SAFETY: as in `load_u32`; 8 bytes is pointer size on 64-bit targets.
        let v = unsafe { AtomicU64::from_ptr(p.cast()) }.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        Ok(v)
    }

    /// The first byte of the view.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.region.ptr()
    }

    /// The first byte of the view, for writing.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] on a read-only view.
    #[inline]
    pub fn as_mut_ptr(&self) -> Result<*mut u8> {
        self.check_writable()?;
        Ok(self.region.ptr())
    }

    /// The view as a byte slice, for zero-copy reads.
    ///
    /// # Safety
    ///
    /// While the slice lives, no one (no other process, thread, view or copy-on-write
    /// write of this view) may write these bytes. Use it for data that is written once
    /// before the readers start, or is guarded by a lock.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: in bounds and alive for `&self`; the caller promises no writes.
        unsafe { std::slice::from_raw_parts(self.region.ptr(), self.len()) }
    }

    /// The view as a mutable byte slice, for zero-copy writes.
    ///
    /// # Safety
    ///
    /// While the slice lives, no one else (no other process, thread or view) may read or
    /// write these bytes.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] on a read-only view.
    pub unsafe fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        self.check_writable()?;
        // SAFETY: in bounds, writable, exclusively borrowed through `&mut self`; the caller
        // promises that nobody else touches the bytes.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.region.ptr(), self.len()) })
    }

    /// Writes the view's changes to the file now and waits (`msync(MS_SYNC)`,
    /// `FlushViewOfFile`). Needed for file-backed views whose data must reach the disk;
    /// harmless for shared memory and copy-on-write views.
    ///
    /// # Errors
    ///
    /// An I/O error if the file system cannot write the data back (a full disk, say).
    #[doc(alias = "FlushViewOfFile")]
    pub fn flush(&self) -> Result<()> {
        self.region.flush(0, self.len())
    }

    /// [`View::flush`] for `len` bytes at `offset` in the view.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if the range is not inside the view; as for [`View::flush`].
    #[doc(alias = "FlushViewOfFile")]
    pub fn flush_range(&self, offset: usize, len: usize) -> Result<()> {
        self.check(offset, len)?;
        self.region.flush(offset, len)
    }
}
