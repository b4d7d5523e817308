"""``ShareableList``: a fixed-length list in a ``SharedMemory``, the way
``multiprocessing.shared_memory.ShareableList`` works, on filemap's lifetime rules.

The list's bytes, little-endian (documented for other languages; not the standard
library's layout, which another Python cannot reach in filemap's namespace anyway):

======  ======  =====================================================================
offset  size    field
======  ======  =====================================================================
0       4       magic ``b"FMSL"``
4       4       layout version (1)
8       8       number of items, ``n``
16      16·n    one entry per item: kind (1 byte: 0 None, 1 int, 2 float, 3 bool, 4 str,
                5 bytes), 3 zero bytes, the item's room in bytes (4 bytes, a multiple of
                8), the offset of its value (8 bytes)
...             the values: int ``int64``, float ``float64``, bool one byte (0 or 1),
                str (UTF-8) and bytes a ``uint32`` length and the bytes; None nothing
======  ======  =====================================================================

Every read checks what it reads, since another process may have written anything.
"""

from __future__ import annotations

import builtins
import struct
import types
from typing import Any, Iterable, Iterator, Optional, Union

from ._filemap import CorruptError

Item = Union[int, float, bool, str, bytes, None]

_MAGIC = b"FMSL"
_VERSION = 1
_HEADER = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<B3xIQ")
_NONE, _INT, _FLOAT, _BOOL, _STR, _BYTES = range(6)
_LEN = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_FORMAT = {_NONE: "x", _INT: "q", _FLOAT: "d", _BOOL: "?"}


def _kind_of(value: Item) -> int:
    # bool before int: True is an int too.
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STR
    if isinstance(value, bytes):
        return _BYTES
    raise TypeError(
        f"a ShareableList holds int, float, bool, str, bytes and None, not {type(value).__name__}"
    )


def _encoded(value: Item, kind: int) -> bytes:
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _LEN.pack(len(data)) + data
    if isinstance(value, bytes):
        return _LEN.pack(len(value)) + value
    if kind == _BOOL:
        return b"\1" if value else b"\0"
    if kind == _INT:
        try:
            return _I64.pack(value)
        except struct.error:
            raise OverflowError(f"{value} does not fit in 64 bits") from None
    if kind == _FLOAT:
        return _F64.pack(value)
    return b""


def _room(encoded_len: int) -> int:
    return max(8, (encoded_len + 7) // 8 * 8)


class ShareableList:
    """A drop-in for ``multiprocessing.shared_memory.ShareableList`` over
    :class:`filemap.SharedMemory`.

    ``ShareableList(sequence)`` makes a list of those values in new shared memory (named
    ``name``, or a random name); ``ShareableList(name=name)`` attaches to one. Items are
    ``int`` (64 bits), ``float``, ``bool``, ``str``, ``bytes`` and ``None``. The length is
    fixed, and so is each item's room: 8 bytes, or a ``str``'s or ``bytes``' length
    rounded up to 8 (plus 4), so a longer string cannot replace it (``ValueError``). An
    item may change type within its room.

    Unlike the standard class, the memory and the name end with the last handle (close
    ``list.shm``), as for :class:`filemap.SharedMemory`, so nothing leaks after a crash and
    an attaching process that exits destroys nothing. Reads and writes of items are not
    atomic: guard a list that several processes write with a :class:`filemap.Mutex`. What
    is read is checked (``filemap.CorruptError`` for bytes that are not a valid list).
    """

    __class_getitem__: Any = classmethod(types.GenericAlias)

    def __init__(
        self,
        sequence: Optional[Iterable[Item]] = None,
        *,
        name: Optional[str] = None,
        root: Any = None,
    ) -> None:
        from . import SharedMemory

        if sequence is None:
            if name is None:
                raise ValueError("a ShareableList needs a sequence, or the name of one")
            self.shm = SharedMemory(name, root=root)
            try:
                self._n = self._check_header()
            except BaseException:
                self.shm.close()
                raise
            return
        values = builtins.list(sequence)
        kinds = [_kind_of(v) for v in values]
        encoded = [_encoded(v, k) for v, k in zip(values, kinds)]
        rooms = [_room(len(e)) for e in encoded]
        start = _HEADER.size + _ENTRY.size * len(values)
        self.shm = SharedMemory(name, create=True, size=start + sum(rooms), root=root)
        buf = self._buf()
        offset = start
        for i, (kind, data, room) in enumerate(zip(kinds, encoded, rooms)):
            _ENTRY.pack_into(buf, _HEADER.size + _ENTRY.size * i, kind, room, offset)
            buf[offset : offset + len(data)] = data
            offset += room
        # The header last: a list is only valid once its entries are written.
        _HEADER.pack_into(buf, 0, _MAGIC, _VERSION, len(values))
        self._n = len(values)

    def _buf(self) -> memoryview:
        buf = self.shm.buf
        if buf is None:
            raise ValueError("the ShareableList's memory is closed")
        return buf

    def _check_header(self) -> int:
        buf = self._buf()
        if len(buf) < _HEADER.size:
            raise CorruptError(f"{self.shm.name} is too small to be a ShareableList")
        magic, version, n = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC or version != _VERSION:
            raise CorruptError(f"{self.shm.name} is not a ShareableList of this version")
        if n > (len(buf) - _HEADER.size) // _ENTRY.size:
            raise CorruptError(f"{self.shm.name} claims {n} items that do not fit")
        return int(n)

    def _entry(self, position: int) -> "tuple[memoryview, int, int, int, int]":
        """The buffer, the position (from the front), the item's kind, room and offset."""
        if not isinstance(position, int):
            raise TypeError(
                f"ShareableList indices must be integers, not {type(position).__name__}"
            )
        if position < 0:
            position += self._n
        if not 0 <= position < self._n:
            raise IndexError("ShareableList index out of range")
        buf = self._buf()
        kind, room, offset = _ENTRY.unpack_from(buf, _HEADER.size + _ENTRY.size * position)
        start = _HEADER.size + _ENTRY.size * self._n
        if kind > _BYTES or room < 8 or room % 8 or offset < start or offset + room > len(buf):
            raise CorruptError(f"item {position} of {self.shm.name} is not valid")
        return buf, position, kind, room, offset

    def __getitem__(self, position: int) -> Item:
        buf, position, kind, room, offset = self._entry(position)
        if kind == _NONE:
            return None
        if kind == _INT:
            return int(_I64.unpack_from(buf, offset)[0])
        if kind == _FLOAT:
            return float(_F64.unpack_from(buf, offset)[0])
        if kind == _BOOL:
            b = buf[offset]
            if b > 1:
                raise CorruptError(f"item {position} of {self.shm.name} is not a bool")
            return b == 1
        (length,) = _LEN.unpack_from(buf, offset)
        if length > room - _LEN.size:
            raise CorruptError(f"item {position} of {self.shm.name} is longer than its room")
        data = bytes(buf[offset + _LEN.size : offset + _LEN.size + length])
        if kind == _BYTES:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptError(f"item {position} of {self.shm.name} is not UTF-8") from None

    def __setitem__(self, position: int, value: Item) -> None:
        buf, position, _, room, offset = self._entry(position)
        kind = _kind_of(value)
        data = _encoded(value, kind)
        if len(data) > room:
            raise ValueError(
                f"{value!r:.40} does not fit in item {position} of {self.shm.name}: its room "
                f"holds {room} bytes, a str or bytes {room - _LEN.size} of them"
            )
        buf[offset : offset + len(data)] = data
        _ENTRY.pack_into(buf, _HEADER.size + _ENTRY.size * position, kind, room, offset)

    def __len__(self) -> int:
        return self._n

    def close(self) -> None:
        """Closes the list's memory (``list.shm.close()``): the name and the memory go with
        the last handle anywhere."""
        self.shm.close()

    def __enter__(self) -> "ShareableList":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Item]:
        for i in range(self._n):
            yield self[i]

    def __reduce__(self) -> Any:
        return (_attach_shareable_list, (self.__class__, self.shm.name, self.shm._root))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({builtins.list(self)!r}, name={self.shm.name!r})"

    @property
    def format(self) -> str:
        """The items' layout, one code each as in ``struct``: ``q`` int, ``d`` float, ``?``
        bool, ``x`` None, and ``Ns`` for a str or bytes of room ``N``."""
        codes = []
        for i in range(self._n):
            _, _, kind, room, _ = self._entry(i)
            codes.append(_FORMAT.get(kind, f"{room - _LEN.size}s"))
        return "".join(codes)

    def count(self, value: Item) -> int:
        """How many items equal ``value``."""
        return sum(1 for item in self if item == value)

    def index(self, value: Item) -> int:
        """The position of the first item equal to ``value``; ``ValueError`` if none."""
        for i, item in enumerate(self):
            if item == value:
                return i
        raise ValueError(f"{value!r} is not in the ShareableList")


def _attach_shareable_list(cls: Any, name: str, root: Any) -> Any:
    """Unpickles a ``ShareableList``: attaches to its name."""
    return cls(name=name, root=root)
