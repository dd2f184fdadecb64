"""System shared memory regions for tensor data (Triton's ``system_shared_memory`` extension).

Owns: :class:`SharedMemoryRegion` (create or attach a POSIX shared memory object, write arrays into it, read
zero-copy numpy views out of it, close and unlink it), the process-wide record of the regions this process
created, and the cleanup that unlinks them: on ``close()``/``unlink()``, on leaving a ``with`` block, and at
interpreter exit (``atexit``). A region this process did not create (``SharedMemoryRegion.attach``) is never
unlinked by it. Must not import: requests, urllib3, aiohttp, grpc, protobuf (numpy and the standard library only).

When client and server run on the same host, a large tensor does not need to travel through a socket at all: the
client writes it into a region, registers the region with the server once
(``client.register_system_shared_memory(region.name, region.key, region.byte_size)``), and sends a request whose
input only names the region (``InferInput.set_shared_memory``). Outputs work the same way in the other direction
(``InferRequestedOutput.set_shared_memory``): the server writes them into the region and the reply carries no data.

Example:
    >>> with SharedMemoryRegion(2 * 64) as inputs, SharedMemoryRegion(64) as outputs:
    ...     inputs.set([a, b])                                   # a, b: (1, 16) INT32 arrays, 64 bytes each
    ...     client.register_system_shared_memory(inputs.name, inputs.key, inputs.byte_size)
    ...     client.register_system_shared_memory(outputs.name, outputs.key, outputs.byte_size)
    ...     x0 = InferInput("INPUT0", [1, 16], "INT32").set_shared_memory(inputs.name, 64)
    ...     x1 = InferInput("INPUT1", [1, 16], "INT32").set_shared_memory(inputs.name, 64, offset=64)
    ...     out = InferRequestedOutput("OUTPUT0").set_shared_memory(outputs.name, 64)
    ...     client.infer(InferRequest("add_sub", [x0, x1], outputs=[out]))
    ...     result = outputs.as_numpy("INT32", [1, 16])          # a view of the region: copy it to keep it
    ...     client.unregister_system_shared_memory(inputs.name)
    ...     client.unregister_system_shared_memory(outputs.name)

Why not ``multiprocessing.shared_memory.SharedMemory``: before Python 3.13 it registers every segment it opens,
including segments created by another process, with the ``multiprocessing`` resource tracker (a helper process
it starts on first use), and that tracker unlinks them when this process exits, pulling a region out from under
the process that owns it. ``track=False`` (3.13+) turns that off. This module instead calls ``shm_open`` /
``shm_unlink`` (CPython's ``_posixshmem``, the same functions ``SharedMemory`` uses) and ``mmap`` itself, so no
tracker process is started on any version and exactly the regions this process created are unlinked. Where
``_posixshmem`` is missing it falls back to ``SharedMemory`` and unregisters each segment from the tracker
(``track=False`` on 3.13+), with the same effect.

Lifetime rules:

* A view returned by :meth:`SharedMemoryRegion.as_numpy` keeps the mapping alive: closing the region while such a
  view exists only drops the region's own reference (the memory is unmapped when the last view is freed), so a view
  can never point at unmapped memory. Unlinking removes the name; existing mappings (the server's included) stay
  valid until they are closed.
* The ``atexit`` cleanup runs on a normal exit, ``sys.exit`` and an uncaught exception, but not on ``SIGKILL`` or a
  signal without a handler (e.g. ``SIGTERM`` by default): a long-running service should use ``with`` blocks, or call
  :func:`unlink_all` from its own shutdown handler. A forked child never unlinks its parent's regions.
"""

from __future__ import annotations

import atexit
import math
import mmap
import os
import secrets
import struct
import sys
import threading
from typing import Any, Sequence, Union

import numpy as np

from inferkit.codec.datatypes import (
    DATATYPES,
    bfloat16_dtype,
    check_datatype,
    datatype_to_dtype,
    dtype_to_datatype,
    serialize_bytes_tensor,
    to_wire_array,
)
from inferkit.codec.tensors import InferInput, InferRequestedOutput
from inferkit.errors import DecodeError, EncodeError

try:  # CPython on every POSIX platform; absent on Windows and some other interpreters
    import _posixshmem  # type: ignore[import-not-found,unused-ignore]  # private CPython module, no stubs
except ImportError:  # pragma: no cover - exercised only where CPython's module is missing
    _posixshmem = None

__all__ = ["SharedMemoryRegion", "SharedMemoryError", "unlink_all", "owned_keys", "KEY_PREFIX"]

#: Prefix of generated keys, so stray regions are easy to recognise (``ls /dev/shm/inferkit_*`` on Linux).
KEY_PREFIX = "/inferkit_"
_U32 = struct.Struct("<I")


class SharedMemoryError(EncodeError):
    """A shared memory region could not be created, opened, written or read as asked (an ``EncodeError``)."""


# -- the record of regions this process created -----------------------------------------------------------------
# key -> pid of the creator. Keys, not region objects: a region dropped without close() is still unlinked at exit,
# and a forked child (another pid) leaves its parent's regions alone.
_owned: dict[str, int] = {}
_owned_lock = threading.Lock()


def owned_keys() -> list[str]:
    """Keys of the regions this process created and has not unlinked yet."""
    pid = os.getpid()
    with _owned_lock:
        return [key for key, owner in _owned.items() if owner == pid]


def unlink_all() -> list[str]:
    """Unlink every region this process created and has not unlinked yet; returns their keys.

    Runs automatically at interpreter exit. Mappings stay valid until closed; only the names go away.
    """
    pid = os.getpid()
    with _owned_lock:
        keys = [key for key, owner in _owned.items() if owner == pid]
        for key in list(_owned):
            del _owned[key]  # a forked child also forgets its parent's keys, without touching them
    for key in keys:
        _unlink_key(key)
    return keys


atexit.register(unlink_all)


def _unlink_key(key: str) -> bool:
    try:
        if _posixshmem is not None:
            _posixshmem.shm_unlink(key)
        else:  # pragma: no cover
            from multiprocessing import shared_memory  # noqa: PLC0415

            segment = shared_memory.SharedMemory(name=key.lstrip("/"))
            _untrack(segment)
            segment.close()
            segment.unlink()
    except FileNotFoundError:
        return False
    return True


def _untrack(segment: Any) -> None:  # pragma: no cover - fallback path only
    """Take a ``SharedMemory`` segment off the resource tracker, which would unlink it at exit (Python < 3.13)."""
    if sys.version_info >= (3, 13):
        return
    from multiprocessing import resource_tracker  # noqa: PLC0415

    try:
        resource_tracker.unregister(segment._name, "shared_memory")
    except Exception:  # noqa: BLE001 - best effort: the tracker may not be running
        pass


def _normalise_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip("/"):
        raise SharedMemoryError(f"shared memory key must be a non-empty string like '/my_region', got {key!r}")
    key = key if key.startswith("/") else "/" + key
    if "/" in key[1:] or "\0" in key or len(key) > 255:
        raise SharedMemoryError(
            f"shared memory key {key!r} is not a valid POSIX name: one leading '/', no other '/', at most 255 chars"
        )
    return key


def _open(key: str, byte_size: int | None, create: bool) -> tuple[mmap.mmap, int]:
    """Open (or exclusively create) ``key`` and map it; returns (mapping, mapped size)."""
    if _posixshmem is None:  # pragma: no cover
        return _open_fallback(key, byte_size, create)
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = _posixshmem.shm_open(key, flags, mode=0o600)
    except FileExistsError as exc:
        raise SharedMemoryError(
            f"shared memory key {key!r} already exists; choose another key, or attach to it with "
            "SharedMemoryRegion.attach()"
        ) from exc
    except FileNotFoundError as exc:
        raise SharedMemoryError(f"no shared memory region with key {key!r} exists on this host") from exc
    except OSError as exc:
        raise SharedMemoryError(f"cannot open shared memory key {key!r}: {exc}") from exc
    try:
        if create:
            assert byte_size is not None
            os.ftruncate(fd, byte_size)
            size = byte_size
        else:
            size = os.fstat(fd).st_size
            if byte_size is not None:
                if byte_size > size:
                    raise SharedMemoryError(
                        f"shared memory region {key!r} has {size} bytes, fewer than the {byte_size} asked for"
                    )
                size = byte_size
            if size == 0:
                raise SharedMemoryError(f"shared memory region {key!r} is empty (0 bytes)")
        return mmap.mmap(fd, size), size
    except BaseException:
        if create:
            _posixshmem.shm_unlink(key)
        raise
    finally:
        os.close(fd)


def _open_fallback(key: str, byte_size: int | None, create: bool) -> tuple[Any, int]:  # pragma: no cover
    from multiprocessing import shared_memory  # noqa: PLC0415

    kwargs: dict[str, Any] = {"track": False} if sys.version_info >= (3, 13) else {}
    try:
        segment = shared_memory.SharedMemory(name=key.lstrip("/"), create=create, size=byte_size or 0, **kwargs)
    except FileExistsError as exc:
        raise SharedMemoryError(f"shared memory key {key!r} already exists") from exc
    except FileNotFoundError as exc:
        raise SharedMemoryError(f"no shared memory region with key {key!r} exists on this host") from exc
    _untrack(segment)
    return segment, byte_size if byte_size is not None else segment.size


ArrayLike = Union[np.ndarray, Sequence[np.ndarray]]


class SharedMemoryRegion:
    """A POSIX shared memory region to exchange tensors with a server on the same host.

    Creating one makes a new shared memory object of ``byte_size`` bytes (zero-filled) and maps it; this
    process then owns it and unlinks it on :meth:`unlink`, on leaving a ``with`` block, or at exit.
    Use :meth:`attach` to map a region that another process created (it is never unlinked by this one).

    Args:
        byte_size: Size in bytes (> 0).
        name: The name to register the region under with the server (default: the key without its ``/``).
        key: The POSIX shared memory key, e.g. ``"/my_region"`` (default: ``/inferkit_<random>``). Creating a key
            that already exists raises :class:`SharedMemoryError`.

    Attributes:
        name: Registration name.
        key: POSIX key (with its leading ``/``).
        byte_size: Mapped size in bytes.
        owner: Whether this process created the region (and so unlinks it).
    """

    def __init__(self, byte_size: int, name: str | None = None, key: str | None = None) -> None:
        if isinstance(byte_size, bool) or not isinstance(byte_size, (int, np.integer)) or byte_size <= 0:
            raise SharedMemoryError(f"shared memory region byte_size must be a positive integer, got {byte_size!r}")
        key = _normalise_key(key) if key is not None else KEY_PREFIX + secrets.token_hex(8)
        self._setup(key, name, int(byte_size), create=True)

    @classmethod
    def attach(cls, key: str, byte_size: int | None = None, name: str | None = None) -> SharedMemoryRegion:
        """Map an existing region (created by another process or object); it is never unlinked by this process.

        Args:
            key: Its POSIX key.
            byte_size: Map only the first ``byte_size`` bytes (default: the whole object).
            name: Registration name (default: the key without its ``/``).
        """
        region = cls.__new__(cls)
        region._setup(_normalise_key(key), name, byte_size, create=False)
        return region

    def _setup(self, key: str, name: str | None, byte_size: int | None, *, create: bool) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise SharedMemoryError(f"shared memory region name must be a non-empty string, got {name!r}")
        self._map: Any = None
        self._buf: memoryview | None = None
        mapping, size = _open(key, byte_size, create)
        self.key = key
        self.name = name or key.lstrip("/")
        self.byte_size = size
        self.owner = create
        self._pid = os.getpid()
        self._map = mapping
        self._buf = memoryview(mapping.buf if hasattr(mapping, "buf") else mapping)
        if create:
            with _owned_lock:
                _owned[key] = self._pid

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the region can no longer be read or written through this object)."""
        return self._buf is None

    @property
    def buffer(self) -> memoryview:
        """The whole mapping as a writable byte memoryview."""
        if self._buf is None:
            raise SharedMemoryError(f"shared memory region {self.name!r} ({self.key}) is closed")
        return self._buf

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("owner" if self.owner else "attached")
        return f"SharedMemoryRegion(name={self.name!r}, key={self.key!r}, byte_size={self.byte_size}, {state})"

    # -- writing ----------------------------------------------------------------------------------------------
    def set(self, arrays: ArrayLike, offset: int = 0) -> list[tuple[int, int]]:
        """Write arrays one after another into the region, starting at ``offset``.

        Numeric arrays are written in wire layout (little-endian, row-major; BF16 as 2-byte values); BYTES
        arrays (object, ``S`` or ``U``) in the length-prefixed wire format.

        Args:
            arrays: One array or a sequence of arrays.
            offset: Byte offset of the first array.

        Returns:
            ``(offset, byte_size)`` of each array, for ``InferInput.set_shared_memory``.
        """
        buf = self.buffer
        items = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
        pos = self._check_offset(offset)
        placed: list[tuple[int, int]] = []
        for index, arr in enumerate(items):
            if not isinstance(arr, np.ndarray):
                raise SharedMemoryError(
                    f"shared memory region {self.name!r}: item {index} is a {type(arr).__name__}, not a numpy array"
                )
            datatype = dtype_to_datatype(arr.dtype)
            if datatype == "BYTES":
                wire: Any = serialize_bytes_tensor(arr, tensor=f"item {index}")
            else:
                wire = to_wire_array(arr, datatype, tensor=f"item {index}")
            data = memoryview(wire).cast("B") if arr.size else memoryview(b"")
            end = pos + data.nbytes
            if end > self.byte_size:
                raise SharedMemoryError(
                    f"shared memory region {self.name!r}: item {index} ({data.nbytes} bytes at offset {pos}) does "
                    f"not fit in its {self.byte_size} bytes; create a larger region"
                )
            buf[pos:end] = data
            placed.append((pos, data.nbytes))
            pos = end
        return placed

    # -- reading ----------------------------------------------------------------------------------------------
    def as_numpy(
        self, datatype: Any, shape: Sequence[int], offset: int = 0, byte_size: int | None = None
    ) -> np.ndarray[Any, Any]:
        """A tensor stored in the region, as a numpy array.

        Numeric datatypes give a zero-copy, writable view of the region (copy it to keep the values past the next
        request that writes there); BYTES is decoded into a new object array (its elements are variable-sized).
        The view keeps the mapping alive even after :meth:`close`.

        Args:
            datatype: Protocol datatype (``"FP32"``...) or a numpy dtype (``np.float32``).
            shape: The tensor's shape (e.g. the output's ``shape`` from the reply).
            offset: Byte offset of the tensor in the region.
            byte_size: For BYTES, the tensor's byte size (default: found from the length prefixes).
        """
        buf = self.buffer
        if not isinstance(datatype, str):
            datatype = dtype_to_datatype(datatype)
        datatype = check_datatype(datatype)
        dims = [int(d) for d in shape]
        if any(d < 0 for d in dims):
            raise SharedMemoryError(f"shared memory region {self.name!r}: shape {dims} has a negative dimension")
        count = math.prod(dims)
        pos = self._check_offset(offset)
        item = DATATYPES[datatype]
        if item is None:
            return self._bytes_at(buf, pos, count, byte_size).reshape(dims)
        end = pos + count * item
        if end > self.byte_size:
            raise SharedMemoryError(
                f"shared memory region {self.name!r}: a {datatype} tensor of shape {dims} ({count * item} bytes) at "
                f"offset {pos} runs past the region's {self.byte_size} bytes"
            )
        # np.frombuffer (not np.ndarray(buffer=...), which keeps no buffer export) holds the mapping exported, so
        # mmap.close() refuses to unmap memory a view still uses.
        if datatype == "BF16":
            return np.frombuffer(self._map, np.dtype("<u2"), count, pos).reshape(dims).view(bfloat16_dtype())
        return np.frombuffer(self._map, datatype_to_dtype(datatype), count, pos).reshape(dims)

    def _bytes_at(self, buf: memoryview, pos: int, count: int, byte_size: int | None) -> np.ndarray[Any, Any]:
        limit = self.byte_size if byte_size is None else min(self.byte_size, pos + byte_size)
        out = np.empty(count, dtype=object)
        for i in range(count):
            if pos + 4 > limit:
                raise DecodeError(
                    f"shared memory region {self.name!r}: BYTES element {i} of {count} runs past the end of the data"
                )
            (length,) = _U32.unpack_from(buf, pos)
            pos += 4
            if pos + length > limit:
                raise DecodeError(
                    f"shared memory region {self.name!r}: BYTES element {i} ({length} bytes) runs past the end"
                )
            out[i] = bytes(buf[pos : pos + length])
            pos += length
        return out

    def _check_offset(self, offset: int) -> int:
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or not 0 <= offset <= self.byte_size:
            raise SharedMemoryError(
                f"shared memory region {self.name!r}: offset must be an integer in [0, {self.byte_size}], "
                f"got {offset!r}"
            )
        return int(offset)

    # -- tensors placed in the region -------------------------------------------------------------------------
    def infer_input(
        self, name: str, array: np.ndarray[Any, Any], offset: int = 0, datatype: str | None = None
    ) -> InferInput:
        """Write ``array`` at ``offset`` and return an :class:`InferInput` that points at it (no data of its own)."""
        datatype = check_datatype(datatype) if datatype is not None else dtype_to_datatype(array.dtype)
        ((pos, size),) = self.set([array], offset)
        return InferInput(name, list(array.shape), datatype).set_shared_memory(self.name, size, offset=pos)

    def requested_output(self, name: str, byte_size: int | None = None, offset: int = 0) -> InferRequestedOutput:
        """An :class:`InferRequestedOutput` the server writes into this region (default: everything from offset)."""
        pos = self._check_offset(offset)
        size = self.byte_size - pos if byte_size is None else byte_size
        return InferRequestedOutput(name).set_shared_memory(self.name, size, offset=pos)

    # -- cleanup ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the region from this object (idempotent). Live ``as_numpy`` views keep the memory mapped."""
        buf, self._buf = self._buf, None
        mapping, self._map = self._map, None
        # Views exported by as_numpy() (or taken from ``buffer``) may still use the mapping: then neither the
        # memoryview nor the map can be released now, and the memory is unmapped when the last view is freed.
        # Python refuses to unmap exported memory, so a view can never point at unmapped pages.
        if buf is not None:
            try:
                buf.release()
            except BufferError:
                pass
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                pass

    def unlink(self) -> bool:
        """Remove the region's key from the system (owner only; idempotent). Returns whether it was removed.

        Mappings stay valid until closed; the server keeps its own until the region is unregistered.
        Raises SharedMemoryError for a region this process did not create.
        """
        if not self.owner:
            raise SharedMemoryError(
                f"shared memory region {self.name!r} ({self.key}) was attached, not created, by this process; "
                "only its creator unlinks it"
            )
        with _owned_lock:
            mine = _owned.get(self.key) == os.getpid()
            if mine:
                del _owned[self.key]
        return _unlink_key(self.key) if mine else False

    def destroy(self) -> None:
        """Close, and unlink when this process created the region."""
        self.close()
        if self.owner and self._pid == os.getpid():
            self.unlink()

    def __enter__(self) -> SharedMemoryRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
