//! The extension's buffers, both ways, and its only `unsafe` code.
//!
//! **Views handed to Python.** A small native type, `ViewBuffer`, owns a
//! [`filemap::View`] and exports its bytes through the buffer protocol. Python gets a
//! `memoryview` of it, so slicing, `bytes(...)` and NumPy use the mapped memory directly,
//! and the view is unmapped when the last object that uses it (the `memoryview`, a slice of
//! it, a NumPy array) is freed. Python code therefore never reaches unmapped memory, and
//! closing the mapping's handle leaves the view's memory in place, as on Windows.
//!
//! PyO3 cannot define a buffer exporter under the stable ABI before Python 3.11, where
//! `Py_buffer` joined the limited API. The type is therefore made here with
//! `PyType_FromSpec` and two slots, `bf_getbuffer` (slot number 1, fixed by the stable ABI
//! since 3.2, and accepted by `PyType_FromSpec` in every version) and `tp_dealloc`, and the
//! `Py_buffer` struct is declared here with CPython's layout, which has not changed since
//! 3.0 and is frozen by the stable ABI since 3.11.
//!
//! **Loans and messages handed to Python** ([`Room`]). The same type exports a stream
//! loan's room in the ring (writable) for as long as the loan is open, and a received
//! message (read-only) until it is released. It counts the buffers it exports
//! (`bf_releasebuffer`, slot 2), and a loan is committed or cancelled, and a message
//! consumed, only when none is left ([`Room::close`]); after that it exports nothing. So
//! no Python object can write into room that the consumer may be reading, or read room
//! that the producer may be writing again, and the room (with the channel's mapping,
//! which the loan or message keeps) outlives every buffer made from it.
//!
//! **Bytes from Python** ([`Input`], [`Output`]). Sends take any object with a contiguous
//! buffer (`bytes`, `bytearray`, `memoryview`, `array.array`, NumPy arrays), and
//! `recv_into` fills any writable one, as `socket.send` and `socket.recv_into` do. Their
//! bytes are read and written with raw copies, never through a `&[u8]`: other threads may
//! change a `bytearray` or an array while we copy (NumPy releases the GIL). Only a `bytes`
//! object, which nothing may change, is seen as a slice. `PyObject_GetBuffer` and
//! `PyBuffer_Release` are in every CPython, but the stable ABI lists them only from 3.11:
//! this module calls them directly on Unix, where an extension finds every symbol of the
//! interpreter, and looks them up in `python3.dll` on Windows, which exports them from
//! 3.11. Without them (Windows' Python 3.9 and 3.10, or `FILEMAP_PY_NO_BUFFER_API` set,
//! which the tests use to cover this path), the same calls go through `memoryview`, with
//! one more copy.
#![allow(unsafe_code)]

use std::any::Any;
use std::borrow::Cow;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use filemap::{Access, View};
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PySlice};

/// CPython's `Py_buffer` (`Include/pybuffer.h`).
#[repr(C)]
struct PyBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

// The request flags that matter here (`Include/pybuffer.h`).
const PYBUF_SIMPLE: c_int = 0;
const PYBUF_WRITABLE: c_int = 0x0001;
const PYBUF_FORMAT: c_int = 0x0004;
const PYBUF_ND: c_int = 0x0008;
const PYBUF_STRIDES: c_int = 0x0010 | PYBUF_ND;

/// An instance of `ViewBuffer`.
#[repr(C)]
struct Exporter {
    ob_base: ffi::PyObject,
    /// What it exports, from `Box::into_raw`. Null in an object that Python code made by
    /// calling the type (Python 3.9 and 3.10 allow that to types without `tp_new`): such an
    /// object exports nothing.
    source: *mut Source,
}

/// What a `ViewBuffer` exports.
enum Source {
    /// A view, unmapped when the exporter goes.
    View(View),
    /// A loan's room, while the loan is open.
    Room(Arc<Room>),
}

/// A stream loan's room in the ring (writable), or a received message (read-only),
/// exported to Python while the loan or the message is open.
pub(crate) struct Room {
    /// The room's first byte (an address whose provenance is exposed, so that the room
    /// is `Send` and `Sync` without an `unsafe impl`), and its length.
    ptr: usize,
    len: usize,
    writable: bool,
    /// Buffers exported and not yet released.
    exports: AtomicUsize,
    /// Set when the loan is committed or cancelled: no more exports.
    closed: AtomicBool,
    /// What keeps the room reserved and mapped (the loan, and its sender's turn), until
    /// [`close`](Room::close) takes it or the last holder of the room drops it.
    owner: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Room {
    /// The room of `len` bytes at `ptr`, which `owner` keeps reserved and mapped (and, if
    /// `writable`, writable) for as long as it lives.
    pub(crate) fn new(
        ptr: *const u8,
        len: usize,
        writable: bool,
        owner: Box<dyn Any + Send>,
    ) -> Arc<Room> {
        Arc::new(Room {
            ptr: ptr.expose_provenance(),
            len,
            writable,
            exports: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            owner: Mutex::new(Some(owner)),
        })
    }

    /// A `memoryview` of the room, writable if the room is.
    pub(crate) fn memoryview<'py>(
        self: &Arc<Room>,
        py: Python<'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        export(py, Source::Room(Arc::clone(self)))
    }

    /// The room's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Ends the exports and gives back the owner, if no buffer of the room is exported:
    /// `Err(n)` with the number that are, and `Ok(None)` if it was closed already. Called
    /// with the GIL held, as every export and release is, so none can start meanwhile.
    pub(crate) fn close(&self) -> Result<Option<Box<dyn Any + Send>>, usize> {
        let n = self.exports.load(Ordering::Acquire);
        if n != 0 {
            return Err(n);
        }
        self.closed.store(true, Ordering::Release);
        Ok(self.owner.lock().unwrap_or_else(|e| e.into_inner()).take())
    }
}

/// The type, made once by [`register`] and never freed.
static TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// Makes the `ViewBuffer` type and adds it to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let slots: &'static mut [ffi::PyType_Slot; 4] = Box::leak(Box::new([
        ffi::PyType_Slot {
            slot: ffi::Py_bf_getbuffer,
            pfunc: getbuffer as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_bf_releasebuffer,
            pfunc: releasebuffer as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_dealloc,
            pfunc: dealloc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: 0,
            pfunc: ptr::null_mut(),
        },
    ]));
    let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
        name: c"filemap._filemap.ViewBuffer".as_ptr(),
        basicsize: std::mem::size_of::<Exporter>() as c_int,
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as c_uint,
        slots: slots.as_mut_ptr(),
    }));
    // SAFETY: the spec and its slots are leaked, so they outlive the type as CPython
    // requires; the slots' functions have the signatures of their slots, and `basicsize`
    // is the size of the struct they cast instances to. We hold the GIL (`m`).
    let tp = unsafe { Bound::from_owned_ptr_or_err(m.py(), ffi::PyType_FromSpec(spec)) }?;
    m.add("ViewBuffer", &tp)?;
    // The leaked reference keeps the type alive for `memoryview`.
    TYPE.store(tp.into_ptr().cast(), Ordering::Release);
    Ok(())
}

/// A `memoryview` of `view`'s bytes, read-only if the view is. The view is unmapped when
/// the last Python object that uses it is freed.
pub(crate) fn memoryview(py: Python<'_>, view: View) -> PyResult<Bound<'_, PyAny>> {
    export(py, Source::View(view))
}

/// A `memoryview` of a new exporter of `source`.
fn export(py: Python<'_>, source: Source) -> PyResult<Bound<'_, PyAny>> {
    let tp = TYPE.load(Ordering::Acquire);
    assert!(!tp.is_null(), "the module registers ViewBuffer first");
    // SAFETY: `tp` is the type made by `register`, which is never freed, and we hold the
    // GIL. `PyType_GenericAlloc` returns a new reference to a zeroed object of the type's
    // `basicsize` (an `Exporter` with a null source), or null with an exception set.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(tp, 0)) }?;
    // SAFETY: `obj` is an `Exporter` that nothing else has seen yet; `dealloc` frees the box.
    unsafe { (*obj.as_ptr().cast::<Exporter>()).source = Box::into_raw(Box::new(source)) };
    // SAFETY: `obj` is a live object that exports a buffer; the `memoryview` takes its own
    // reference to it, and `obj`'s is dropped on return.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(obj.as_ptr())) }
}

/// `bf_getbuffer`: a one-dimensional buffer of unsigned bytes over the view, like
/// `PyBuffer_FillInfo`, which only the stable ABI of 3.11 and later offers.
unsafe extern "C" fn getbuffer(obj: *mut ffi::PyObject, buf: *mut PyBuffer, flags: c_int) -> c_int {
    // SAFETY: CPython calls this slot with the GIL held, with an object of this type and a
    // `Py_buffer` to fill.
    let (source, buf) = unsafe { ((*obj.cast::<Exporter>()).source, &mut *buf) };
    if source.is_null() {
        return refuse(
            buf,
            c"this ViewBuffer has no view: views come from FileMapping.view()",
        );
    }
    // SAFETY: a non-null `source` is the live box that `export` stored; only `dealloc`
    // frees it, and it cannot run while this call holds a borrowed `obj`.
    let (ptr, len, readonly) = match unsafe { &*source } {
        Source::View(view) => {
            let readonly = view.access() == Access::Read;
            if readonly && flags & PYBUF_WRITABLE != 0 {
                return refuse(buf, c"the view is read-only");
            }
            (view.as_ptr().cast_mut(), view.len(), readonly)
        }
        Source::Room(room) => {
            if room.closed.load(Ordering::Acquire) {
                return refuse(
                    buf,
                    c"the loan or message was committed, cancelled or released",
                );
            }
            if !room.writable && flags & PYBUF_WRITABLE != 0 {
                return refuse(buf, c"a received message is read-only");
            }
            // Released by `releasebuffer`, which CPython calls once per export.
            room.exports.fetch_add(1, Ordering::AcqRel);
            (
                ptr::with_exposed_provenance_mut::<u8>(room.ptr),
                room.len,
                !room.writable,
            )
        }
    };
    buf.buf = ptr.cast();
    // A mapped range is never longer than `isize::MAX` bytes.
    buf.len = len as ffi::Py_ssize_t;
    buf.itemsize = 1;
    buf.readonly = c_int::from(readonly);
    buf.ndim = 1;
    buf.format = if flags & PYBUF_FORMAT != 0 {
        c"B".as_ptr().cast_mut()
    } else {
        ptr::null_mut()
    };
    // As `PyBuffer_FillInfo` does: the shape and the strides point into the buffer struct
    // itself, which its consumer keeps in place for as long as it uses them.
    buf.shape = if flags & PYBUF_ND != 0 {
        &mut buf.len
    } else {
        ptr::null_mut()
    };
    buf.strides = if flags & PYBUF_STRIDES == PYBUF_STRIDES {
        &mut buf.itemsize
    } else {
        ptr::null_mut()
    };
    buf.suboffsets = ptr::null_mut();
    buf.internal = ptr::null_mut();
    // SAFETY: the buffer holds a new reference to its exporter, released by CPython.
    unsafe { ffi::Py_INCREF(obj) };
    buf.obj = obj;
    0
}

/// `bf_releasebuffer`: one export of a loan's room fewer.
unsafe extern "C" fn releasebuffer(obj: *mut ffi::PyObject, _buf: *mut PyBuffer) {
    // SAFETY: CPython calls this slot with the GIL held, once for each buffer that
    // `getbuffer` filled, while the buffer holds a reference to `obj`, whose source
    // therefore lives (and is not null: a null source exports nothing).
    if let Source::Room(room) = unsafe { &*(*obj.cast::<Exporter>()).source } {
        room.exports.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Fails a `bf_getbuffer` request with `BufferError(msg)`, as the protocol asks.
fn refuse(buf: &mut PyBuffer, msg: &CStr) -> c_int {
    buf.obj = ptr::null_mut();
    // SAFETY: only `getbuffer` calls this, with the GIL held; `PyErr_SetString` copies the
    // message.
    unsafe { ffi::PyErr_SetString(ffi::PyExc_BufferError, msg.as_ptr()) };
    -1
}

/// `tp_dealloc`: unmaps the view (or lets go of the loan's room), frees the object and
/// drops its reference to the type.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls this slot once, with the GIL held, when the last reference to
    // an object of this type goes; no buffer is exported then (each holds a reference).
    unsafe {
        let source = (*obj.cast::<Exporter>()).source;
        if !source.is_null() {
            drop(Box::from_raw(source));
        }
        let tp = ffi::Py_TYPE(obj);
        // A heap type made by `PyType_FromSpec` inherits `object`'s `tp_free`, never null.
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(tp, ffi::Py_tp_free));
        free(obj.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// `PyObject_GetBuffer`'s type.
type GetBuffer = unsafe extern "C" fn(*mut ffi::PyObject, *mut PyBuffer, c_int) -> c_int;
/// `PyBuffer_Release`'s type.
type ReleaseBuffer = unsafe extern "C" fn(*mut PyBuffer);

/// CPython's buffer consumer calls, where this interpreter offers them (see the module's
/// documentation).
struct BufferApi {
    get: GetBuffer,
    release: ReleaseBuffer,
}

fn buffer_api() -> Option<&'static BufferApi> {
    static API: OnceLock<Option<BufferApi>> = OnceLock::new();
    API.get_or_init(|| match std::env::var_os("FILEMAP_PY_NO_BUFFER_API") {
        Some(_) => None,
        None => sys_buffer_api(),
    })
    .as_ref()
}

#[cfg(not(windows))]
fn sys_buffer_api() -> Option<BufferApi> {
    // Resolved against the interpreter that loads the extension, as all of PyO3's calls
    // are; every CPython 3 defines both, with these signatures.
    unsafe extern "C" {
        fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut PyBuffer, flags: c_int) -> c_int;
        fn PyBuffer_Release(view: *mut PyBuffer);
    }
    Some(BufferApi {
        get: PyObject_GetBuffer,
        release: PyBuffer_Release,
    })
}

#[cfg(windows)]
fn sys_buffer_api() -> Option<BufferApi> {
    #[link(name = "kernel32")]
    unsafe extern "system" {
        fn GetModuleHandleW(name: *const u16) -> *mut c_void;
        fn GetProcAddress(module: *mut c_void, name: *const c_char) -> *mut c_void;
    }
    let dll: Vec<u16> = "python3.dll".encode_utf16().chain([0]).collect();
    // SAFETY: both names are NUL-terminated; `python3.dll` stays loaded while this
    // extension, which imports from it, is; a handle from `GetModuleHandleW` needs no
    // closing.
    let (get, release) = unsafe {
        let module = GetModuleHandleW(dll.as_ptr());
        if module.is_null() {
            return None;
        }
        (
            GetProcAddress(module, c"PyObject_GetBuffer".as_ptr()),
            GetProcAddress(module, c"PyBuffer_Release".as_ptr()),
        )
    };
    if get.is_null() || release.is_null() {
        return None;
    }
    // SAFETY: the stable ABI of 3.11 and later defines both functions with these
    // signatures (`Include/pybuffer.h`).
    unsafe {
        Some(BufferApi {
            get: std::mem::transmute::<*mut c_void, GetBuffer>(get),
            release: std::mem::transmute::<*mut c_void, ReleaseBuffer>(release),
        })
    }
}

/// A buffer that an object exports to us, released on drop.
struct Exported {
    buf: Box<PyBuffer>,
    api: &'static BufferApi,
}

impl Exported {
    /// `obj`'s buffer of contiguous bytes (a simple request: no `PYBUF_ND`), `writable` or
    /// not. A refusal gets the error that [`bytes_of`] gives, the same whichever way the
    /// bytes are reached.
    fn new(obj: &Bound<'_, PyAny>, api: &'static BufferApi, writable: bool) -> PyResult<Self> {
        let flags = match writable {
            true => PYBUF_WRITABLE,
            false => PYBUF_SIMPLE,
        };
        let mut buf = Box::new(PyBuffer {
            buf: ptr::null_mut(),
            obj: ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 0,
            ndim: 0,
            format: ptr::null_mut(),
            shape: ptr::null_mut(),
            strides: ptr::null_mut(),
            suboffsets: ptr::null_mut(),
            internal: ptr::null_mut(),
        });
        // SAFETY: we hold the GIL (`obj`), `obj` is a live object and `buf` a `Py_buffer`
        // to fill, which stays at its address (boxed) until `drop` releases it.
        if unsafe { (api.get)(obj.as_ptr(), &mut *buf, flags) } != 0 {
            let refused = PyErr::fetch(obj.py());
            bytes_of(obj, writable)?;
            return Err(refused);
        }
        Ok(Exported { buf, api })
    }

    fn len(&self) -> usize {
        // A buffer's length is never negative.
        self.buf.len.max(0) as usize
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        // SAFETY: `buf` was filled by a successful `PyObject_GetBuffer` and is released once.
        // `Exported` is not `Send` (raw pointers), so it is dropped where it was made, in a
        // call that holds the GIL.
        unsafe { (self.api.release)(&mut *self.buf) }
    }
}

/// Bytes that Python code passed to a send: a `bytes` object, or any object that exports
/// a contiguous buffer. A `TypeError` or `BufferError` otherwise, as from `socket.send`.
pub(crate) struct Input<'py> {
    held: Held<'py>,
}

enum Held<'py> {
    /// A `bytes` object (or, without the buffer calls, a copy of the buffer in one).
    Bytes(Bound<'py, PyBytes>),
    Exported(Exported),
}

impl<'py> Input<'py> {
    pub(crate) fn new(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Input {
                held: Held::Bytes(b.clone()),
            });
        }
        let held = match buffer_api() {
            Some(api) => Held::Exported(Exported::new(obj, api, false)?),
            None => {
                let view = bytes_of(obj, false)?;
                Held::Bytes(view.call_method0("tobytes")?.cast_into::<PyBytes>()?)
            }
        };
        Ok(Input { held })
    }

    /// The bytes as a slice: borrowed from a `bytes` object, which nothing can change, and
    /// copied from any other buffer.
    pub(crate) fn bytes(&self) -> Cow<'_, [u8]> {
        match &self.held {
            Held::Bytes(b) => Cow::Borrowed(b.as_bytes()),
            Held::Exported(_) => {
                let src = self.src();
                let mut v = Vec::with_capacity(src.len);
                // SAFETY: `v` has room for `src.len` bytes, which the copy initialises.
                unsafe {
                    copy_raw(src.ptr, v.as_mut_ptr(), src.len);
                    v.set_len(src.len);
                }
                Cow::Owned(v)
            }
        }
    }

    /// The bytes, for a copy made without the GIL.
    pub(crate) fn src(&self) -> Src<'_> {
        let (ptr, len) = match &self.held {
            Held::Bytes(b) => (b.as_bytes().as_ptr(), b.as_bytes().len()),
            Held::Exported(e) => (e.buf.buf.cast_const().cast::<u8>(), e.len()),
        };
        Src {
            ptr,
            len,
            _input: PhantomData,
        }
    }
}

/// An [`Input`]'s bytes, which stay exported while it is borrowed.
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    ptr: *const u8,
    len: usize,
    _input: PhantomData<&'a Input<'a>>,
}

// SAFETY: the bytes stay exported (or, for `bytes`, alive) while the `Input` is borrowed,
// whichever thread copies them; copies are raw, so bytes that another thread changes at
// the same time give a mixed copy, never undefined behaviour in our code.
unsafe impl Send for Src<'_> {}
// SAFETY: as above; `Src` only reads.
unsafe impl Sync for Src<'_> {}

impl Src<'_> {
    pub(crate) fn len(self) -> usize {
        self.len
    }

    /// Copies the bytes into `loan` and sends them.
    pub(crate) fn commit_into(self, mut loan: filemap::Loan<'_>) {
        assert_eq!(loan.len(), self.len, "a loan of the input's length");
        // SAFETY: the source is valid for `len` bytes (the export); the loan's bytes are
        // `len` bytes of the ring, writable until the commit.
        unsafe { copy_raw(self.ptr, loan.as_mut_ptr(), self.len) };
        loan.commit();
    }
}

/// Copies `len` bytes from `src` to `dst`, every copy between a Python buffer and the
/// ring or our memory. Raw, never through a slice: another thread may write a Python
/// buffer while we copy. `copy`, not `copy_nonoverlapping`: Python code can map a view of
/// the channel's own file, which overlaps the ring.
///
/// # Safety
///
/// `src` is valid for reads and `dst` for writes of `len` bytes (either may be null or
/// dangling if `len` is 0: an empty buffer's pointer may be null, which `copy` does not
/// take even for 0 bytes).
unsafe fn copy_raw(src: *const u8, dst: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the caller's promise, for `len` > 0.
    unsafe { ptr::copy(src, dst, len) }
}

/// A `memoryview` of `obj`'s bytes, which must be C-contiguous (as a simple buffer
/// request requires) and, if `writable`, writable. The errors are those of `socket.send`
/// and `socket.recv_into`, whichever way the bytes are reached.
fn bytes_of<'py>(obj: &Bound<'py, PyAny>, writable: bool) -> PyResult<Bound<'py, PyAny>> {
    let view = PyMemoryView::from(obj)?;
    if writable && view.getattr("readonly")?.is_truthy()? {
        let tp = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "a writable bytes-like object is required, not '{tp}'"
        )));
    }
    if !view.getattr("c_contiguous")?.is_truthy()? {
        return Err(PyBufferError::new_err("the buffer is not C-contiguous"));
    }
    view.call_method1("cast", ("B",))
}

/// A writable buffer that Python code passed to `recv_into`: any object that exports a
/// contiguous, writable buffer. A `TypeError` or `BufferError` otherwise, as from
/// `socket.recv_into`.
pub(crate) struct Output<'py> {
    held: OutHeld<'py>,
}

enum OutHeld<'py> {
    Exported(Exported),
    /// Without the buffer calls: a `memoryview` of the bytes, for [`Output::fill`].
    View(Bound<'py, PyAny>),
}

impl<'py> Output<'py> {
    pub(crate) fn new(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let held = match buffer_api() {
            Some(api) => OutHeld::Exported(Exported::new(obj, api, true)?),
            None => OutHeld::View(bytes_of(obj, true)?),
        };
        Ok(Output { held })
    }

    pub(crate) fn len(&self) -> PyResult<usize> {
        match &self.held {
            OutHeld::Exported(e) => Ok(e.len()),
            OutHeld::View(v) => v.len(),
        }
    }

    /// The bytes, for a copy made without the GIL; `None` without the buffer calls (use
    /// [`fill`](Self::fill)).
    pub(crate) fn dst(&self) -> Option<Dst<'_>> {
        match &self.held {
            OutHeld::Exported(e) => Some(Dst {
                ptr: e.buf.buf.cast::<u8>(),
                len: e.len(),
                _output: PhantomData,
            }),
            OutHeld::View(_) => None,
        }
    }

    /// Writes `data` at the start of the buffer (at most its length).
    pub(crate) fn fill(&self, data: &[u8]) -> PyResult<()> {
        match &self.held {
            OutHeld::Exported(_) => {
                let dst = self.dst().expect("an exported buffer");
                assert!(data.len() <= dst.len, "data that fits");
                // SAFETY: the buffer is writable (asked for with `PYBUF_WRITABLE`) for
                // `dst.len` bytes.
                unsafe { copy_raw(data.as_ptr(), dst.ptr, data.len()) };
                Ok(())
            }
            OutHeld::View(v) => {
                let py = v.py();
                let end = isize::try_from(data.len()).expect("a length that fits a buffer");
                v.set_item(PySlice::new(py, 0, end, 1), PyBytes::new(py, data))
            }
        }
    }
}

/// An [`Output`]'s bytes, which stay exported while it is borrowed.
#[derive(Clone, Copy)]
pub(crate) struct Dst<'a> {
    ptr: *mut u8,
    len: usize,
    _output: PhantomData<&'a Output<'a>>,
}

// SAFETY: the buffer stays exported while the `Output` is borrowed, whichever thread
// copies into it; copies are raw (see `Src`).
unsafe impl Send for Dst<'_> {}
// SAFETY: as above.
unsafe impl Sync for Dst<'_> {}

impl Dst<'_> {
    /// Reads `reader`'s latest value straight into the buffer (no vector between), as
    /// [`filemap::LatestReader::read_into_raw`] does.
    pub(crate) fn read_latest(
        self,
        reader: &mut filemap::LatestReader,
    ) -> filemap::Result<Option<(usize, u64)>> {
        // SAFETY: the buffer is writable (asked for with `PYBUF_WRITABLE`) for `self.len`
        // bytes and stays exported while this `Dst` is borrowed; the library writes it
        // through the pointer only (no reference), as `copy_raw` does.
        unsafe { reader.read_into_raw(self.ptr, self.len) }
    }

    /// Waits up to `timeout` for a value of `reader` newer than `version`, and reads it
    /// straight into the buffer, as [`filemap::LatestReader::wait_newer_into_raw`] does.
    pub(crate) fn wait_newer(
        self,
        reader: &mut filemap::LatestReader,
        version: u64,
        timeout: std::time::Duration,
    ) -> filemap::Result<(usize, u64)> {
        // SAFETY: as in `read_latest`.
        unsafe { reader.wait_newer_into_raw(version, self.ptr, self.len, Some(timeout)) }
    }

    /// Receives `sub`'s next message straight into the buffer, waiting up to `timeout`,
    /// as [`filemap::Subscriber::recv_into_raw`] does.
    pub(crate) fn recv_subscribed(
        self,
        sub: &mut filemap::Subscriber,
        timeout: std::time::Duration,
    ) -> filemap::Result<Option<(usize, u64)>> {
        // SAFETY: as in `read_latest`.
        unsafe { sub.recv_into_raw(self.ptr, self.len, Some(timeout)) }
    }

    /// Copies `m` to the start of the buffer and returns its length, or gives `m` back if
    /// it is longer than the buffer.
    pub(crate) fn take<'m>(self, m: filemap::Message<'m>) -> Result<usize, filemap::Message<'m>> {
        let len = m.len();
        if len > self.len {
            return Err(m);
        }
        // SAFETY: the message's `len` bytes are inside the ring until `m` is dropped; the
        // buffer is writable for `self.len` ≥ `len` bytes.
        unsafe { copy_raw(m.as_ptr(), self.ptr, len) };
        Ok(len)
    }
}
