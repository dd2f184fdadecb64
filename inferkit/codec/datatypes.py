"""Datatypes of the Open Inference Protocol and their numpy forms; BYTES and BF16 packing.

Owns: the datatype table (name, numpy dtype, element size), numpy dtype -> datatype inference, array
normalisation for the wire (little-endian, C-contiguous), the BYTES wire format (each element a 4-byte
little-endian length then its bytes) and BF16 conversion.
Must not import: requests, urllib3, aiohttp, grpc, protobuf. ``ml_dtypes`` is imported lazily, only for BF16.

Everything here is vectorised with numpy or runs C-level loops (``bytes.join``, ``map``); the only per-element
Python loop is BYTES decoding, whose element boundaries depend on each previous length.
"""

from __future__ import annotations

import struct
from typing import Any, cast

import numpy as np

from inferkit.errors import DecodeError, EncodeError

__all__ = [
    "DATATYPES",
    "datatype_to_dtype",
    "dtype_to_datatype",
    "element_size",
    "to_wire_array",
    "serialize_bytes_tensor",
    "deserialize_bytes_tensor",
    "decode_utf8",
    "float32_to_bf16_bits",
    "bf16_bits_to_float32",
    "bfloat16_dtype",
    "check_datatype",
]

#: datatype name -> numpy dtype (little-endian); BF16 and BYTES are special (None here).
_NUMERIC: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

#: Every datatype the protocol defines, with its element size in bytes (None: variable, BYTES).
DATATYPES: dict[str, int | None] = {**{k: v.itemsize for k, v in _NUMERIC.items()}, "BF16": 2, "BYTES": None}

_KIND_TO_DATATYPE = {("b", 1): "BOOL"}
for _name, _dt in _NUMERIC.items():
    _KIND_TO_DATATYPE.setdefault((_dt.kind, _dt.itemsize), _name)

_U32 = struct.Struct("<I")

_BF16_DTYPE: np.dtype[Any] | None = None


def bfloat16_dtype() -> np.dtype[Any]:
    """The numpy dtype for BF16 (from ``ml_dtypes``). Raises EncodeError naming the extra when missing."""
    global _BF16_DTYPE
    if _BF16_DTYPE is None:
        try:
            import ml_dtypes  # noqa: PLC0415 - optional dependency, loaded on first BF16 use
        except ImportError as exc:
            raise EncodeError(
                "BF16 tensors as numpy need the 'ml_dtypes' package: pip install 'inferkit[bf16]' "
                "(or pass float32 arrays to set_data_from_numpy and read with as_numpy(dtype=np.float32))"
            ) from exc
        _BF16_DTYPE = np.dtype(ml_dtypes.bfloat16)
    return _BF16_DTYPE


def check_datatype(datatype: str) -> str:
    """Return the canonical (upper-case) datatype name, or raise EncodeError listing the valid ones."""
    canonical = datatype.upper() if isinstance(datatype, str) else datatype
    if canonical not in DATATYPES:
        raise EncodeError(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
    return str(canonical)


def datatype_to_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that holds ``datatype`` (object for BYTES, ml_dtypes.bfloat16 for BF16)."""
    datatype = check_datatype(datatype)
    if datatype == "BYTES":
        return np.dtype(object)
    if datatype == "BF16":
        return bfloat16_dtype()
    return _NUMERIC[datatype]


def dtype_to_datatype(dtype: Any) -> str:
    """The protocol datatype for a numpy dtype (bytes/str/object -> BYTES, bfloat16 -> BF16)."""
    dt = np.dtype(dtype)
    if dt.kind in ("O", "S", "U", "T"):
        return "BYTES"
    if dt.name == "bfloat16":
        return "BF16"
    name = _KIND_TO_DATATYPE.get((dt.kind, dt.itemsize))
    if name is None:
        raise EncodeError(f"numpy dtype {dt} has no inference datatype; convert the array first")
    return name


def element_size(datatype: str) -> int | None:
    """Bytes per element, or None for BYTES."""
    return DATATYPES[check_datatype(datatype)]


# np.ascontiguousarray would turn a 0-d array into shape (1,); np.asarray(order="C") keeps the shape.
def to_wire_array(arr: np.ndarray[Any, Any], datatype: str, *, tensor: str = "") -> np.ndarray[Any, Any]:
    """Convert a numeric array to its wire layout: the datatype's little-endian dtype, C-contiguous.

    Returns ``arr`` itself when it already has that layout (no copy); otherwise one converted copy.
    For BF16, float32/float64 input is rounded to nearest-even bfloat16 without needing ml_dtypes.
    """
    if datatype == "BF16":
        if arr.dtype.name == "bfloat16":
            # As uint16 bits: Python's buffer protocol cannot export ml_dtypes' bfloat16 ('E'), so a
            # bfloat16 array could not be framed into a body zero-copy.
            return np.asarray(arr, order="C").view(np.uint16).astype("<u2", copy=False)
        if arr.dtype.kind == "f":
            return float32_to_bf16_bits(arr)
        raise EncodeError(f"tensor {tensor!r}: BF16 needs a float32 or ml_dtypes.bfloat16 array, got {arr.dtype}")
    target = _NUMERIC[datatype]
    if arr.dtype == target:
        # dtype equality ignores '=' vs '<' on little-endian hosts, which is what we want.
        return arr if arr.flags.c_contiguous else np.asarray(arr, order="C")
    if arr.dtype.kind == target.kind and arr.dtype.itemsize == target.itemsize:
        return np.asarray(arr, dtype=target, order="C")  # byte-order swap only
    raise EncodeError(
        f"tensor {tensor!r}: datatype {datatype} needs numpy dtype {target.name}, got {arr.dtype}; "
        f"convert with arr.astype(np.{target.name}) or declare the matching datatype"
    )


def float32_to_bf16_bits(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Round float arrays to bfloat16 (nearest-even, NaN kept), returned as little-endian uint16 bits."""
    f32 = np.asarray(arr, dtype="<f4", order="C")
    bits = f32.view("<u4")
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = np.asarray((bits + rounding) >> 16, dtype="<u2").reshape(f32.shape)  # 0-d math gives scalars
    nan = np.isnan(f32)
    if nan.any():
        quiet = np.asarray(bits >> 16, dtype="<u2") | np.uint16(0x0040)  # quiet NaN, sign kept
        out = np.where(nan, quiet, out).astype("<u2", copy=False).reshape(f32.shape)
    return out


def bf16_bits_to_float32(bits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Widen bfloat16 bits (uint16) to float32 exactly."""
    wide = bits.astype("<u4")
    wide <<= np.uint32(16)  # numpy < 2 gives a 0-d ``wide << 16`` an int64 scalar (value-based casting)
    return wide.view("<f4")


# -- BYTES ------------------------------------------------------------------------------------------------------
# Encoding joins each element after its 4-byte prefix in one C-level ``join`` over cached prefix objects, a few
# thousand elements at a time (ASCII str through one latin-1 str join: no per-element ``encode``). Decoding finds
# the element offsets (each depends on the previous length) with many walkers advancing in lock-step over numpy
# arrays (see ``_chain_offsets``) and unpacks every element with one ``struct`` format built by numpy. Small tensors
# take the plain loop, which is faster below a few hundred elements.

_VECTOR_MIN = 8192  # elements; below this the plain decoding loop is as fast (measured: bytes_bench.py)


def _format_tokens(lens: np.ndarray[Any, Any], prefix: bytes, suffix: bytes) -> bytes:
    """``prefix + str(n) + suffix`` for every n in ``lens``, concatenated, built with numpy (no Python loop)."""
    count = len(lens)
    digits = len(str(int(lens.max()))) if count else 1
    width = len(prefix) + digits + len(suffix)
    table = np.zeros((count, width), np.uint8)
    table[:, : len(prefix)] = np.frombuffer(prefix, np.uint8)
    table[:, width - len(suffix) :] = np.frombuffer(suffix, np.uint8)
    for k in range(digits):
        column = (lens // 10**k) % 10 + 48
        if k:
            column[lens < 10**k] = 0  # no leading zeros: NUL, removed below
        table[:, len(prefix) + digits - 1 - k] = column
    return table.tobytes().replace(b"\0", b"")


def _as_bytes_items(items: list[Any], tensor: str, first: int) -> list[bytes]:
    """Convert elements to bytes (str as UTF-8, numbers as decimal text); ``first`` is the index of items[0]."""
    converted: list[bytes] = []
    for index, item in enumerate(items, first):
        if isinstance(item, bytes):
            converted.append(item)
        elif isinstance(item, str):
            converted.append(item.encode("utf-8"))
        elif isinstance(item, (bytearray, memoryview)):
            converted.append(bytes(item))
        elif isinstance(item, (int, float, bool, np.generic)) and not isinstance(item, np.void):
            converted.append(str(item).encode("utf-8"))
        else:
            raise EncodeError(
                f"tensor {tensor!r}: BYTES element {index} is {type(item).__name__}; "
                "elements must be bytes or str (numbers are sent as their decimal text)"
            )
    return converted


class _Prefixes(dict[int, Any]):
    """Element length -> its 4-byte little-endian prefix (as bytes, or as latin-1 str); short lengths are kept."""

    def __init__(self, as_str: bool) -> None:
        super().__init__()
        self.as_str = as_str

    def __missing__(self, length: int) -> bytes | str:
        prefix = _U32.pack(length)  # struct.error above 4 GiB
        value = prefix.decode("latin-1") if self.as_str else prefix
        if length < 4096:
            self[length] = value
        return value


_PREFIX = _Prefixes(as_str=False)
_PREFIX_STR = _Prefixes(as_str=True)


def _interleave(items: list[Any], lengths: Any, prefixes: _Prefixes, empty: Any) -> Any:
    """``prefix(len(e)) + e`` for every element, joined: one C-level join over cached prefix objects."""
    parts = [empty] * (2 * len(items))
    parts[0::2] = map(prefixes.__getitem__, lengths)
    parts[1::2] = items
    return empty.join(parts)


def _pack_chunk(items: list[Any], tensor: str, first: int) -> bytes:
    """The wire form of a list of elements (``first``: the index of items[0], for errors)."""
    try:
        try:
            if items and type(items[0]) is str:
                if "".join(items).isascii():  # TypeError unless all are str
                    # One str whose prefix characters are latin-1 code points, encoded once.
                    return cast(str, _interleave(items, map(len, items), _PREFIX_STR, "")).encode("latin-1")
                items = list(map(str.encode, items))
            lengths = list(map(len, items))
            wire = cast(bytes, _interleave(items, lengths, _PREFIX, b""))
            if len(wire) == 4 * len(items) + sum(lengths):  # len() was the byte count (not so for some views)
                return wire
        except TypeError:  # str among bytes, numbers, other objects
            pass
        items = _as_bytes_items(items, tensor, first)
        return cast(bytes, _interleave(items, map(len, items), _PREFIX, b""))
    except struct.error:
        raise EncodeError(
            f"tensor {tensor!r}: a BYTES element is larger than 4 GiB, which the wire cannot carry"
        ) from None


_CHUNK = 1024  # elements per join: its temporaries stay small and in cache (bytes.join holds an 80-byte buffer
# record per part: 2 x 4096 parts would be 650 KB; 1024 is as fast, within 5%: benchmarks/bytes_bench.py)


def serialize_bytes_tensor(arr: np.ndarray[Any, Any], *, tensor: str = "") -> bytes | bytearray:
    """Pack a BYTES tensor (object array of bytes/str, or numpy S/U) into the length-prefixed wire format.

    Row-major element order; each element is a little-endian uint32 length followed by its bytes. Above
    :data:`_CHUNK` elements the result is a ``bytearray`` (chunks appended in place: no second copy of the payload).
    """
    arr = np.asarray(arr)
    flat = arr.reshape(-1)
    count = flat.size
    if count <= _CHUNK:
        return _pack_chunk(flat.tolist(), tensor, 0)
    out = bytearray()
    for start in range(0, count, _CHUNK):
        out += _pack_chunk(flat[start : start + _CHUNK].tolist(), tensor, start)
    return out


def _chain_offsets(data: Any, size: int, count: int) -> np.ndarray[Any, Any] | None:
    """Offsets of the ``count`` length prefixes in ``data``, found without a per-element Python loop.

    Each offset depends on the previous length, so the walk is sequential. The buffer is cut into K blocks and a
    walker starts at each block's first byte, all advancing in lock-step with numpy (``next = pos + 4 +
    u32(pos)``). Walker 0 starts at offset 0, so its path is true; a walker that starts mid-element reads
    garbage, but walks that pass through a common position coincide from there on. So block j's path is true
    from the point where the true chain enters the block, if the walker visited that point; otherwise that block
    is walked again from the true entry. Returns None when the chain does not end exactly at ``size`` after
    ``count`` elements (the caller then reports the precise error).
    """
    last = size - 4  # the last position where a length prefix can be read
    u32 = np.ndarray((last + 1,), "<u4", data, 0, (1,))  # the uint32 at every byte position, zero-copy
    blocks = max(2, count // (16 if count < 65536 else 32))
    bounds = (np.arange(blocks + 1, dtype=np.int64) * size) // blocks
    limit = bounds[1:]
    # Start each walker (but the first) where a length prefix is plausible: the first position in a small window
    # whose element ends inside the block and whose next prefix is readable. Inside text, the four bytes read
    # as a huge length, so walkers skip to a real prefix and couple with the true chain at once.
    window = min(24, int(limit[0] - bounds[0]))
    probe = bounds[:-1, None] + np.arange(window)
    step = probe + 4 + u32[np.minimum(probe, last)]
    plausible = (probe <= last) & (step < limit[:, None]) & (step <= last)
    plausible &= step + 4 + u32[np.minimum(step, last)] <= size
    cur = np.where(plausible.any(axis=1), probe[np.arange(blocks), np.argmax(plausible, axis=1)], bounds[:-1])
    cur[0] = 0
    # A walker stops at its last start inside the block (it parks there, so its row values repeat) once the next
    # step leaves the block or lands where no prefix can be read; its exit is that next step.
    stop_at = np.minimum(limit, last + 1)
    cur = np.minimum(cur, last)
    rows = [cur]
    while True:
        nxt = cur + 4
        nxt += u32[cur]
        go = nxt < stop_at
        if not go.any():
            break
        cur = np.where(go, nxt, cur)
        rows.append(cur)
    exits = cur + 4 + u32[cur]
    path = np.stack(rows)  # (steps, blocks)
    fresh = np.ones(path.shape, np.bool_)
    fresh[1:] = path[1:] != path[:-1]  # a parked walker repeats its last start
    path[~fresh] = -1
    entry = np.empty(blocks, np.int64)
    entry[0] = 0
    entry[1:] = exits[:-1]
    coupled = np.ones(blocks, np.bool_)
    coupled[1:] = (path[:, 1:] == entry[None, 1:]).any(axis=0)
    extra: list[int] = []
    unpack = _U32.unpack_from
    if not coupled.all():
        walked = np.zeros(blocks, np.bool_)
        true_exit = exits.copy()
        j = int(np.argmin(coupled))
        while j < blocks:
            e = int(true_exit[j - 1])
            if e < 0:
                return None
            entry[j] = e
            if not (path[:, j] == e).any():
                walked[j] = True
                hi = int(limit[j])
                while e < hi:
                    if e > last:
                        return None
                    extra.append(e)
                    e += 4 + unpack(data, e)[0]
                true_exit[j] = e
            if true_exit[j] != exits[j]:
                j += 1  # the next block's entry changed: check it explicitly
            else:
                later = np.flatnonzero(~coupled[j + 1 :])
                j = j + 1 + int(later[0]) if later.size else blocks
        if int(true_exit[-1]) != size:
            return None
        keep = (path >= entry[None, :]) & ~walked[None, :]
    else:
        if int(exits[-1]) != size:
            return None
        keep = path >= entry[None, :]
    offsets = path.T[keep.T]
    if extra:
        offsets = np.sort(np.concatenate([offsets, np.asarray(extra, np.int64)]))
    return offsets if len(offsets) == count else None


def _deserialize_loop(data: Any, size: int, count: int, tensor: str) -> list[bytes]:
    """The reference decoder: sequential, with a precise error for every inconsistency."""
    if isinstance(data, bytes):  # the tight loop; anything odd is reported by the careful one below
        out: list[Any] = [None] * count
        unpack = _U32.unpack_from
        end = 0
        try:
            for i in range(count):
                start = end + 4
                end = start + unpack(data, end)[0]
                out[i] = data[start:end]
        except struct.error:
            end = -1
        if end == size:
            return out
    out = [None] * count
    unpack = _U32.unpack_from
    offset = 0
    for i in range(count):
        if offset + 4 > size:
            raise DecodeError(
                f"tensor {tensor!r}: BYTES data ends inside the length prefix of element {i} at offset {offset}"
                f" ({count} elements expected)"
            )
        (length,) = unpack(data, offset)
        offset += 4
        end = offset + length
        if end > size:
            raise DecodeError(
                f"tensor {tensor!r}: BYTES element {i} declares {length} bytes but only {size - offset} remain"
            )
        out[i] = bytes(data[offset:end])
        offset = end
    if offset != size:
        raise DecodeError(
            f"tensor {tensor!r}: {size - offset} bytes left over after {count} BYTES elements (shape and data disagree)"
        )
    return out


def deserialize_bytes_tensor(
    buf: bytes | bytearray | memoryview, count: int, *, tensor: str = "", as_str: bool = False
) -> np.ndarray[Any, Any]:
    """Unpack ``count`` length-prefixed elements from ``buf`` into a 1-D object array of bytes (or str).

    Raises DecodeError when a length runs past the end, when bytes are left over, or (``as_str``) when an
    element is not valid UTF-8.
    """
    small = count < _VECTOR_MIN  # decoded by the plain loop, from bytes (one copy of a small buffer)
    data = buf if type(buf) is bytes else bytes(buf) if small else memoryview(buf).cast("B")
    size = len(data)
    if count < 0:
        raise DecodeError(f"tensor {tensor!r}: negative element count {count}")
    if count * 4 > size:
        raise DecodeError(
            f"tensor {tensor!r}: {count} BYTES elements need at least {count * 4} bytes of length prefixes, got {size}"
        )
    if count == 0:
        if size:
            raise DecodeError(f"tensor {tensor!r}: {size} bytes left over after 0 BYTES elements")
        return np.empty(0, dtype=object)
    items: Any = None
    if not small:
        first = _U32.unpack_from(data, 0)[0]
        if size == count * (4 + first) and (np.ndarray((count,), "<u4", data, 0, (4 + first,)) == first).all():
            # Every element has the same length: a strided view, converted to bytes objects in one call.
            items = np.ndarray((count,), f"V{first}", data, 4, (4 + first,)).astype(object) if first else [b""] * count
        else:
            offsets = _chain_offsets(data, size, count)
            if offsets is not None:
                lens = np.empty(count, np.int64)
                lens[:-1] = offsets[1:] - offsets[:-1] - 4
                lens[-1] = size - offsets[-1] - 4
                items = struct.Struct(b"<" + _format_tokens(lens, b"4x", b"s")).unpack_from(data)
    if items is None:
        items = _deserialize_loop(data, size, count, tensor)
    if as_str:
        items = decode_utf8(items, tensor)
    # np.array of a list of bytes/str is 1-D; at one element it costs half of np.empty + slice assignment
    return items if isinstance(items, np.ndarray) else np.array(items, dtype=object)


def decode_utf8(items: Any, tensor: str = "") -> list[Any]:
    """BYTES elements as ``str`` (UTF-8); elements that are ``str`` already are kept. DecodeError names the first
    element that is not valid UTF-8."""
    try:
        try:
            return list(map(bytes.decode, items))
        except TypeError:  # str among the elements (a tensor set from str data)
            return [x.decode() if isinstance(x, bytes) else x for x in items]
    except UnicodeDecodeError:
        for index, item in enumerate(items):
            if not isinstance(item, bytes):
                continue
            try:
                item.decode()
            except UnicodeDecodeError as exc:
                raise DecodeError(
                    f"tensor {tensor!r}: BYTES element {index} is not valid UTF-8 ({exc.reason} at byte "
                    f"{exc.start}); read it as bytes (as_str=False)"
                ) from exc
        raise
