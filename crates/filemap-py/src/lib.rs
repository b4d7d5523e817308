//! The native half of the `filemap-ipc` Python package (`import filemap`): handles to named
//! mappings, mutexes, semaphores, events and streams, and the namespace's administration.
//! The Python half (`python/filemap/__init__.py`) adds views, `SharedMemory` and the
//! context managers. Views are [`filemap::View`]s that Python sees as `memoryview`s
//! (`buffer.rs`, the extension's only `unsafe` code): a view stays mapped for as long as
//! any Python object uses it. Sends take any bytes-like object, and `Receiver.recv_into`
//! fills any writable one, with one copy each way (`buffer.rs` too).
//!
//! Blocking calls release the GIL and wake every 50 ms to let Python handle signals, so
//! Ctrl-C interrupts a wait promptly (`KeyboardInterrupt`).
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use filemap::{Access, Error, Namespace, Options};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyBlockingIOError, PyBrokenPipeError, PyBufferError, PyFileExistsError, PyFileNotFoundError,
    PyNotImplementedError, PyOSError, PyPermissionError, PyRuntimeError, PyTimeoutError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod buffer;
mod shared;

use buffer::{Input, Output};
use shared::{Shared, Taken};

create_exception!(
    _filemap,
    KindMismatchError,
    PyFileExistsError,
    "The name is held by another kind of object."
);
create_exception!(
    _filemap,
    CorruptError,
    PyOSError,
    "A file in the namespace is not a valid filemap object."
);

/// filemap's error as the built-in exception that fits, with filemap's message.
fn err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        Error::AlreadyExists { .. } => PyFileExistsError::new_err(msg),
        Error::KindMismatch { .. } => KindMismatchError::new_err(msg),
        Error::PermissionDenied { .. } | Error::Insecure { .. } | Error::NotOwner { .. } => {
            PyPermissionError::new_err(msg)
        }
        Error::Timeout { .. } => PyTimeoutError::new_err(msg),
        Error::Busy { .. } => PyBlockingIOError::new_err(msg),
        Error::Disconnected { .. } => PyBrokenPipeError::new_err(msg),
        Error::Corrupt { .. } => CorruptError::new_err(msg),
        Error::Unsupported { .. } => PyNotImplementedError::new_err(msg),
        Error::NoSpace { .. } | Error::Io { .. } => PyOSError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

fn options(root: Option<PathBuf>, mode: Option<u32>, persistent: bool, sparse: bool) -> Options {
    let mut o = Options::new();
    if let Some(root) = root {
        o.namespace(Namespace::at(root));
    }
    if let Some(mode) = mode {
        o.mode(mode);
    }
    o.persistent(persistent).sparse(sparse);
    o
}

fn access(s: &str) -> PyResult<Access> {
    match s {
        "r" | "read" => Ok(Access::Read),
        "rw" | "w" | "write" | "read-write" => Ok(Access::ReadWrite),
        "c" | "copy" | "copy-on-write" => Ok(Access::CopyOnWrite),
        other => Err(PyValueError::new_err(format!(
            "access must be \"r\", \"rw\" or \"copy\", not {other:?}"
        ))),
    }
}

/// Runs `wait(slice)` with the GIL released, in slices of at most 50 ms until it gives
/// `Some`, the timeout passes (`None`), or a signal handler raises (Ctrl-C). A first try
/// with a zero slice keeps the GIL: what is ready at once (a message in a busy stream, a
/// free mutex) costs no release and re-acquisition of the GIL.
fn blocking<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    wait: impl FnMut(Duration) -> filemap::Result<Option<T>> + Send,
) -> PyResult<Option<T>> {
    blocking_until(py, deadline_of(timeout)?, wait)
}

/// The instant a `timeout` in seconds ends (`None`: never).
fn deadline_of(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        Some(t) if !(t >= 0.0 && t.is_finite()) => Err(PyValueError::new_err(format!(
            "timeout must be a finite number of seconds, 0 or more, not {t}"
        ))),
        Some(t) => Ok(Some(Instant::now() + Duration::from_secs_f64(t))),
        None => Ok(None),
    }
}

/// [`blocking`] until `deadline`.
fn blocking_until<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut wait: impl FnMut(Duration) -> filemap::Result<Option<T>> + Send,
) -> PyResult<Option<T>> {
    if let Some(v) = wait(Duration::ZERO).map_err(err)? {
        return Ok(Some(v));
    }
    wait_in_slices(py, deadline, wait)
}

/// The waiting part of [`blocking_until`], for a caller that has tried already.
fn wait_in_slices<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut wait: impl FnMut(Duration) -> filemap::Result<Option<T>> + Send,
) -> PyResult<Option<T>> {
    loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
            None => Duration::from_millis(50),
        };
        if let Some(v) = py.detach(|| wait(slice)).map_err(err)? {
            return Ok(Some(v));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// `Ok(Some(v))` for `Ok(v)`, `Ok(None)` for a timeout.
fn timed<T>(r: filemap::Result<T>) -> filemap::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Timeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn closed() -> PyErr {
    PyValueError::new_err("the handle is closed")
}

/// A handle to a named mapping (or a mapped file).
#[pyclass(module = "filemap._filemap")]
struct FileMapping {
    inner: Option<filemap::FileMapping>,
}

impl FileMapping {
    fn get(&self) -> PyResult<&filemap::FileMapping> {
        self.inner.as_ref().ok_or_else(closed)
    }
}

#[pymethods]
impl FileMapping {
    #[staticmethod]
    #[pyo3(signature = (name, size, create=true, open=false, root=None, mode=None, persistent=false, sparse=false))]
    #[allow(clippy::too_many_arguments)]
    fn make(
        name: &str,
        size: u64,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
        persistent: bool,
        sparse: bool,
    ) -> PyResult<FileMapping> {
        let o = options(root, mode, persistent, sparse);
        let m = match (create, open) {
            (true, true) => o.open_or_create(name, size),
            _ => o.create(name, size),
        }
        .map_err(err)?;
        Ok(FileMapping { inner: Some(m) })
    }

    #[staticmethod]
    #[pyo3(signature = (name, access="rw", *, root=None))]
    fn open(name: &str, access: &str, root: Option<PathBuf>) -> PyResult<FileMapping> {
        let a = self::access(access)?;
        let m = options(root, None, false, false)
            .open(name, a)
            .map_err(err)?;
        Ok(FileMapping { inner: Some(m) })
    }

    #[staticmethod]
    #[pyo3(signature = (path, size=0, access="rw", *, name=None, root=None))]
    fn from_file(
        path: PathBuf,
        size: u64,
        access: &str,
        name: Option<&str>,
        root: Option<PathBuf>,
    ) -> PyResult<FileMapping> {
        let a = self::access(access)?;
        let m = options(root, None, false, false)
            .map_path(&path, size, a, name)
            .map_err(err)?;
        Ok(FileMapping { inner: Some(m) })
    }

    #[getter]
    fn size(&self) -> PyResult<u64> {
        Ok(self.get()?.size())
    }

    #[getter]
    fn name(&self) -> PyResult<Option<String>> {
        Ok(self.get()?.name().map(|n| n.to_string()))
    }

    #[getter]
    fn already_existed(&self) -> PyResult<bool> {
        Ok(self.get()?.already_existed())
    }

    #[getter]
    fn os_path(&self) -> PyResult<Option<PathBuf>> {
        Ok(self.get()?.os_path().map(PathBuf::from))
    }

    #[getter]
    fn access(&self) -> PyResult<&'static str> {
        Ok(match self.get()?.access() {
            Access::Read => "r",
            Access::ReadWrite => "rw",
            Access::CopyOnWrite => "copy",
        })
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Maps `length` bytes at `offset` (`length` 0: to the end) with `access` (`None`: the
    /// handle's), as a `memoryview` that unmaps them when the last object using it goes.
    #[pyo3(signature = (offset=0, length=0, access=None))]
    fn view<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        length: u64,
        access: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let m = self.get()?;
        let access = match access {
            Some(a) => self::access(a)?,
            None => m.access(),
        };
        let v = m.map_view(access, offset, length).map_err(err)?;
        buffer::memoryview(py, v)
    }

    /// Closes the handle. Views keep their memory; the name goes with the last handle.
    fn close(&mut self) {
        self.inner = None;
    }
}

/// A named mutex.
#[pyclass(module = "filemap._filemap")]
struct Mutex {
    inner: Option<filemap::Mutex>,
}

#[pymethods]
impl Mutex {
    #[staticmethod]
    #[pyo3(signature = (name, *, create=true, open=false, root=None, mode=None, persistent=false))]
    fn make(
        name: &str,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
        persistent: bool,
    ) -> PyResult<Mutex> {
        let o = options(root, mode, persistent, false);
        let m = match (create, open) {
            (true, true) => o.open_or_create_mutex(name),
            (false, _) => o.open_mutex(name),
            _ => o.create_mutex(name),
        }
        .map_err(err)?;
        Ok(Mutex { inner: Some(m) })
    }

    /// Waits for the mutex (`None`: forever); `None` on timeout, else whether it was
    /// abandoned. The calling thread owns it until `release`.
    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<bool>> {
        let m = self.inner.as_ref().ok_or_else(closed)?;
        // The owner is this thread: `detach` runs the wait on it, without the GIL.
        blocking(py, timeout, |slice| timed(m.acquire(Some(slice))))
    }

    fn release(&self) -> PyResult<()> {
        self.inner
            .as_ref()
            .ok_or_else(closed)?
            .release()
            .map_err(err)
    }

    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.name().to_string())
    }

    #[getter]
    fn already_existed(&self) -> PyResult<bool> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.already_existed())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        close_unless_waited(slf, |m| m.inner = None)
    }
}

/// Closes a sync object's handle, which another thread's wait borrows for the whole wait:
/// closing then is refused (as on Windows, where it is undefined) with a clear
/// `RuntimeError`, instead of PyO3's "Already borrowed".
fn close_unless_waited<T>(slf: &Bound<'_, T>, close: impl FnOnce(&mut T)) -> PyResult<()>
where
    T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>,
{
    let mut this = slf.try_borrow_mut().map_err(|_| {
        PyRuntimeError::new_err(format!(
            "this {} is in use by another thread's wait; close it once that wait has returned",
            T::NAME
        ))
    })?;
    close(&mut this);
    Ok(())
}

/// A named semaphore.
#[pyclass(module = "filemap._filemap")]
struct Semaphore {
    inner: Option<filemap::Semaphore>,
}

#[pymethods]
impl Semaphore {
    #[staticmethod]
    #[pyo3(signature = (name, initial=0, maximum=0x7fff_ffff, *, create=true, open=false, root=None, mode=None, persistent=false))]
    #[allow(clippy::too_many_arguments)]
    fn make(
        name: &str,
        initial: u32,
        maximum: u32,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
        persistent: bool,
    ) -> PyResult<Semaphore> {
        let o = options(root, mode, persistent, false);
        let s = match (create, open) {
            (true, true) => o.open_or_create_semaphore(name, initial, maximum),
            (false, _) => o.open_semaphore(name),
            _ => o.create_semaphore(name, initial, maximum),
        }
        .map_err(err)?;
        Ok(Semaphore { inner: Some(s) })
    }

    /// Decrements the count, waiting while it is 0; `False` on timeout.
    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let s = self.inner.as_ref().ok_or_else(closed)?;
        Ok(blocking(py, timeout, |slice| timed(s.acquire_timeout(slice)))?.is_some())
    }

    /// Adds `n` to the count; returns the previous count.
    #[pyo3(signature = (n=1))]
    fn release(&self, n: u32) -> PyResult<u32> {
        self.inner
            .as_ref()
            .ok_or_else(closed)?
            .release(n)
            .map_err(err)
    }

    #[getter]
    fn count(&self) -> PyResult<u32> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.count())
    }

    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.name().to_string())
    }

    #[getter]
    fn already_existed(&self) -> PyResult<bool> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.already_existed())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        close_unless_waited(slf, |x| x.inner = None)
    }
}

/// A named event.
#[pyclass(module = "filemap._filemap")]
struct Event {
    inner: Option<filemap::Event>,
}

#[pymethods]
impl Event {
    #[staticmethod]
    #[pyo3(signature = (name, manual_reset=false, initially_set=false, *, create=true, open=false, root=None, mode=None, persistent=false))]
    #[allow(clippy::too_many_arguments)]
    fn make(
        name: &str,
        manual_reset: bool,
        initially_set: bool,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
        persistent: bool,
    ) -> PyResult<Event> {
        let o = options(root, mode, persistent, false);
        let e = match (create, open) {
            (true, true) => o.open_or_create_event(name, manual_reset, initially_set),
            (false, _) => o.open_event(name),
            _ => o.create_event(name, manual_reset, initially_set),
        }
        .map_err(err)?;
        Ok(Event { inner: Some(e) })
    }

    fn set(&self) -> PyResult<()> {
        self.inner.as_ref().ok_or_else(closed)?.set().map_err(err)
    }

    fn reset(&self) -> PyResult<()> {
        self.inner.as_ref().ok_or_else(closed)?.reset().map_err(err)
    }

    fn is_set(&self) -> PyResult<bool> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.is_set())
    }

    /// Waits until the event is set; `False` on timeout.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let e = self.inner.as_ref().ok_or_else(closed)?;
        Ok(blocking(py, timeout, |slice| timed(e.wait_timeout(slice)))?.is_some())
    }

    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.name().to_string())
    }

    #[getter]
    fn already_existed(&self) -> PyResult<bool> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.already_existed())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        close_unless_waited(slf, |x| x.inner = None)
    }
}

/// An object that `wait_any` waits on, for the whole wait: a sync object borrowed, or a
/// channel end taken (its turn, as for a call on it).
enum Held<'a> {
    Mutex(PyRef<'a, Mutex>),
    Semaphore(PyRef<'a, Semaphore>),
    Event(PyRef<'a, Event>),
    Receiver(Taken<'a, filemap::Receiver>),
    Subscriber(Taken<'a, Holding<filemap::Subscriber>>),
    LatestReader(Taken<'a, ReaderEnd>),
    RpcServer(Taken<'a, Holding<filemap::RpcServer>>),
    RpcClient(Taken<'a, Holding<filemap::RpcClient>>),
    /// The same object as the one at this earlier index.
    Again(usize),
}

impl<'a> Held<'a> {
    /// `None` if `deadline` passed while another thread's call had a channel end.
    fn of(
        py: Python<'_>,
        o: &'a Bound<'_, PyAny>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<Held<'a>>> {
        macro_rules! end {
            ($t:ident) => {
                if let Ok(x) = o.cast::<$t>() {
                    return Ok(x.get().end.take(py, deadline)?.map(Held::$t));
                }
            };
        }
        if let Ok(x) = o.cast::<Mutex>() {
            return Ok(Some(Held::Mutex(x.borrow())));
        }
        if let Ok(x) = o.cast::<Semaphore>() {
            return Ok(Some(Held::Semaphore(x.borrow())));
        }
        if let Ok(x) = o.cast::<Event>() {
            return Ok(Some(Held::Event(x.borrow())));
        }
        end!(Receiver);
        end!(Subscriber);
        end!(LatestReader);
        end!(RpcServer);
        end!(RpcClient);
        Err(PyValueError::new_err(
            "wait_any takes mutexes, semaphores, events and the receiving ends of channels",
        ))
    }

    fn waitable<'s>(&'s self, all: &'s [Held<'a>]) -> PyResult<&'s (dyn filemap::Waitable + Sync)> {
        fn sync<T: filemap::Waitable + Sync>(
            x: &Option<T>,
        ) -> PyResult<&(dyn filemap::Waitable + Sync)> {
            x.as_ref()
                .map(|n| n as &(dyn filemap::Waitable + Sync))
                .ok_or_else(closed)
        }
        Ok(match self {
            Held::Mutex(x) => sync(&x.inner)?,
            Held::Semaphore(x) => sync(&x.inner)?,
            Held::Event(x) => sync(&x.inner)?,
            Held::Receiver(t) => &**t,
            Held::Subscriber(t) => &t.end,
            Held::LatestReader(t) => &t.reader,
            Held::RpcServer(t) => &t.end,
            Held::RpcClient(t) => &t.end,
            Held::Again(i) => return all[*i].waitable(all),
        })
    }
}

/// Waits for any of `objects` (mutexes, semaphores, events, the receiving ends of
/// channels); returns `(index, abandoned)`, or `None` on timeout.
#[pyfunction]
#[pyo3(signature = (objects, timeout=None))]
fn wait_any(
    py: Python<'_>,
    objects: Vec<Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<Option<(usize, bool)>> {
    let deadline = deadline_of(timeout)?;
    // Hold every object for the whole wait; an object listed twice is held once.
    let mut held: Vec<Held<'_>> = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        if let Some(j) = objects[..i].iter().position(|p| p.is(o)) {
            held.push(Held::Again(j));
            continue;
        }
        match Held::of(py, o, deadline)? {
            Some(h) => held.push(h),
            None => return Ok(None),
        }
    }
    // An end that holds back a message (too long for a `recv_into`) has one ready.
    if let Some(i) = held.iter().position(|h| match h {
        Held::Subscriber(t) => t.held_back.is_some(),
        Held::RpcServer(t) => t.held_back.is_some(),
        Held::RpcClient(t) => t.held_back.is_some(),
        _ => false,
    }) {
        return Ok(Some((i, false)));
    }
    let natives: Vec<&(dyn filemap::Waitable + Sync)> = held
        .iter()
        .map(|h| h.waitable(&held))
        .collect::<PyResult<_>>()?;
    let natives = &natives;
    blocking_until(py, deadline, move |slice| {
        let refs: Vec<&dyn filemap::Waitable> = natives
            .iter()
            .map(|&n| n as &dyn filemap::Waitable)
            .collect();
        match filemap::wait_any(&refs, Some(slice)) {
            Ok(o) => Ok(Some((o.index(), o.is_abandoned()))),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// A named stream channel.
#[pyclass(module = "filemap._filemap")]
struct Stream {
    inner: filemap::Stream,
}

#[pymethods]
impl Stream {
    #[staticmethod]
    #[pyo3(signature = (name, capacity=filemap::DEFAULT_CAPACITY, max_message=0, *, create=true, open=false, root=None, mode=None))]
    fn make(
        name: &str,
        capacity: u32,
        max_message: u32,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
    ) -> PyResult<Stream> {
        let o = options(root, mode, false, false);
        let max = if max_message == 0 {
            (capacity / 4).max(1)
        } else {
            max_message
        };
        let s = match (create, open) {
            (true, true) => o.open_or_create_stream(name, capacity, max),
            (false, _) => o.open_stream(name),
            _ => o.create_stream(name, capacity, max),
        }
        .map_err(err)?;
        Ok(Stream { inner: s })
    }

    fn sender(&self) -> PyResult<Sender> {
        Ok(Sender {
            end: Shared::new(self.inner.sender().map_err(err)?),
        })
    }

    fn receiver(&self) -> PyResult<Receiver> {
        Ok(Receiver {
            end: Shared::new(self.inner.receiver().map_err(err)?),
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[getter]
    fn capacity(&self) -> u32 {
        self.inner.capacity()
    }

    #[getter]
    fn max_message(&self) -> u32 {
        self.inner.max_message()
    }

    #[getter]
    fn queued(&self) -> u64 {
        self.inner.queued()
    }
}

/// Takes `end` for one call (waiting while another thread's call has it, until
/// `deadline`), or gives `on_timeout` if the deadline passes first.
macro_rules! take_or {
    ($end:expr, $py:expr, $deadline:expr, $on_timeout:expr) => {
        match $end.take($py, $deadline)? {
            Some(taken) => taken,
            None => return Ok($on_timeout),
        }
    };
}

/// A stream's producer. Threads may share it (see `shared.rs`).
#[pyclass(module = "filemap._filemap", frozen)]
struct Sender {
    end: Shared<filemap::Sender>,
}

#[pymethods]
impl Sender {
    /// Sends `data` (any bytes-like object), waiting for room up to `timeout` (`None`: as
    /// long as it takes); `False` on timeout.
    #[pyo3(signature = (data, timeout=None))]
    fn send(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let data = Input::new(data)?;
        let deadline = deadline_of(timeout)?;
        let mut tx = take_or!(self.end, py, deadline, false);
        send_input(py, &mut tx, &data, deadline)
    }

    /// Sends `messages` in order, each as `send` does, in one turn; returns how many were
    /// sent: all, unless `timeout` passed first.
    #[pyo3(signature = (messages, timeout=None))]
    fn send_many(
        &self,
        py: Python<'_>,
        messages: Vec<Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let messages = messages
            .iter()
            .map(Input::new)
            .collect::<PyResult<Vec<_>>>()?;
        let deadline = deadline_of(timeout)?;
        let mut tx = take_or!(self.end, py, deadline, 0);
        for (i, m) in messages.iter().enumerate() {
            if !send_input(py, &mut tx, m, deadline)? {
                return Ok(i);
            }
        }
        Ok(messages.len())
    }

    /// Lends room for a message of `nbytes` bytes in the ring, waiting for it up to
    /// `timeout` (`None`: as long as it takes); `None` on timeout. Write the message through
    /// the loan's writable `buffer`, then `commit` it (or use the loan as a context
    /// manager). While the loan is open it has this end: other threads' calls wait for it,
    /// and this thread's are refused.
    #[pyo3(signature = (nbytes, timeout=None))]
    fn loan(
        slf: &Bound<'_, Sender>,
        py: Python<'_>,
        nbytes: usize,
        timeout: Option<f64>,
    ) -> PyResult<Option<Loan>> {
        let deadline = deadline_of(timeout)?;
        let mut tx = take_or!(slf.get().end, py, deadline, None);
        let Some(mut loan) = blocking_until(py, deadline, |slice| {
            timed(tx.loan_timeout(nbytes, slice).map(filemap::Loan::detach))
        })?
        else {
            return Ok(None);
        };
        let (ptr, len) = (loan.as_mut_ptr(), loan.len());
        // From here on, dropping the room (on an error too) cancels the loan.
        let out = LoanOut::new(tx, loan, slf);
        let room = buffer::Room::new(ptr, len, true, Box::new(out));
        Lent::new(py, room).map(|lent| Some(Loan { lent }))
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("Sender")
    }
}

/// A Python object whose channel end can be lent out, to a loan or a message.
trait Lender: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync {
    type End: Send + 'static;
    fn shared(&self) -> &Shared<Self::End>;
}

impl Lender for Sender {
    type End = filemap::Sender;
    fn shared(&self) -> &Shared<filemap::Sender> {
        &self.end
    }
}

impl Lender for Receiver {
    type End = filemap::Receiver;
    fn shared(&self) -> &Shared<filemap::Receiver> {
        &self.end
    }
}

/// An end lent out of its Python object, with the loan or message `T` it made. Dropped
/// unfinished (cancelled or kept, or with the last object that used its room), `T` is
/// dropped (nothing is sent; a message stays first in the channel), and the end goes
/// back.
struct Out<H: Lender, T: Send + 'static> {
    end: Option<H::End>,
    item: Option<T>,
    home: Py<H>,
}

impl<H: Lender, T: Send + 'static> Out<H, T> {
    /// Lends `end` (taken from `home`) out to `item`.
    fn new(end: Taken<'_, H::End>, item: T, home: &Bound<'_, H>) -> Self {
        Out {
            end: Some(end.lend()),
            item: Some(item),
            home: home.clone().unbind(),
        }
    }

    /// Finishes `item` with the end (sends the loan, consumes the message), and gives the
    /// end back.
    fn finish(
        mut self,
        f: impl FnOnce(&mut H::End, T) -> filemap::Result<()>,
    ) -> filemap::Result<()> {
        match (self.end.as_mut(), self.item.take()) {
            (Some(end), Some(item)) => f(end, item),
            _ => Ok(()),
        }
    }
}

impl<H: Lender, T: Send + 'static> Drop for Out<H, T> {
    fn drop(&mut self) {
        drop(self.item.take());
        if let Some(end) = self.end.take() {
            self.home.get().shared().give_back(end);
        }
    }
}

/// A loan, out of its `Sender`.
type LoanOut = Out<Sender, filemap::DetachedLoan>;
/// A message received in place, out of its `Receiver`.
type MessageOut = Out<Receiver, filemap::DetachedMessage>;

/// A loan's room or a received message, handed to Python: the room and the
/// `memoryview` of it given out, until the loan or the message ends.
struct Lent {
    room: std::sync::Arc<buffer::Room>,
    view: std::sync::Mutex<Option<Py<PyAny>>>,
}

impl Lent {
    fn new(py: Python<'_>, room: std::sync::Arc<buffer::Room>) -> PyResult<Lent> {
        let view = room.memoryview(py)?.unbind();
        Ok(Lent {
            room,
            view: std::sync::Mutex::new(Some(view)),
        })
    }

    fn view(&self) -> std::sync::MutexGuard<'_, Option<Py<PyAny>>> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `memoryview` given out.
    fn buffer(&self, py: Python<'_>, what: &str) -> PyResult<Py<PyAny>> {
        self.view()
            .as_ref()
            .map(|v| v.clone_ref(py))
            .ok_or_else(|| PyValueError::new_err(format!("the {what} has ended")))
    }

    /// Ends the loan or the message: releases the `memoryview` and closes the room, which
    /// every object made from it must have let go of, and returns what the room held.
    fn end<T: 'static>(&self, py: Python<'_>, what: &str) -> PyResult<Box<T>> {
        // Out of the lock before any call into Python.
        let view = self.view().take();
        // A `memoryview` made from ours (NumPy makes one) shares its export, so ours can be
        // released while that one lives; the room's count of exports says.
        if let Some(v) = &view {
            if v.bind(py)
                .call_method0(pyo3::intern!(py, "release"))
                .is_err()
            {
                *self.view() = view;
                return Err(in_use(what));
            }
        }
        let owner = match self.room.close() {
            Ok(owner) => owner,
            Err(_) => {
                // Ours was released: a new one, for the loan or message that stays open.
                if view.is_some() {
                    let fresh = self.room.memoryview(py)?.unbind();
                    *self.view() = Some(fresh);
                }
                return Err(in_use(what));
            }
        };
        owner
            .ok_or_else(|| PyValueError::new_err(format!("the {what} has ended already")))?
            .downcast::<T>()
            .map_err(|_| PyRuntimeError::new_err(format!("a {what} of another kind")))
    }
}

/// The error for a loan or message whose buffer is still used.
fn in_use(what: &str) -> PyErr {
    PyBufferError::new_err(format!(
        "the {what}'s buffer is still in use by objects made from it (a NumPy array, a slice, a memoryview): delete them first; the {what} stays open"
    ))
}

/// Room for one message in a stream's ring, lent by `Sender.loan`: write the message
/// through `buffer` (a writable `memoryview` of the room: no copy), then `commit()` it or
/// `cancel()` it. As a context manager, the block's end commits it, and an exception
/// cancels it. Both need every object made from `buffer` (a NumPy array, a slice) deleted
/// first (`BufferError` otherwise, and the loan stays open): none may write into a
/// message that the receiver may be reading.
#[pyclass(module = "filemap._filemap", frozen)]
struct Loan {
    lent: Lent,
}

#[pymethods]
impl Loan {
    /// The room, as a writable `memoryview`.
    #[getter]
    fn buffer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.lent.buffer(py, "loan")
    }

    /// The message's length in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.lent.room.len()
    }

    fn __len__(&self) -> usize {
        self.lent.room.len()
    }

    /// Sends the message.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        self.lent
            .end::<LoanOut>(py, "loan")?
            .finish(|tx, loan| tx.commit_detached(loan))
            .map_err(err)
    }

    /// Gives the room back without sending anything.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.lent.end::<LoanOut>(py, "loan").map(drop)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.buffer(py)
    }

    /// Commits, or cancels if the block raised. A cancel that finds the buffer still in use
    /// leaves the block's exception alone: the loan ends when its buffers go.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        match exc_type {
            None => self.commit(py).map(|()| false),
            Some(_) => {
                let _ = self.cancel(py);
                Ok(false)
            }
        }
    }
}

/// A stream message received in place by `Receiver.recv_in_place`: read it through
/// `buffer` (a read-only `memoryview` of its bytes in the ring: no copy), then `release()`
/// it (consumed) or `keep()` it (left first in the channel, for the next receive). As a
/// context manager, the block's end releases it, even if the block raised. Both need
/// every object made from `buffer` deleted first (`BufferError` otherwise, and the message
/// stays open): none may read bytes that the producer may be writing again.
#[pyclass(module = "filemap._filemap", frozen)]
struct Message {
    lent: Lent,
}

#[pymethods]
impl Message {
    /// The message's bytes, as a read-only `memoryview`.
    #[getter]
    fn buffer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.lent.buffer(py, "message")
    }

    /// The message's length in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.lent.room.len()
    }

    fn __len__(&self) -> usize {
        self.lent.room.len()
    }

    /// Consumes the message: the producer may write over its bytes.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.lent
            .end::<MessageOut>(py, "message")?
            .finish(|rx, msg| rx.consume_detached(msg))
            .map_err(err)
    }

    /// Leaves the message first in the channel: the next receive returns it again.
    fn keep(&self, py: Python<'_>) -> PyResult<()> {
        self.lent.end::<MessageOut>(py, "message").map(drop)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.buffer(py)
    }

    /// Releases the message. If the block raised and the buffer is still in use, the
    /// block's exception is left alone: the message stays first in the channel once its
    /// buffers go.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        match exc_type {
            None => self.release(py).map(|()| false),
            Some(_) => {
                let _ = self.release(py);
                Ok(false)
            }
        }
    }
}

/// Sends `data` through `tx`, copied once, straight into the ring; `false` if `deadline`
/// passed first.
fn send_input(
    py: Python<'_>,
    tx: &mut filemap::Sender,
    data: &Input<'_>,
    deadline: Option<Instant>,
) -> PyResult<bool> {
    let src = data.src();
    let sent = blocking_until(py, deadline, |slice| {
        timed(
            tx.loan_timeout(src.len(), slice)
                .map(|loan| src.commit_into(loan)),
        )
    })?;
    Ok(sent.is_some())
}

/// A message as a new `bytes` object: one copy, from the ring straight into it.
fn bytes_of<'py>(py: Python<'py>, m: &filemap::Message<'_>) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, m.len(), |b| m.read_at(0, b).map_err(err))
}

/// The next message of `rx`, waiting until `deadline` (`None` on timeout). A message that
/// is there already is copied once, and costs no release of the GIL.
fn next_message<'py>(
    py: Python<'py>,
    rx: &mut filemap::Receiver,
    deadline: Option<Instant>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if let Some(m) = rx.try_recv().map_err(err)? {
        return bytes_of(py, &m).map(Some);
    }
    let got = wait_in_slices(py, deadline, |slice| {
        timed(rx.recv_timeout(slice).map(|m| m.to_vec()))
    })?;
    Ok(got.map(|v| PyBytes::new(py, &v)))
}

/// A stream's consumer. Threads may share it.
#[pyclass(module = "filemap._filemap", frozen)]
struct Receiver {
    end: Shared<filemap::Receiver>,
}

#[pymethods]
impl Receiver {
    /// The next message, waiting up to `timeout` (`None`: as long as it takes); `None` on
    /// timeout. `BrokenPipeError` once the producer has gone and everything was received.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let deadline = deadline_of(timeout)?;
        let mut rx = take_or!(self.end, py, deadline, None);
        next_message(py, &mut rx, deadline)
    }

    /// Up to `max` messages: waits up to `timeout` for the first (`None` on timeout), then
    /// takes those that are already there, in one turn. The producer's close (or death)
    /// after some messages ends the list; the next call reports it.
    #[pyo3(signature = (max, timeout=None))]
    fn recv_many<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<Option<Vec<Bound<'py, PyBytes>>>> {
        if max == 0 {
            return Err(PyValueError::new_err("max must be 1 or more"));
        }
        let deadline = deadline_of(timeout)?;
        let mut rx = take_or!(self.end, py, deadline, None);
        let Some(first) = next_message(py, &mut rx, deadline)? else {
            return Ok(None);
        };
        let mut out = vec![first];
        while out.len() < max {
            match rx.try_recv() {
                Ok(Some(m)) => out.push(bytes_of(py, &m)?),
                Ok(None) | Err(Error::Disconnected { .. }) => break,
                Err(e) => return Err(err(e)),
            }
        }
        Ok(Some(out))
    }

    /// Receives the next message into `buffer` (any writable bytes-like object) and returns
    /// its length, waiting up to `timeout`; `None` on timeout. A message longer than the
    /// buffer is not received: it stays first in the channel, and `ValueError` states its
    /// length.
    #[pyo3(signature = (buffer, timeout=None))]
    fn recv_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<usize>> {
        let out = Output::new(buffer)?;
        let room = out.len()?;
        let dst = out.dst();
        let deadline = deadline_of(timeout)?;
        let mut rx = take_or!(self.end, py, deadline, None);
        // Straight into the buffer, or (without the buffer calls) into a `Vec` for `fill`.
        let take = |m: filemap::Message<'_>| match dst {
            Some(dst) => dst.take(m).map(Received::Len).map_err(Received::kept),
            None if m.len() > room => Err(Received::kept(m)),
            None => Ok(Received::Copy(m.to_vec())),
        };
        let ready = rx.try_recv().map_err(err)?.map(take);
        let got = match ready {
            Some(r) => Some(r),
            None => wait_in_slices(py, deadline, |slice| {
                timed(rx.recv_timeout(slice).map(take))
            })?,
        };
        match got {
            None => Ok(None),
            Some(Ok(Received::Len(n))) => Ok(Some(n)),
            Some(Ok(Received::Copy(v))) => out.fill(&v).map(|()| Some(v.len())),
            Some(Err(len)) => Err(too_long(
                rx.name(),
                "the next message",
                len,
                room,
                "it stays in the channel",
            )),
        }
    }

    /// The next message, read in place: waits up to `timeout` (`None`: as long as it
    /// takes); `None` on timeout. The message is consumed when it is released. While it is
    /// open it has this end: other threads' calls wait for it, and this thread's are
    /// refused.
    #[pyo3(signature = (timeout=None))]
    fn recv_in_place(
        slf: &Bound<'_, Receiver>,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Message>> {
        let deadline = deadline_of(timeout)?;
        let mut rx = take_or!(slf.get().end, py, deadline, None);
        let Some(msg) = blocking_until(py, deadline, |slice| {
            timed(rx.recv_timeout(slice).map(filemap::Message::detach))
        })?
        else {
            return Ok(None);
        };
        let (ptr, len) = (msg.as_ptr(), msg.len());
        // From here on, dropping the room (on an error too) keeps the message.
        let out = MessageOut::new(rx, msg, slf);
        let room = buffer::Room::new(ptr, len, false, Box::new(out));
        Lent::new(py, room).map(|lent| Some(Message { lent }))
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("Receiver")
    }
}

/// What `recv_into` did with a message.
enum Received {
    /// Copied into the buffer: its length.
    Len(usize),
    /// Copied out, to be written into the buffer with the GIL.
    Copy(Vec<u8>),
}

impl Received {
    /// Leaves `m`, which is too long for the buffer, in the channel; its length.
    fn kept(m: filemap::Message<'_>) -> usize {
        let len = m.len();
        m.keep();
        len
    }
}

/// The error for a read-only handle asked of a call that may create the channel.
fn read_only_create() -> PyErr {
    pyo3::exceptions::PyValueError::new_err(
        "read_only opens a channel that exists; it cannot create one (pass create=False)",
    )
}

/// A named broadcast channel.
#[pyclass(module = "filemap._filemap")]
struct Broadcast {
    inner: filemap::Broadcast,
}

#[pymethods]
impl Broadcast {
    #[staticmethod]
    #[pyo3(signature = (name, slots=64, max_message=4096, *, create=true, open=false, root=None, mode=None, read_only=false))]
    #[allow(clippy::too_many_arguments)]
    fn make(
        name: &str,
        slots: u32,
        max_message: u32,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
        read_only: bool,
    ) -> PyResult<Broadcast> {
        let o = options(root, mode, false, false);
        let b = match (create, open, read_only) {
            (false, _, true) => o.open_broadcast_read_only(name),
            (_, _, true) => return Err(read_only_create()),
            (true, true, _) => o.open_or_create_broadcast(name, slots, max_message),
            (false, ..) => o.open_broadcast(name),
            _ => o.create_broadcast(name, slots, max_message),
        }
        .map_err(err)?;
        Ok(Broadcast { inner: b })
    }

    /// Whether this handle opened the channel read-only (it can only subscribe).
    #[getter]
    fn read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn publisher(&self) -> PyResult<Publisher> {
        Ok(Publisher {
            end: Shared::new(self.inner.publisher().map_err(err)?),
        })
    }

    fn subscriber(&self) -> PyResult<Subscriber> {
        Ok(Subscriber {
            end: Shared::new(Holding::new(self.inner.subscriber().map_err(err)?)),
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }
}

/// A broadcast's publisher. Threads may share it.
#[pyclass(module = "filemap._filemap", frozen)]
struct Publisher {
    end: Shared<filemap::Publisher>,
}

#[pymethods]
impl Publisher {
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = Input::new(data)?;
        let mut p = take_or!(self.end, py, None, ());
        p.send(&data.bytes()).map_err(err)
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("Publisher")
    }
}

/// A broadcast's subscriber. Threads may share it.
#[pyclass(module = "filemap._filemap", frozen)]
struct Subscriber {
    end: Shared<Holding<filemap::Subscriber>>,
}

/// A channel end whose receives may hold a message back: one that was too long for the
/// buffer given to an `_into` receive (or could not be written there) comes again at the
/// next receive, so that nothing is lost. It was taken from its slot already: a broadcast
/// slot may be written over, and a request or reply slot is given back.
struct Holding<E: Receive> {
    end: E,
    held_back: Option<(E::Tag, Vec<u8>)>,
    /// Where `_into` receives go first, kept so that they allocate nothing once warm.
    scratch: Vec<u8>,
}

/// An end whose messages a [`Holding`] receives.
trait Receive {
    /// What comes with a message: a subscriber's count of messages lost before it, a
    /// server's ticket, nothing with a client's reply.
    type Tag;
    /// What a message is called in errors ("the next message").
    const WHAT: &'static str;
    fn name(&self) -> &filemap::Name;
    /// The next message into `buf`, waiting until `deadline`; `None` on timeout.
    fn receive(
        &mut self,
        py: Python<'_>,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<Self::Tag>>;
}

impl<E: Receive> Holding<E> {
    fn new(end: E) -> Self {
        Holding {
            end,
            held_back: None,
            scratch: Vec::new(),
        }
    }

    /// The message held back, or else the next one, into `buf`.
    fn next(
        &mut self,
        py: Python<'_>,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<E::Tag>> {
        if let Some((tag, m)) = self.held_back.take() {
            *buf = m;
            return Ok(Some(tag));
        }
        self.end.receive(py, buf, deadline)
    }

    /// As [`next`](Self::next), into `out`: the tag and the length. A message that does
    /// not fit (a `ValueError` that states its length) is held back.
    fn next_into(
        &mut self,
        py: Python<'_>,
        out: &Output<'_>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<(E::Tag, usize)>> {
        let mut m = std::mem::take(&mut self.scratch);
        let Some(tag) = self.next(py, &mut m, deadline)? else {
            self.scratch = m;
            return Ok(None);
        };
        let then = "it is held back for the next receive";
        if let Err(e) = deliver(out, &m, self.end.name(), E::WHAT, then) {
            self.held_back = Some((tag, m));
            return Err(e);
        }
        let len = m.len();
        self.scratch = m;
        Ok(Some((tag, len)))
    }
}

impl Receive for filemap::Subscriber {
    type Tag = u64;
    const WHAT: &'static str = "the next message";

    fn name(&self) -> &filemap::Name {
        filemap::Subscriber::name(self)
    }

    fn receive(
        &mut self,
        py: Python<'_>,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<u64>> {
        blocking_until(py, deadline, |slice| timed(self.recv_timeout(buf, slice)))
    }
}

impl Receive for filemap::RpcServer {
    type Tag = filemap::Ticket;
    const WHAT: &'static str = "the next request";

    fn name(&self) -> &filemap::Name {
        filemap::RpcServer::name(self)
    }

    fn receive(
        &mut self,
        py: Python<'_>,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<filemap::Ticket>> {
        blocking_until(py, deadline, |slice| timed(self.recv(buf, Some(slice))))
    }
}

impl Receive for filemap::RpcClient {
    type Tag = ();
    const WHAT: &'static str = "the reply";

    fn name(&self) -> &filemap::Name {
        filemap::RpcClient::name(self)
    }

    fn receive(
        &mut self,
        py: Python<'_>,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<()>> {
        blocking_until(py, deadline, |slice| {
            timed(self.wait_reply(buf, Some(slice)))
        })
    }
}

impl Holding<filemap::RpcClient> {
    /// Sends `request`, giving up the pending one and any reply held back for it.
    fn send(&mut self, request: &Input<'_>) -> PyResult<()> {
        self.held_back = None;
        self.end.send_request(&request.bytes()).map_err(err)
    }
}

#[pymethods]
impl Subscriber {
    /// `(message, lost)`, or `None` on timeout.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(Vec<u8>, u64)>> {
        let deadline = deadline_of(timeout)?;
        let mut end = take_or!(self.end, py, deadline, None);
        let mut buf = Vec::new();
        Ok(end.next(py, &mut buf, deadline)?.map(|lost| (buf, lost)))
    }

    /// Receives the next message into `buffer` (any writable bytes-like object):
    /// `(length, lost)`, or `None` on timeout. A message longer than the buffer is held
    /// back for the next receive, and `ValueError` states its length.
    #[pyo3(signature = (buffer, timeout=None))]
    fn recv_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<(usize, u64)>> {
        let out = Output::new(buffer)?;
        let deadline = deadline_of(timeout)?;
        let mut end = take_or!(self.end, py, deadline, None);
        // Straight into the buffer where its bytes can be reached and no message is held
        // back; otherwise through a vector.
        if let (Some(dst), None) = (out.dst(), &end.held_back) {
            let sub = &mut end.end;
            // `Some(None)`: the message is too long for the buffer.
            let got = blocking_until(py, deadline, |slice| {
                match dst.recv_subscribed(sub, slice) {
                    Ok(got) => Ok(got.map(Some)),
                    Err(Error::InvalidArgument { .. }) => Ok(Some(None)),
                    Err(e) => Err(e),
                }
            })?;
            match got {
                None => return Ok(None),
                Some(Some(got)) => return Ok(Some(got)),
                // Still the next message: take it (or what came in its place, if it was
                // written over meanwhile) the other way, which holds a message too long
                // for the buffer back, so that nothing is lost.
                Some(None) => {}
            }
        }
        Ok(end
            .next_into(py, &out, deadline)?
            .map(|(lost, len)| (len, lost)))
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("Subscriber")
    }
}

/// The `ValueError` of a `recv_into` or `read_into` whose buffer is too small for `what`
/// (the next message, the latest value) of the channel `name`.
fn too_long(name: &filemap::Name, what: &str, len: usize, room: usize, then: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{what} in {name} has {len} bytes, more than the buffer's {room}; {then}"
    ))
}

/// Copies `msg`, which a receive took from the channel `name`, into `out`. An error if it
/// does not fit ([`too_long`], for `what`, and `then`: what becomes of it) or cannot be
/// written; the caller then holds `msg` back, so that nothing is lost.
fn deliver(
    out: &Output<'_>,
    msg: &[u8],
    name: &filemap::Name,
    what: &str,
    then: &str,
) -> PyResult<()> {
    let room = out.len()?;
    if msg.len() > room {
        return Err(too_long(name, what, msg.len(), room, then));
    }
    out.fill(msg)
}

/// A named latest-value channel.
#[pyclass(module = "filemap._filemap")]
struct Latest {
    inner: filemap::Latest,
}

#[pymethods]
impl Latest {
    #[staticmethod]
    #[pyo3(signature = (name, max_message=4096, *, create=true, open=false, root=None, mode=None, read_only=false))]
    fn make(
        name: &str,
        max_message: u32,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
        read_only: bool,
    ) -> PyResult<Latest> {
        let o = options(root, mode, false, false);
        let l = match (create, open, read_only) {
            (false, _, true) => o.open_latest_read_only(name),
            (_, _, true) => return Err(read_only_create()),
            (true, true, _) => o.open_or_create_latest(name, max_message),
            (false, ..) => o.open_latest(name),
            _ => o.create_latest(name, max_message),
        }
        .map_err(err)?;
        Ok(Latest { inner: l })
    }

    /// Whether this handle opened the channel read-only (it can only read).
    #[getter]
    fn read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn writer(&self) -> PyResult<LatestWriter> {
        Ok(LatestWriter {
            end: Shared::new(self.inner.writer().map_err(err)?),
        })
    }

    fn reader(&self) -> PyResult<LatestReader> {
        Ok(LatestReader {
            end: Shared::new(ReaderEnd {
                reader: self.inner.reader().map_err(err)?,
                scratch: Vec::new(),
            }),
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }
}

/// A latest-value channel's writer. Threads may share it.
#[pyclass(module = "filemap._filemap", frozen)]
struct LatestWriter {
    end: Shared<filemap::LatestWriter>,
}

#[pymethods]
impl LatestWriter {
    fn publish(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = Input::new(data)?;
        let mut w = take_or!(self.end, py, None, ());
        w.publish(&data.bytes()).map_err(err)
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("LatestWriter")
    }
}

/// A latest-value channel's reader. Threads may share it.
#[pyclass(module = "filemap._filemap", frozen)]
struct LatestReader {
    end: Shared<ReaderEnd>,
}

/// A latest-value reader, with what `read_into` needs.
struct ReaderEnd {
    reader: filemap::LatestReader,
    /// Where `read_into` reads, kept so that it allocates nothing once warm.
    scratch: Vec<u8>,
}

#[pymethods]
impl LatestReader {
    /// `(value, version)`, or `None` before the first value.
    fn read(&self, py: Python<'_>) -> PyResult<Option<(Vec<u8>, u64)>> {
        let mut r = take_or!(self.end, py, None, None);
        let mut buf = Vec::new();
        Ok(r.reader.read(&mut buf).map_err(err)?.map(|v| (buf, v)))
    }

    /// Copies the latest value into `buffer` (any writable bytes-like object):
    /// `(length, version)`, or `None` before the first value. A value longer than the
    /// buffer is a `ValueError` that states its length (it stays the latest).
    fn read_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
    ) -> PyResult<Option<(usize, u64)>> {
        let out = Output::new(buffer)?;
        let mut r = take_or!(self.end, py, None, None);
        let ReaderEnd { reader, scratch } = &mut *r;
        // Straight into the buffer where its bytes can be reached; otherwise through a
        // vector and the buffer's `memoryview`.
        if let Some(dst) = out.dst() {
            return dst.read_latest(reader).map_err(err);
        }
        let Some(version) = reader.read(scratch).map_err(err)? else {
            return Ok(None);
        };
        let then = "it stays the latest";
        deliver(&out, scratch, reader.name(), "the latest value", then)?;
        Ok(Some((scratch.len(), version)))
    }

    /// Waits for a value newer than `version`: `(value, version)`, or `None` on timeout.
    #[pyo3(signature = (version, timeout=None))]
    fn wait_newer(
        &self,
        py: Python<'_>,
        version: u64,
        timeout: Option<f64>,
    ) -> PyResult<Option<(Vec<u8>, u64)>> {
        let deadline = deadline_of(timeout)?;
        let mut r = take_or!(self.end, py, deadline, None);
        let mut buf = Vec::new();
        blocking_until(py, deadline, |slice| {
            timed(
                r.reader
                    .wait_newer(version, &mut buf, Some(slice))
                    .map(|v| (std::mem::take(&mut buf), v)),
            )
        })
    }

    /// Waits for a value newer than `version` and copies it into `buffer` (any writable
    /// bytes-like object): `(length, version)`, or `None` on timeout. A value longer than
    /// the buffer is a `ValueError` that states its length (it stays the latest).
    #[pyo3(signature = (version, buffer, timeout=None))]
    fn wait_newer_into(
        &self,
        py: Python<'_>,
        version: u64,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<(usize, u64)>> {
        let out = Output::new(buffer)?;
        let deadline = deadline_of(timeout)?;
        let mut r = take_or!(self.end, py, deadline, None);
        let ReaderEnd { reader, scratch } = &mut *r;
        // Straight into the buffer where its bytes can be reached; otherwise through a
        // vector and the buffer's `memoryview`.
        if let Some(dst) = out.dst() {
            return blocking_until(py, deadline, |slice| {
                timed(dst.wait_newer(reader, version, slice))
            });
        }
        let got = blocking_until(py, deadline, |slice| {
            timed(reader.wait_newer(version, scratch, Some(slice)))
        })?;
        let Some(version) = got else {
            return Ok(None);
        };
        let then = "it stays the latest";
        deliver(&out, scratch, reader.name(), "the latest value", then)?;
        Ok(Some((scratch.len(), version)))
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("LatestReader")
    }
}

/// A named request/reply channel.
#[pyclass(module = "filemap._filemap")]
struct RequestReply {
    inner: filemap::RequestReply,
}

#[pymethods]
impl RequestReply {
    #[staticmethod]
    #[pyo3(signature = (name, clients=8, max_request=4096, max_reply=4096, *, create=true, open=false, root=None, mode=None))]
    #[allow(clippy::too_many_arguments)]
    fn make(
        name: &str,
        clients: u32,
        max_request: u32,
        max_reply: u32,
        create: bool,
        open: bool,
        root: Option<PathBuf>,
        mode: Option<u32>,
    ) -> PyResult<RequestReply> {
        let o = options(root, mode, false, false);
        let r = match (create, open) {
            (true, true) => o.open_or_create_request_reply(name, clients, max_request, max_reply),
            (false, _) => o.open_request_reply(name),
            _ => o.create_request_reply(name, clients, max_request, max_reply),
        }
        .map_err(err)?;
        Ok(RequestReply { inner: r })
    }

    fn server(&self) -> PyResult<RpcServer> {
        let server = self.inner.server().map_err(err)?;
        Ok(RpcServer {
            answers: std::sync::Mutex::new(Answers {
                replier: Some(server.replier()),
                pending: Default::default(),
                next: 0,
            }),
            end: Shared::new(Holding::new(server)),
        })
    }

    fn client(&self) -> PyResult<RpcClient> {
        Ok(RpcClient {
            end: Shared::new(Holding::new(self.inner.client().map_err(err)?)),
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }
}

/// A request/reply channel's server. Threads may share it: `recv` calls take turns, and
/// `reply` needs no turn (a `filemap::Replier`), so one thread may wait for requests while
/// others answer the ones it took.
#[pyclass(module = "filemap._filemap", frozen)]
struct RpcServer {
    end: Shared<Holding<filemap::RpcServer>>,
    answers: std::sync::Mutex<Answers>,
}

/// What a request/reply server's `reply` needs, outside the server's turn.
struct Answers {
    /// `None` once closed: a replier keeps the channel open, as a handle does.
    replier: Option<filemap::Replier>,
    /// Tickets handed to Python, by number.
    pending: std::collections::HashMap<u64, filemap::Ticket>,
    next: u64,
}

impl RpcServer {
    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number that Python code answers `t` by.
    fn hand_out(&self, t: filemap::Ticket) -> u64 {
        let mut a = self.answers();
        let n = a.next;
        a.next += 1;
        a.pending.insert(n, t);
        n
    }
}

#[pymethods]
impl RpcServer {
    /// `(ticket, request)`, or `None` on timeout.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(u64, Vec<u8>)>> {
        let deadline = deadline_of(timeout)?;
        let mut end = take_or!(self.end, py, deadline, None);
        let mut buf = Vec::new();
        Ok(end
            .next(py, &mut buf, deadline)?
            .map(|t| (self.hand_out(t), buf)))
    }

    /// Receives the next request into `buffer` (any writable bytes-like object):
    /// `(ticket, length)`, or `None` on timeout. A request longer than the buffer is held
    /// back for the next receive, and `ValueError` states its length.
    #[pyo3(signature = (buffer, timeout=None))]
    fn recv_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<(u64, usize)>> {
        let out = Output::new(buffer)?;
        let deadline = deadline_of(timeout)?;
        let mut end = take_or!(self.end, py, deadline, None);
        let got = end.next_into(py, &out, deadline)?;
        Ok(got.map(|(t, len)| (self.hand_out(t), len)))
    }

    /// Answers the request `ticket`; `False` if its client is gone.
    fn reply(&self, ticket: u64, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        let data = Input::new(data)?;
        let (replier, t) = {
            let mut a = self.answers();
            let replier = a.replier.clone().ok_or_else(closed)?;
            let t = a
                .pending
                .remove(&ticket)
                .ok_or_else(|| PyValueError::new_err(format!("no pending request {ticket}")))?;
            (replier, t)
        };
        replier.reply(t, &data.bytes()).map_err(err)
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("RpcServer")?;
        let mut a = self.answers();
        a.replier = None;
        a.pending.clear();
        Ok(())
    }
}

/// A request/reply channel's client. Threads may share it.
#[pyclass(module = "filemap._filemap", frozen)]
struct RpcClient {
    end: Shared<Holding<filemap::RpcClient>>,
}

#[pymethods]
impl RpcClient {
    /// Sends `request` and returns the reply; `None` on timeout (a reply that comes later
    /// is thrown away by the next call). The wait releases the GIL in slices, so Ctrl-C
    /// interrupts it.
    #[pyo3(signature = (request, timeout=None))]
    fn call(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Vec<u8>>> {
        let request = Input::new(request)?;
        let deadline = deadline_of(timeout)?;
        let mut c = take_or!(self.end, py, deadline, None);
        c.send(&request)?;
        let mut reply = Vec::new();
        Ok(c.next(py, &mut reply, deadline)?.map(|()| reply))
    }

    /// As `call`, with the reply copied into `buffer` (any writable bytes-like object):
    /// its length, or `None` on timeout. A reply longer than the buffer is held back for
    /// `wait_reply` or `wait_reply_into`, and `ValueError` states its length.
    #[pyo3(signature = (request, buffer, timeout=None))]
    fn call_into(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<usize>> {
        let request = Input::new(request)?;
        let out = Output::new(buffer)?;
        let deadline = deadline_of(timeout)?;
        let mut c = take_or!(self.end, py, deadline, None);
        c.send(&request)?;
        Ok(c.next_into(py, &out, deadline)?.map(|((), len)| len))
    }

    /// Sends `request` without waiting for its reply (a request still pending is given up).
    fn send_request(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
        let request = Input::new(request)?;
        let mut c = take_or!(self.end, py, None, ());
        c.send(&request)
    }

    /// Waits for the reply to the pending request; `None` on timeout (the request stays
    /// pending). `ValueError` with no request pending.
    #[pyo3(signature = (timeout=None))]
    fn wait_reply(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Vec<u8>>> {
        let deadline = deadline_of(timeout)?;
        let mut c = take_or!(self.end, py, deadline, None);
        let mut reply = Vec::new();
        Ok(c.next(py, &mut reply, deadline)?.map(|()| reply))
    }

    /// As `wait_reply`, into `buffer`: the reply's length, or `None` on timeout.
    #[pyo3(signature = (buffer, timeout=None))]
    fn wait_reply_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<usize>> {
        let out = Output::new(buffer)?;
        let deadline = deadline_of(timeout)?;
        let mut c = take_or!(self.end, py, deadline, None);
        Ok(c.next_into(py, &out, deadline)?.map(|((), len)| len))
    }

    fn close(&self) -> PyResult<()> {
        self.end.close("RpcClient")
    }
}

fn namespace(root: Option<PathBuf>) -> Namespace {
    root.map_or_else(Namespace::new, Namespace::at)
}

/// One object as `list` and `info` describe it: the keys of `filemap info --json`, with
/// `mode` a number, and the state of a mutex, semaphore, event or channel as the same
/// flat keys.
fn info_dict<'py>(py: Python<'py>, i: &filemap::ObjectInfo) -> PyResult<Bound<'py, PyAny>> {
    use filemap::SyncState;
    let d = pyo3::types::PyDict::new(py);
    d.set_item("name", i.name.to_string())?;
    d.set_item("kind", i.kind.map(|k| k.as_str()))?;
    d.set_item("size", i.size)?;
    d.set_item("live", i.live)?;
    d.set_item("persistent", i.persistent)?;
    d.set_item("file_backed", i.file_backed)?;
    d.set_item("owner_uid", i.owner_uid)?;
    d.set_item("mode", i.mode)?;
    d.set_item("creator_pid", i.creator_pid)?;
    let created = i
        .created
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|t| t.as_secs_f64());
    d.set_item("created", created)?;
    d.set_item("holders", i.holders.clone())?;
    d.set_item("handles", i.handles)?;
    d.set_item("os_path", i.os_path.clone())?;
    match i.state {
        Some(SyncState::Mutex {
            owned,
            owner_pid,
            abandoned,
        }) => {
            d.set_item("owned", owned)?;
            d.set_item("owner_pid", owner_pid)?;
            d.set_item("abandoned", abandoned)?;
        }
        Some(SyncState::Semaphore { count, max }) => {
            d.set_item("count", count)?;
            d.set_item("max", max)?;
        }
        Some(SyncState::Event { set, manual_reset }) => {
            d.set_item("signalled", set)?;
            d.set_item("manual_reset", manual_reset)?;
        }
        Some(SyncState::Channel {
            kind: _,
            capacity,
            max_message,
            queued,
            producer,
            peers,
        }) => {
            d.set_item("capacity", capacity)?;
            d.set_item("max_message", max_message)?;
            d.set_item("queued", queued)?;
            d.set_item("producer", producer)?;
            d.set_item("peers", peers)?;
        }
        _ => {}
    }
    Ok(d.into_any())
}

/// The objects of the namespace (your `Local\` and `Global\`).
#[pyfunction]
#[pyo3(signature = (*, root=None))]
fn list_objects(py: Python<'_>, root: Option<PathBuf>) -> PyResult<Vec<Bound<'_, PyAny>>> {
    let objects = namespace(root).list().map_err(err)?;
    objects.iter().map(|i| info_dict(py, i)).collect()
}

/// Everything known about one object.
#[pyfunction]
#[pyo3(signature = (name, *, root=None))]
fn info<'py>(py: Python<'py>, name: &str, root: Option<PathBuf>) -> PyResult<Bound<'py, PyAny>> {
    let i = namespace(root).info(name).map_err(err)?;
    info_dict(py, &i)
}

/// The pids of the processes that hold `name` (see `Namespace::holders`: on Windows
/// this looks through the system's handle table, which `info` does not).
#[pyfunction]
#[pyo3(signature = (name, *, root=None))]
fn holders(py: Python<'_>, name: &str, root: Option<PathBuf>) -> PyResult<Vec<u32>> {
    let ns = namespace(root);
    py.detach(|| ns.holders(name)).map_err(err)
}

/// Removes a name (holders keep the object until they close it).
#[pyfunction]
#[pyo3(signature = (name, *, root=None))]
fn remove(name: &str, root: Option<PathBuf>) -> PyResult<()> {
    namespace(root).remove(name).map_err(err)
}

/// For `os.register_at_fork(after_in_child=...)`: channel ends that other threads had
/// taken when the process forked are refused in the child instead of awaited for ever.
#[pyfunction]
fn _after_fork_in_child() {
    shared::after_fork_in_child();
}

/// Removes stale objects; returns their names.
#[pyfunction]
#[pyo3(signature = (*, root=None))]
fn gc(root: Option<PathBuf>) -> PyResult<Vec<String>> {
    Ok(namespace(root)
        .gc()
        .map_err(err)?
        .iter()
        .map(|n| n.to_string())
        .collect())
}

#[pymodule]
fn _filemap(m: &Bound<'_, PyModule>) -> PyResult<()> {
    buffer::register(m)?;
    m.add_class::<FileMapping>()?;
    m.add_class::<Mutex>()?;
    m.add_class::<Semaphore>()?;
    m.add_class::<Event>()?;
    m.add_class::<Stream>()?;
    m.add_class::<Sender>()?;
    m.add_class::<Loan>()?;
    m.add_class::<Message>()?;
    m.add_class::<Receiver>()?;
    m.add_class::<Broadcast>()?;
    m.add_class::<Publisher>()?;
    m.add_class::<Subscriber>()?;
    m.add_class::<Latest>()?;
    m.add_class::<LatestWriter>()?;
    m.add_class::<LatestReader>()?;
    m.add_class::<RequestReply>()?;
    m.add_class::<RpcServer>()?;
    m.add_class::<RpcClient>()?;
    m.add_function(wrap_pyfunction!(wait_any, m)?)?;
    m.add_function(wrap_pyfunction!(list_objects, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(holders, m)?)?;
    m.add_function(wrap_pyfunction!(remove, m)?)?;
    m.add_function(wrap_pyfunction!(gc, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add("KindMismatchError", m.py().get_type::<KindMismatchError>())?;
    m.add("CorruptError", m.py().get_type::<CorruptError>())?;
    Ok(())
}
