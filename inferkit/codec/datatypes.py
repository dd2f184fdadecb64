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
from typing import Any

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
    out = ((bits + rounding) >> 16).astype("<u2")
    nan = np.isnan(f32)
    if nan.any():
        out[nan] = (bits[nan] >> 16).astype("<u2") | np.uint16(0x0040)  # quiet NaN, sign kept
    return out


def bf16_bits_to_float32(bits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Widen bfloat16 bits (uint16) to float32 exactly."""
    return (bits.astype("<u4") << 16).view("<f4")


def _as_bytes_items(arr: np.ndarray[Any, Any], tensor: str) -> tuple[list[bytes], int]:
    """Flatten a BYTES-like array into a list of bytes elements; returns (items, total data size)."""
    flat = arr.reshape(-1)
    if flat.dtype.kind == "S":
        # numpy's fixed-width bytes drop trailing NULs on element access; that is numpy's semantics.
        items = flat.tolist()
    elif flat.dtype.kind == "U":
        joined = "".join(flat.tolist())
        if joined.isascii():
            return list(map(str.encode, flat.tolist())), len(joined)
        items = [s.encode("utf-8") for s in flat.tolist()]
    else:
        items = flat.tolist()
    try:
        return items, len(b"".join(items))
    except TypeError:
        pass
    converted: list[bytes] = []
    for index, item in enumerate(items):
        if isinstance(item, bytes):
            converted.append(item)
        elif isinstance(item, str):
            converted.append(item.encode("utf-8"))
        elif isinstance(item, (bytearray, memoryview, np.bytes_)):
            converted.append(bytes(item))
        elif isinstance(item, (int, float, bool, np.generic)) and not isinstance(item, np.void):
            converted.append(str(item).encode("utf-8"))
        else:
            raise EncodeError(
                f"tensor {tensor!r}: BYTES element {index} is {type(item).__name__}; "
                "elements must be bytes or str (numbers are sent as their decimal text)"
            )
    return converted, sum(map(len, converted))


def serialize_bytes_tensor(arr: np.ndarray[Any, Any], *, tensor: str = "") -> bytes:
    """Pack a BYTES tensor (object array of bytes/str, or numpy S/U) into the length-prefixed wire format.

    Row-major element order; each element is a little-endian uint32 length followed by its bytes.
    """
    items, data_size = _as_bytes_items(np.asarray(arr), tensor)
    count = len(items)
    if count == 0:
        return b""
    lens = np.fromiter(map(len, items), dtype=np.int64, count=count)
    if lens.max(initial=0) > 0xFFFFFFFF:
        raise EncodeError(f"tensor {tensor!r}: a BYTES element is larger than 4 GiB, which the wire cannot carry")
    total = 4 * count + data_size
    ends = np.cumsum(lens + 4)
    header_pos = (ends - lens - 4)[:, None] + np.arange(4)
    out = np.empty(total, np.uint8)
    is_header = np.zeros(total, np.bool_)
    is_header[header_pos] = True
    out[header_pos] = lens.astype("<u4").view(np.uint8).reshape(count, 4)
    out[~is_header] = np.frombuffer(b"".join(items), np.uint8)
    return out.tobytes()


def deserialize_bytes_tensor(
    buf: bytes | bytearray | memoryview, count: int, *, tensor: str = "", as_str: bool = False
) -> np.ndarray[Any, Any]:
    """Unpack ``count`` length-prefixed elements from ``buf`` into a 1-D object array of bytes (or str).

    Raises DecodeError when a length runs past the end, when bytes are left over, or (``as_str``) when an
    element is not valid UTF-8.
    """
    data = bytes(buf) if not isinstance(buf, bytes) else buf
    size = len(data)
    if count < 0:
        raise DecodeError(f"tensor {tensor!r}: negative element count {count}")
    if count * 4 > size:
        raise DecodeError(
            f"tensor {tensor!r}: {count} BYTES elements need at least {count * 4} bytes of length prefixes, "
            f"got {size}"
        )
    out: list[Any] = [None] * count
    unpack = _U32.unpack_from
    offset = 0
    try:
        for i in range(count):
            (length,) = unpack(data, offset)
            offset += 4
            end = offset + length
            if end > size:
                raise DecodeError(
                    f"tensor {tensor!r}: BYTES element {i} declares {length} bytes but only "
                    f"{size - offset} remain"
                )
            out[i] = data[offset:end]
            offset = end
    except struct.error as exc:
        raise DecodeError(f"tensor {tensor!r}: BYTES data ends inside a length prefix at offset {offset}") from exc
    if offset != size:
        raise DecodeError(
            f"tensor {tensor!r}: {size - offset} bytes left over after {count} BYTES elements "
            "(shape and data disagree)"
        )
    if as_str:
        try:
            out = [b.decode("utf-8") for b in out]
        except UnicodeDecodeError as exc:
            raise DecodeError(f"tensor {tensor!r}: BYTES element is not valid UTF-8; read it as bytes") from exc
    result = np.empty(count, dtype=object)
    result[:] = out
    return result
