//! Views handed to Python: a small native type, `ViewBuffer`, that owns a
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
//! 3.0 and is frozen by the stable ABI since 3.11. This is the only `unsafe` code of the
//! extension.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use filemap::{Access, View};
use pyo3::ffi;
use pyo3::prelude::*;

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
const PYBUF_WRITABLE: c_int = 0x0001;
const PYBUF_FORMAT: c_int = 0x0004;
const PYBUF_ND: c_int = 0x0008;
const PYBUF_STRIDES: c_int = 0x0010 | PYBUF_ND;

/// An instance of `ViewBuffer`.
#[repr(C)]
struct Exporter {
    ob_base: ffi::PyObject,
    /// The view, from `Box::into_raw`. Null in an object that Python code made by calling
    /// the type (Python 3.9 and 3.10 allow that to types without `tp_new`): such an object
    /// exports nothing.
    view: *mut View,
}

/// The type, made once by [`register`] and never freed.
static TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// Makes the `ViewBuffer` type and adds it to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let slots: &'static mut [ffi::PyType_Slot; 3] = Box::leak(Box::new([
        ffi::PyType_Slot {
            slot: ffi::Py_bf_getbuffer,
            pfunc: getbuffer as *mut c_void,
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
    let tp = TYPE.load(Ordering::Acquire);
    assert!(!tp.is_null(), "the module registers ViewBuffer first");
    // SAFETY: `tp` is the type made by `register`, which is never freed, and we hold the
    // GIL. `PyType_GenericAlloc` returns a new reference to a zeroed object of the type's
    // `basicsize` (an `Exporter` with a null view), or null with an exception set.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(tp, 0)) }?;
    // SAFETY: `obj` is an `Exporter` that nothing else has seen yet; `dealloc` frees the box.
    unsafe { (*obj.as_ptr().cast::<Exporter>()).view = Box::into_raw(Box::new(view)) };
    // SAFETY: `obj` is a live object that exports a buffer; the `memoryview` takes its own
    // reference to it, and `obj`'s is dropped on return.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(obj.as_ptr())) }
}

/// `bf_getbuffer`: a one-dimensional buffer of unsigned bytes over the view, like
/// `PyBuffer_FillInfo`, which only the stable ABI of 3.11 and later offers.
unsafe extern "C" fn getbuffer(obj: *mut ffi::PyObject, buf: *mut PyBuffer, flags: c_int) -> c_int {
    // SAFETY: CPython calls this slot with the GIL held, with an object of this type and a
    // `Py_buffer` to fill.
    let (view, buf) = unsafe { ((*obj.cast::<Exporter>()).view, &mut *buf) };
    if view.is_null() {
        return refuse(
            buf,
            c"this ViewBuffer has no view: views come from FileMapping.view()",
        );
    }
    // SAFETY: a non-null `view` is the live box that `memoryview` stored; only `dealloc`
    // frees it, and it cannot run while this call holds a borrowed `obj`.
    let view = unsafe { &*view };
    let readonly = view.access() == Access::Read;
    if readonly && flags & PYBUF_WRITABLE != 0 {
        return refuse(buf, c"the view is read-only");
    }
    buf.buf = view.as_ptr().cast_mut().cast();
    // A mapped range is never longer than `isize::MAX` bytes.
    buf.len = view.len() as ffi::Py_ssize_t;
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

/// Fails a `bf_getbuffer` request with `BufferError(msg)`, as the protocol asks.
fn refuse(buf: &mut PyBuffer, msg: &CStr) -> c_int {
    buf.obj = ptr::null_mut();
    // SAFETY: only `getbuffer` calls this, with the GIL held; `PyErr_SetString` copies the
    // message.
    unsafe { ffi::PyErr_SetString(ffi::PyExc_BufferError, msg.as_ptr()) };
    -1
}

/// `tp_dealloc`: unmaps the view, frees the object and drops its reference to the type.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls this slot once, with the GIL held, when the last reference to
    // an object of this type goes; no buffer is exported then (each holds a reference).
    unsafe {
        let view = (*obj.cast::<Exporter>()).view;
        if !view.is_null() {
            drop(Box::from_raw(view));
        }
        let tp = ffi::Py_TYPE(obj);
        // A heap type made by `PyType_FromSpec` inherits `object`'s `tp_free`, never null.
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(tp, ffi::Py_tp_free));
        free(obj.cast());
        ffi::Py_DECREF(tp.cast());
    }
}
