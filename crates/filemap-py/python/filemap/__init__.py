"""Named shared memory and synchronization objects with Windows semantics.

The Python face of filemap (distribution ``filemap-ipc``): the same objects, names,
namespace and rules as the Rust library, so a Python process and a Rust one (or two
Python processes) share them.

- A name lives exactly as long as its last handle, in any process, also after ``kill -9``:
  nothing leaks, and no process unlinks what another still uses.
- Views are ``memoryview`` objects over filemap's own views: they keep their memory
  mapped for as long as they (or anything made from them, a NumPy array say) live,
  whatever happens to the mapping's handle.
- Errors are the built-in exceptions (``FileNotFoundError``, ``FileExistsError``,
  ``PermissionError``, ``TimeoutError``, ``ValueError``, ...) with filemap's message.
- Blocking calls release the GIL, and Ctrl-C interrupts them. Threads may share every
  object; calls on one channel end take turns.
- Channel messages are any bytes-like object, and receives fill any writable one; a
  stream's ``Sender.loan`` and ``Receiver.recv_in_place`` write and read a message where
  it lies in the ring, with no copy at all.
- ``SharedMemory`` and ``ShareableList`` stand in for ``multiprocessing.shared_memory``'s,
  without its resource tracker.
- Handles pickle as their names: a process that unpickles one (``multiprocessing`` with
  ``spawn``, a queue) opens the name and gets a handle of its own.
- A child made by ``fork`` may close the handles it inherited: its parent's stay open.
"""

from __future__ import annotations

import builtins
import os as _os
import secrets as _secrets
import sys
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union, cast

from . import _filemap
from ._filemap import CorruptError, KindMismatchError, Loan, Message
from ._shareable import ShareableList

if TYPE_CHECKING:
    # Any object with a contiguous buffer: bytes, bytearray, memoryview, array.array, NumPy
    # arrays (writable ones for WriteableBuffer).
    from _typeshed import ReadableBuffer, WriteableBuffer

if hasattr(_os, "register_at_fork"):
    # Channel ends that other threads had taken when the process forked are refused in the
    # child (ValueError), instead of awaited for ever.
    _os.register_at_fork(after_in_child=_filemap._after_fork_in_child)

__all__ = [
    "AbandonedMutexError",
    "Broadcast",
    "Latest",
    "RequestReply",
    "CorruptError",
    "Event",
    "FileMapping",
    "KindMismatchError",
    "Loan",
    "Message",
    "Mutex",
    "Semaphore",
    "ShareableList",
    "SharedMemory",
    "Stream",
    "gc",
    "info",
    "holders",
    "list_objects",
    "remove",
    "wait_any",
]

_PathLike = Union[str, "_os.PathLike[str]", None]


class AbandonedMutexError(Exception):
    """The mutex was taken, but its previous owner died (or its thread exited) holding it,
    like .NET's ``AbandonedMutexException``.

    It is raised *after* the lock has been taken: the calling thread owns the mutex, and
    must release it (``mutex.release()``) once it has repaired what the mutex guards. For
    ``wait_any``, ``index`` says which object it was.
    """

    def __init__(self, mutex: "Mutex", index: Optional[int] = None) -> None:
        super().__init__(
            f"the previous owner of the mutex {mutex.name} died holding it; "
            "this thread owns it now and must release it"
        )
        self.mutex = mutex
        self.index = index


def _open_by_name(cls: Any, name: str, root: _PathLike, *args: Any) -> Any:
    """Unpickles a handle: opens its name (``OpenFileMapping``, ``OpenEvent``, ...)."""
    return cls.open(name, *args, root=root)


def _reduce_by_name(handle: Any, *args: Any) -> Any:
    """Pickles a handle as its name: the receiving process opens the name, and gets a
    handle of its own, as a duplicated handle is on Windows. It needs the object to live
    until then (the sender's handle keeps it alive)."""
    name = handle.name  # ValueError if the handle is closed
    if name is None:
        raise TypeError(
            f"an unnamed {type(handle).__name__} cannot be pickled: there is no name to open"
        )
    return (_open_by_name, (type(handle), name, handle._root, *args))


_END_NOT_PICKLED = (
    "a channel's end cannot be pickled: it is a role that this process plays; send the "
    "channel, and take the end in the other process"
)


class FileMapping:
    """A handle to a named mapping (``CreateFileMapping`` / ``OpenFileMapping``).

    Closing the handle (``close()``, or leaving a ``with`` block) removes the name if it
    was the last handle anywhere; views keep their memory.
    """

    def __init__(self, native: "_filemap.FileMapping", root: _PathLike = None) -> None:
        self._m = native
        self._root = root

    @classmethod
    def create(
        cls,
        name: str,
        size: int,
        *,
        root: _PathLike = None,
        mode: Optional[int] = None,
        persistent: bool = False,
        sparse: bool = False,
    ) -> "FileMapping":
        """Creates a mapping of ``size`` bytes; ``FileExistsError`` if a live one has the name."""
        # Positional arguments: the native call parses them faster than keywords.
        return cls(
            _filemap.FileMapping.make(name, size, True, False, root, mode, persistent, sparse),
            root,
        )

    @classmethod
    def open_or_create(
        cls,
        name: str,
        size: int,
        *,
        root: _PathLike = None,
        mode: Optional[int] = None,
        persistent: bool = False,
        sparse: bool = False,
    ) -> "FileMapping":
        """Opens the live mapping, or creates it; ``already_existed`` tells which."""
        return cls(
            _filemap.FileMapping.make(
                name,
                size,
                open=True,
                root=root,
                mode=mode,
                persistent=persistent,
                sparse=sparse,
            ),
            root=root,
        )

    @classmethod
    def open(cls, name: str, access: str = "rw", *, root: _PathLike = None) -> "FileMapping":
        """Opens the live mapping for ``access`` ("r" or "rw"); ``FileNotFoundError`` if none."""
        return cls(_filemap.FileMapping.open(name, access, root=root), root=root)

    @classmethod
    def from_file(
        cls,
        path: str,
        size: int = 0,
        access: str = "rw",
        *,
        name: Optional[str] = None,
        root: _PathLike = None,
    ) -> "FileMapping":
        """Maps a file (``size`` 0: its length), optionally under a name."""
        return cls(
            _filemap.FileMapping.from_file(path, size, access, name=name, root=root),
            root=root,
        )

    @property
    def name(self) -> Optional[str]:
        return self._m.name

    @property
    def size(self) -> int:
        return int(self._m.size)

    @property
    def already_existed(self) -> bool:
        return bool(self._m.already_existed)

    @property
    def os_path(self) -> Optional[str]:
        p = self._m.os_path
        return None if p is None else str(p)

    @property
    def access(self) -> str:
        return str(self._m.access)

    @property
    def closed(self) -> bool:
        return bool(self._m.closed)

    def view(self, offset: int = 0, length: int = 0, access: Optional[str] = None) -> memoryview:
        """Maps ``length`` bytes at ``offset`` (``length`` 0: to the end), with ``access``
        "r", "rw" or "copy" (copy-on-write; default: the handle's access).

        The result is a ``memoryview`` (read-only for "r"): ``bytes(v[0:5])``,
        ``v[0:5] = b"hello"`` and ``numpy.frombuffer(v, ...)`` all work without copying. It
        keeps its memory mapped for as long as it, or anything made from it, lives; closing
        the mapping does not unmap it, and neither does ``view.release()`` while NumPy
        arrays made from it live.
        """
        return self._m.view(offset, length, access)

    def close(self) -> None:
        self._m.close()

    def __reduce__(self) -> Any:
        return _reduce_by_name(self, self.access)

    def __enter__(self) -> "FileMapping":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<filemap.FileMapping closed>"
        return f"<filemap.FileMapping {self.name!r} size={self.size}>"


class Mutex:
    """A named, robust, recursive mutex (``CreateMutex``). Ownership belongs to the thread.

    ``with mutex:`` locks and unlocks it. If its previous owner died holding it, locking
    raises ``AbandonedMutexError`` with the lock taken (see there).
    """

    def __init__(self, native: Any, root: _PathLike = None) -> None:
        self._m = native
        self._root = root

    @classmethod
    def create(cls, name: str, *, root: _PathLike = None, mode: Optional[int] = None) -> "Mutex":
        return cls(_filemap.Mutex.make(name, root=root, mode=mode), root=root)

    @classmethod
    def open_or_create(
        cls, name: str, *, root: _PathLike = None, mode: Optional[int] = None
    ) -> "Mutex":
        return cls(_filemap.Mutex.make(name, open=True, root=root, mode=mode), root=root)

    @classmethod
    def open(cls, name: str, *, root: _PathLike = None) -> "Mutex":
        return cls(_filemap.Mutex.make(name, create=False, root=root), root=root)

    @property
    def name(self) -> str:
        return str(self._m.name)

    @property
    def already_existed(self) -> bool:
        return bool(self._m.already_existed)

    def acquire(self, timeout: Optional[float] = None) -> bool:
        """Takes the mutex, waiting up to ``timeout`` seconds (``None``: as long as it
        takes); ``False`` on timeout. Raises ``AbandonedMutexError`` (owning it) if its
        previous owner died holding it."""
        got = self._m.acquire(timeout)
        if got is None:
            return False
        if got:
            raise AbandonedMutexError(self)
        return True

    def release(self) -> None:
        """Releases one level of ownership; ``PermissionError`` if this thread does not own it."""
        self._m.release()

    def __enter__(self) -> "Mutex":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        self._m.close()

    def __reduce__(self) -> Any:
        return _reduce_by_name(self)


class Semaphore:
    """A named counting semaphore (``CreateSemaphore``). ``with sem:`` takes one and gives
    it back."""

    def __init__(self, native: Any, root: _PathLike = None) -> None:
        self._m = native
        self._root = root

    @classmethod
    def create(
        cls,
        name: str,
        initial: int = 0,
        maximum: int = 0x7FFFFFFF,
        *,
        root: _PathLike = None,
        mode: Optional[int] = None,
    ) -> "Semaphore":
        return cls(_filemap.Semaphore.make(name, initial, maximum, root=root, mode=mode), root=root)

    @classmethod
    def open_or_create(
        cls,
        name: str,
        initial: int = 0,
        maximum: int = 0x7FFFFFFF,
        *,
        root: _PathLike = None,
        mode: Optional[int] = None,
    ) -> "Semaphore":
        return cls(
            _filemap.Semaphore.make(name, initial, maximum, open=True, root=root, mode=mode),
            root=root,
        )

    @classmethod
    def open(cls, name: str, *, root: _PathLike = None) -> "Semaphore":
        return cls(_filemap.Semaphore.make(name, create=False, root=root), root=root)

    @property
    def name(self) -> str:
        return str(self._m.name)

    @property
    def count(self) -> int:
        return int(self._m.count)

    @property
    def already_existed(self) -> bool:
        return bool(self._m.already_existed)

    def acquire(self, timeout: Optional[float] = None) -> bool:
        return bool(self._m.acquire(timeout))

    def release(self, n: int = 1) -> int:
        """Adds ``n``; returns the previous count. ``ValueError`` past the maximum."""
        return int(self._m.release(n))

    def __enter__(self) -> "Semaphore":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        self._m.close()

    def __reduce__(self) -> Any:
        return _reduce_by_name(self)


class Event:
    """A named auto-reset or manual-reset event (``CreateEvent``)."""

    def __init__(self, native: Any, root: _PathLike = None) -> None:
        self._m = native
        self._root = root

    @classmethod
    def create(
        cls,
        name: str,
        manual_reset: bool = False,
        initially_set: bool = False,
        *,
        root: _PathLike = None,
        mode: Optional[int] = None,
    ) -> "Event":
        return cls(
            _filemap.Event.make(name, manual_reset, initially_set, root=root, mode=mode),
            root=root,
        )

    @classmethod
    def open_or_create(
        cls,
        name: str,
        manual_reset: bool = False,
        initially_set: bool = False,
        *,
        root: _PathLike = None,
        mode: Optional[int] = None,
    ) -> "Event":
        return cls(
            _filemap.Event.make(
                name, manual_reset, initially_set, open=True, root=root, mode=mode
            ),
            root=root,
        )

    @classmethod
    def open(cls, name: str, *, root: _PathLike = None) -> "Event":
        return cls(_filemap.Event.make(name, create=False, root=root), root=root)

    @property
    def name(self) -> str:
        return str(self._m.name)

    @property
    def already_existed(self) -> bool:
        return bool(self._m.already_existed)

    def set(self) -> None:
        self._m.set()

    def reset(self) -> None:
        self._m.reset()

    def is_set(self) -> bool:
        return bool(self._m.is_set())

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until set (an auto-reset event is reset by it); ``False`` on timeout."""
        return bool(self._m.wait(timeout))

    def __enter__(self) -> "Event":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._m.close()

    def __reduce__(self) -> Any:
        return _reduce_by_name(self)


def wait_any(
    objects: "Sequence[Union[Mutex, Semaphore, Event, Receiver, Subscriber, LatestReader, RpcServer, RpcClient]]",
    timeout: Optional[float] = None,
) -> int:
    """Waits until any of ``objects`` is signalled, takes it (``WaitForMultipleObjects``)
    and returns its index; the lowest index wins. ``TimeoutError`` on timeout; an abandoned
    mutex raises ``AbandonedMutexError`` (with ``index``), owned by the caller. A stream
    ``Receiver`` or a broadcast ``Subscriber`` is ready when a message is there (or its
    writer has gone), a ``LatestReader`` when a value newer than the last it read is (or
    its writer has gone), an ``RpcServer`` when a request is waiting, an ``RpcClient`` when
    the reply to its ``send_request`` has come (or the server has gone); nothing is taken,
    so receive after the wait."""
    r = _filemap.wait_any([o._m for o in objects], timeout)
    if r is None:
        raise TimeoutError(f"timed out waiting for any of {len(objects)} objects")
    index, abandoned = r
    if abandoned:
        obj = objects[index]
        assert isinstance(obj, Mutex)
        raise AbandonedMutexError(obj, index)
    return index


class Stream:
    """A named stream channel: one producer (``sender()``), one consumer (``receiver()``),
    byte messages in a ring in shared memory."""

    def __init__(self, native: Any, root: _PathLike = None) -> None:
        self._m = native
        self._root = root

    @classmethod
    def create(
        cls, name: str, capacity: int = 1 << 20, max_message: int = 0, *, root: _PathLike = None
    ) -> "Stream":
        return cls(_filemap.Stream.make(name, capacity, max_message, root=root), root=root)

    @classmethod
    def open_or_create(
        cls, name: str, capacity: int = 1 << 20, max_message: int = 0, *, root: _PathLike = None
    ) -> "Stream":
        return cls(
            _filemap.Stream.make(name, capacity, max_message, open=True, root=root),
            root=root,
        )

    @classmethod
    def open(cls, name: str, *, root: _PathLike = None) -> "Stream":
        return cls(_filemap.Stream.make(name, create=False, root=root), root=root)

    @property
    def name(self) -> str:
        return str(self._m.name)

    @property
    def capacity(self) -> int:
        return int(self._m.capacity)

    @property
    def max_message(self) -> int:
        return int(self._m.max_message)

    @property
    def queued(self) -> int:
        """Messages sent and not yet given back by the receiver, which gives them back in
        batches: every 256 messages, or when it runs out of messages."""
        return int(self._m.queued)

    def sender(self) -> "Sender":
        return Sender(self._m.sender())

    def receiver(self) -> "Receiver":
        return Receiver(self._m.receiver())

    def close(self) -> None:
        """Closes this handle (its senders and receivers keep the channel open)."""
        self._m = _Closed()

    def __reduce__(self) -> Any:
        return _reduce_by_name(self)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Channel:
    """What every channel handle has."""

    _native: Any = None

    def __init__(self, native: Any, root: _PathLike = None) -> None:
        self._m = native
        self._root = root

    @property
    def name(self) -> str:
        return str(self._m.name)

    def close(self) -> None:
        self._m = _Closed()

    def __reduce__(self) -> Any:
        return _reduce_by_name(self)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _End:
    """What every end of a channel has. Threads may share an end: their calls take turns,
    and ``close()`` while another thread's call runs is a ``RuntimeError``."""

    def __init__(self, native: Any) -> None:
        self._m = native

    def close(self) -> None:
        self._m.close()

    def __reduce__(self) -> Any:
        raise TypeError(_END_NOT_PICKLED)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Broadcast(_Channel):
    """A named broadcast channel: one ``publisher()``, up to 64 ``subscriber()``s, each of
    which reads every message published after it subscribed. The publisher never waits; a
    subscriber that falls behind is told how many messages it lost."""

    @classmethod
    def create(cls, name: str, slots: int = 64, max_message: int = 4096, *, root: _PathLike = None) -> "Broadcast":
        return cls(_filemap.Broadcast.make(name, slots, max_message, root=root), root=root)

    @classmethod
    def open_or_create(cls, name: str, slots: int = 64, max_message: int = 4096, *, root: _PathLike = None) -> "Broadcast":
        return cls(
            _filemap.Broadcast.make(name, slots, max_message, open=True, root=root),
            root=root,
        )

    @classmethod
    def open(cls, name: str, *, root: _PathLike = None, read_only: bool = False) -> "Broadcast":
        """Opens the live channel. With ``read_only``, read permission is enough and its
        subscribers can never write to it; they take no role (not counted against the 64,
        nor shown as peers) and look for messages every millisecond while they wait."""
        return cls(
            _filemap.Broadcast.make(name, create=False, root=root, read_only=read_only),
            root=root,
        )

    @property
    def read_only(self) -> bool:
        """Whether this handle opened the channel read-only (it can only subscribe)."""
        return bool(self._m.read_only)

    def publisher(self) -> "Publisher":
        return Publisher(self._m.publisher())

    def subscriber(self) -> "Subscriber":
        return Subscriber(self._m.subscriber())


class Publisher(_End):
    def send(self, data: "ReadableBuffer") -> None:
        """Publishes ``data`` (any bytes-like object) to every subscriber; never waits."""
        self._m.send(data)


class Subscriber(_End):
    def recv(self, timeout: Optional[float] = None) -> "tuple[bytes, int]":
        """The next message and how many were lost before it; ``TimeoutError``;
        ``BrokenPipeError`` once the publisher has gone and every message was read."""
        r = self._m.recv(timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a message")
        return bytes(r[0]), r[1]

    def recv_into(self, buffer: "WriteableBuffer", timeout: Optional[float] = None) -> "tuple[int, int]":
        """Receives the next message into ``buffer`` (any writable bytes-like object):
        ``(length, lost)``, as ``recv`` but without a ``bytes`` object. A message longer
        than ``buffer`` raises ``ValueError`` (which gives its length) and is held back:
        the next ``recv`` or ``recv_into`` returns it."""
        r = self._m.recv_into(buffer, timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a message")
        return int(r[0]), int(r[1])


class Latest(_Channel):
    """A named latest-value channel: one ``writer()`` publishes values, ``reader()``s always
    get a whole copy of the latest one, never a torn one."""

    @classmethod
    def create(cls, name: str, max_message: int = 4096, *, root: _PathLike = None) -> "Latest":
        return cls(_filemap.Latest.make(name, max_message, root=root), root=root)

    @classmethod
    def open_or_create(cls, name: str, max_message: int = 4096, *, root: _PathLike = None) -> "Latest":
        return cls(_filemap.Latest.make(name, max_message, open=True, root=root), root=root)

    @classmethod
    def open(cls, name: str, *, root: _PathLike = None, read_only: bool = False) -> "Latest":
        """Opens the live channel. With ``read_only``, read permission is enough and its
        readers can never write to it; they take no role (not counted against the 64, nor
        shown as peers) and ``wait_newer`` looks for a value every millisecond."""
        return cls(
            _filemap.Latest.make(name, create=False, root=root, read_only=read_only),
            root=root,
        )

    @property
    def read_only(self) -> bool:
        """Whether this handle opened the channel read-only (it can only read)."""
        return bool(self._m.read_only)

    def writer(self) -> "LatestWriter":
        return LatestWriter(self._m.writer())

    def reader(self) -> "LatestReader":
        return LatestReader(self._m.reader())


class LatestWriter(_End):
    def publish(self, data: "ReadableBuffer") -> None:
        """Publishes ``data`` (any bytes-like object) as the latest value."""
        self._m.publish(data)


class LatestReader(_End):
    def read(self) -> "Optional[tuple[bytes, int]]":
        """The latest value and its version (from 1), or ``None`` before the first."""
        r = self._m.read()
        return None if r is None else (bytes(r[0]), r[1])

    def read_into(self, buffer: "WriteableBuffer") -> "Optional[tuple[int, int]]":
        """Copies the latest value into ``buffer`` (any writable bytes-like object):
        ``(length, version)``, or ``None`` before the first. A value longer than
        ``buffer`` raises ``ValueError``, which gives its length."""
        r = self._m.read_into(buffer)
        return None if r is None else (int(r[0]), int(r[1]))

    def wait_newer(self, version: int, timeout: Optional[float] = None) -> "tuple[bytes, int]":
        """Waits for a value newer than ``version``; ``TimeoutError``; ``BrokenPipeError``
        if the writer has gone."""
        r = self._m.wait_newer(version, timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a newer value")
        return bytes(r[0]), r[1]

    def wait_newer_into(
        self, version: int, buffer: "WriteableBuffer", timeout: Optional[float] = None
    ) -> "tuple[int, int]":
        """Waits for a value newer than ``version`` and copies it into ``buffer`` (any
        writable bytes-like object): ``(length, version)``, as ``wait_newer`` but without a
        ``bytes`` object; ``TimeoutError``; ``BrokenPipeError`` if the writer has gone. A
        value longer than ``buffer`` raises ``ValueError``, which gives its length (it stays
        the latest)."""
        r = self._m.wait_newer_into(version, buffer, timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a newer value")
        return int(r[0]), int(r[1])


class RequestReply(_Channel):
    """A named request/reply channel: up to ``clients`` ``client()``s send requests, one
    ``server()`` answers each."""

    @classmethod
    def create(cls, name: str, clients: int = 8, max_request: int = 4096, max_reply: int = 4096, *, root: _PathLike = None) -> "RequestReply":
        return cls(
            _filemap.RequestReply.make(name, clients, max_request, max_reply, root=root),
            root=root,
        )

    @classmethod
    def open_or_create(cls, name: str, clients: int = 8, max_request: int = 4096, max_reply: int = 4096, *, root: _PathLike = None) -> "RequestReply":
        return cls(
            _filemap.RequestReply.make(name, clients, max_request, max_reply, open=True, root=root),
            root=root,
        )

    @classmethod
    def open(cls, name: str, *, root: _PathLike = None) -> "RequestReply":
        return cls(_filemap.RequestReply.make(name, create=False, root=root), root=root)

    def server(self) -> "RpcServer":
        return RpcServer(self._m.server())

    def client(self) -> "RpcClient":
        return RpcClient(self._m.client())


class RpcServer(_End):
    def recv(self, timeout: Optional[float] = None) -> "tuple[int, bytes]":
        """The next request: ``(ticket, request)``; answer it with ``reply(ticket, data)``."""
        r = self._m.recv(timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a request")
        return r[0], bytes(r[1])

    def recv_into(self, buffer: "WriteableBuffer", timeout: Optional[float] = None) -> "tuple[int, int]":
        """Receives the next request into ``buffer`` (any writable bytes-like object):
        ``(ticket, length)``. A request longer than ``buffer`` raises ``ValueError``
        (which gives its length) and is held back: the next ``recv`` or ``recv_into``
        returns it."""
        r = self._m.recv_into(buffer, timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a request")
        return int(r[0]), int(r[1])

    def reply(self, ticket: int, data: "ReadableBuffer") -> bool:
        """Answers with ``data`` (any bytes-like object); ``False`` if the client is gone
        (or gave up)."""
        return bool(self._m.reply(ticket, data))


class RpcClient(_End):
    def call(self, request: "ReadableBuffer", timeout: Optional[float] = None) -> bytes:
        """Sends ``request`` and returns the reply; ``TimeoutError`` (a reply that comes
        later is thrown away by the next call); ``BrokenPipeError`` if the server closed or
        died. Ctrl-C interrupts the wait."""
        r = self._m.call(request, timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a reply")
        return bytes(r)

    def call_into(self, request: "ReadableBuffer", buffer: "WriteableBuffer", timeout: Optional[float] = None) -> int:
        """As ``call``, with the reply copied into ``buffer`` (any writable bytes-like
        object); returns its length. A reply longer than ``buffer`` raises ``ValueError``
        (which gives its length) and is held back for ``wait_reply`` or
        ``wait_reply_into``."""
        n = self._m.call_into(request, buffer, timeout)
        if n is None:
            raise TimeoutError("timed out waiting for a reply")
        return int(n)

    def send_request(self, request: "ReadableBuffer") -> None:
        """Sends ``request`` without waiting (a request still pending is given up); then
        ``wait_reply()``, or ``wait_any`` with this client among other objects."""
        self._m.send_request(request)

    def wait_reply(self, timeout: Optional[float] = None) -> bytes:
        """The reply to the pending request; ``TimeoutError`` (it stays pending);
        ``ValueError`` with none pending; ``BrokenPipeError`` if the server closed or died."""
        r = self._m.wait_reply(timeout)
        if r is None:
            raise TimeoutError("timed out waiting for a reply")
        return bytes(r)

    def wait_reply_into(self, buffer: "WriteableBuffer", timeout: Optional[float] = None) -> int:
        """As ``wait_reply``, with the reply copied into ``buffer``; returns its length."""
        n = self._m.wait_reply_into(buffer, timeout)
        if n is None:
            raise TimeoutError("timed out waiting for a reply")
        return int(n)


class _Closed:
    """What a closed handle's native half becomes: every use is an error."""

    def __getattr__(self, name: str) -> Any:
        raise ValueError("the handle is closed")


class Sender:
    """A stream's producer; closing it (or leaving a ``with`` block) ends the stream cleanly.
    Threads may share it: their calls take turns."""

    def __init__(self, native: Any) -> None:
        self._m = native

    def send(self, data: "ReadableBuffer", timeout: Optional[float] = None) -> None:
        """Sends ``data`` (any bytes-like object: ``bytes``, ``bytearray``, ``memoryview``, a
        C-contiguous NumPy array), copied once, straight into the ring; waits for room.
        ``TimeoutError`` on timeout, ``BrokenPipeError`` if the consumer is gone and the
        ring is full."""
        if not self._m.send(data, timeout):
            raise TimeoutError("timed out waiting for room in the stream")

    def send_many(self, messages: "Iterable[ReadableBuffer]", timeout: Optional[float] = None) -> int:
        """Sends each of ``messages`` in order, as ``send`` does, with one call's overhead
        for all; returns how many were sent: all, unless ``timeout`` passed first."""
        return int(self._m.send_many(builtins.list(messages), timeout))

    def loan(self, nbytes: int, timeout: Optional[float] = None) -> "Loan":
        """Lends room for a message of ``nbytes`` bytes in the ring, to be written in place
        (no copy) and then sent; waits for room. ``TimeoutError`` on timeout, ``ValueError``
        for a message larger than the stream allows. See ``Loan``::

            with tx.loan(frame.nbytes) as buf:
                numpy.multiply(a, b, out=numpy.frombuffer(buf, numpy.float32))
            # sent here; an exception in the block sends nothing

        While the loan is open it has this end: other threads' calls on it wait, and this
        thread's are a ``RuntimeError``."""
        loan = self._m.loan(nbytes, timeout)
        if loan is None:
            raise TimeoutError("timed out waiting for room in the stream")
        return cast("Loan", loan)

    def close(self) -> None:
        self._m.close()

    def __reduce__(self) -> Any:
        raise TypeError(_END_NOT_PICKLED)

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Receiver:
    """A stream's consumer. Threads may share it: each message goes to one of them."""

    def __init__(self, native: Any) -> None:
        self._m = native

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next message; ``TimeoutError`` on timeout, ``BrokenPipeError`` once the
        producer has gone and every message was received."""
        m = self._m.recv(timeout)
        if m is None:
            raise TimeoutError("timed out waiting for a message")
        return bytes(m)

    def recv_into(self, buffer: "WriteableBuffer", timeout: Optional[float] = None) -> int:
        """Receives the next message into ``buffer`` (any writable bytes-like object: a
        ``bytearray``, a ``memoryview``, a C-contiguous NumPy array), copied once, straight
        from the ring, and returns its length, as ``socket.recv_into`` does.
        ``TimeoutError`` on timeout, ``BrokenPipeError`` as ``recv``. A message longer
        than ``buffer`` is not received: it stays first in the stream, and ``ValueError``
        states its length."""
        n = self._m.recv_into(buffer, timeout)
        if n is None:
            raise TimeoutError("timed out waiting for a message")
        return int(n)

    def recv_many(self, max: int = 64, timeout: Optional[float] = None) -> "builtins.list[bytes]":
        """Up to ``max`` messages, with one call's overhead for all: waits for the first as
        ``recv`` does (``TimeoutError``, ``BrokenPipeError``), then takes those already
        there."""
        ms = self._m.recv_many(max, timeout)
        if ms is None:
            raise TimeoutError("timed out waiting for a message")
        return cast("builtins.list[bytes]", ms)

    def __iter__(self) -> "Receiver":
        return self

    def __next__(self) -> bytes:
        try:
            return self.recv()
        except BrokenPipeError:
            raise StopIteration from None

    def recv_in_place(self, timeout: Optional[float] = None) -> "Message":
        """The next message, read in place (no copy): its ``buffer`` is a read-only
        ``memoryview`` of its bytes in the ring. It is consumed when it is released::

            with rx.recv_in_place() as buf:
                total = numpy.frombuffer(buf, numpy.float32).sum()
            # released here (even if the block raised)

        ``TimeoutError`` on timeout, ``BrokenPipeError`` once the producer has gone and
        everything was received. While the message is open it has this end: other
        threads' calls on it wait, and this thread's are a ``RuntimeError``."""
        msg = self._m.recv_in_place(timeout)
        if msg is None:
            raise TimeoutError("timed out waiting for a message")
        return cast("Message", msg)

    def close(self) -> None:
        self._m.close()

    def __reduce__(self) -> Any:
        raise TypeError(_END_NOT_PICKLED)

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedMemory:
    """A drop-in for ``multiprocessing.shared_memory.SharedMemory``, with Windows lifetime.

    ``SharedMemory(name=None, create=False, size=0)`` has that class's constructor,
    attributes and methods (``name``, ``size``, ``buf``, ``close()``, ``unlink()``), so a
    program switches with one changed import. The differences, all on purpose:

    - There is no resource tracker: a process that merely attached and exits never
      removes the memory (CPython gh-82300), and nothing is left behind after ``kill -9``
      of every holder.
    - The memory, and the name, end with the last ``close()`` (or the last holder's exit)
      in any process, as on Windows. Without ``unlink()`` nothing leaks.
    - ``unlink()`` removes the name at once (others' handles keep the memory until they
      close), as ``shm_unlink`` does; on Windows it does nothing, as the standard class
      does there.
    - A bare name works as in Python; it means ``Local\\name`` (per user on Linux, per
      session on Windows). ``Global\\name`` shares between users.
    - ``size`` is the exact size asked for by the creator.
    - ``track`` (Python 3.13's switch for the resource tracker) is accepted and ignored:
      there is no tracker to switch off.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        create: bool = False,
        size: int = 0,
        *,
        track: bool = True,
        root: _PathLike = None,
    ) -> None:
        if size < 0:
            raise ValueError("'size' must be a positive integer")
        if create and size == 0:
            raise ValueError("'size' must be a positive number different from zero")
        if name is None:
            if not create:
                raise ValueError("'name' can only be None if create=True")
            while True:
                name = "psm_" + _secrets.token_hex(8)
                try:
                    self._mapping = FileMapping.create(name, size, root=root)
                    break
                except FileExistsError:
                    continue
        elif create:
            self._mapping = FileMapping.create(name, size, root=root)
        else:
            self._mapping = FileMapping.open(name, "rw", root=root)
        self._name = name
        self._root = root
        self._buf: Optional[memoryview] = self._mapping.view()

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._mapping.size

    @property
    def buf(self) -> Optional[memoryview]:
        return self._buf

    def close(self) -> None:
        """Closes this handle. Like the standard class, raises ``BufferError`` while
        memoryviews or arrays made from ``buf`` still live."""
        if self._buf is not None:
            self._buf.release()
            self._buf = None
        self._mapping.close()

    def unlink(self) -> None:
        """Removes the name now (Linux); holders keep the memory until they close it."""
        if sys.platform != "win32":
            try:
                remove(self._name, root=self._root)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "SharedMemory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        if self._root is not None:
            return (_attach_shared_memory, (self.__class__, self.name, self._root))
        return (self.__class__, (self.name, False, self.size))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.name!r}, size={self.size})"


def _attach_shared_memory(cls: Any, name: str, root: _PathLike) -> Any:
    """Unpickles a ``SharedMemory`` made under another namespace root."""
    return cls(name, root=root)


def list_objects(*, root: _PathLike = None) -> "builtins.list[dict[str, Any]]":
    """The objects of your ``Local\\`` namespace and of ``Global\\`` (on Windows, other
    programs' too: the namespace is theirs as well)."""
    return _filemap.list_objects(root=root)


def info(name: str, *, root: _PathLike = None) -> dict[str, Any]:
    """Everything known about one object: the keys of ``filemap info --json``, with
    ``mode`` a number. A mutex adds ``owned``, ``owner_pid`` and ``abandoned``; a
    semaphore ``count`` and ``max``; an event ``signalled`` and ``manual_reset``; a channel
    ``capacity``, ``max_message``, ``queued`` (streams), ``producer`` and ``peers``."""
    return _filemap.info(name, root=root)


def holders(name: str, *, root: _PathLike = None) -> "builtins.list[int]":
    """The pids of the processes that hold ``name``, sorted. On Linux, ``info``'s
    ``holders``; on Windows, found in the system's handle table as Process Explorer finds
    them (each handle of the object's type in your other processes is duplicated for a
    moment, which keeps that object alive meanwhile), which ``info`` does not do."""
    return _filemap.holders(name, root=root)


def remove(name: str, *, root: _PathLike = None) -> None:
    """Removes a name; current holders keep the object until they close it (Linux)."""
    _filemap.remove(name, root=root)


def gc(*, root: _PathLike = None) -> "builtins.list[str]":
    """Removes stale objects (whose holders all died); returns their names."""
    return _filemap.gc(root=root)


#: ``filemap.list()``, as the Rust library's ``Namespace::list`` (``list_objects`` is the
#: same function under a name that does not hide the built-in in ``from filemap import *``).
list = list_objects  # noqa: A001
