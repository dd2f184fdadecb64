"""What describes a tensor besides its data, and the checks and conversions the tensor classes and wire codecs share.

Owns: parameter values and their validation, shapes and their sizes, the shared-memory parameters of a tensor,
:class:`InferRequestedOutput` (an output asked for by name), and turning JSON data into numpy arrays (numeric,
and BYTES flattened from nested lists). The tensors themselves are :mod:`inferkit.codec.tensors`.
Must not import: requests, urllib3, aiohttp, grpc, protobuf.
"""

from __future__ import annotations

import collections.abc
import math
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

from inferkit.codec.datatypes import (
    datatype_to_dtype,
    dtype_to_datatype,
)
from inferkit.errors import DecodeError, EncodeError

ParameterValue = Union[bool, int, float, str]
Buffer = Union[bytes, bytearray, memoryview]

#: Tensor parameters of Triton's system shared memory extension: the data is in a registered region, not the body.
SHM_REGION = "shared_memory_region"
SHM_BYTE_SIZE = "shared_memory_byte_size"
SHM_OFFSET = "shared_memory_offset"
_SHM_KEYS = (SHM_REGION, SHM_BYTE_SIZE, SHM_OFFSET)


def shared_memory_of(
    parameters: Mapping[str, Any], where: str, error: type[EncodeError] | type[DecodeError] = DecodeError
) -> tuple[str, int, int] | None:
    """``(region, byte_size, offset)`` when ``parameters`` place a tensor in shared memory, else None.

    Raises ``error`` when the parameters are present but malformed (a region without a byte size, a negative
    size or offset, a value of the wrong type).
    """
    region = parameters.get(SHM_REGION)
    if region is None:
        if SHM_BYTE_SIZE in parameters or SHM_OFFSET in parameters:
            raise error(f"{where}: {SHM_BYTE_SIZE}/{SHM_OFFSET} given without {SHM_REGION}")
        return None
    size = parameters.get(SHM_BYTE_SIZE)
    offset = parameters.get(SHM_OFFSET, 0)
    if not isinstance(region, str) or not region:
        raise error(f"{where}: {SHM_REGION} must be a non-empty string, got {region!r}")
    for key, value in ((SHM_BYTE_SIZE, size), (SHM_OFFSET, offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise error(f"{where}: {key} must be an integer >= 0 for shared memory region {region!r}, got {value!r}")
    return region, int(size), int(offset)  # type: ignore[arg-type]


def check_shm_registration(name: Any, key: Any, byte_size: Any, offset: Any = 0) -> tuple[str, str, int, int]:
    """Validate the arguments of ``register_system_shared_memory``; returns them normalised (key with its ``/``)."""
    if not isinstance(name, str) or not name:
        raise EncodeError(f"shared memory region name must be a non-empty string, got {name!r}")
    if not isinstance(key, str) or not key.strip("/"):
        raise EncodeError(f"shared memory region {name!r}: key must be a POSIX shm name like '/my_region', got {key!r}")
    for label, value in (("byte_size", byte_size), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise EncodeError(f"shared memory region {name!r}: {label} must be an integer >= 0, got {value!r}")
    return name, key if key.startswith("/") else "/" + key, int(byte_size), int(offset)


def _shm_parameters(region_name: str, byte_size: int, offset: int, where: str) -> dict[str, ParameterValue]:
    if not isinstance(region_name, str) or not region_name:
        raise EncodeError(f"{where}: shared memory region name must be a non-empty string, got {region_name!r}")
    for key, value in (("byte_size", byte_size), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise EncodeError(f"{where}: shared memory {key} must be an integer >= 0, got {value!r}")
    params: dict[str, ParameterValue] = {SHM_REGION: region_name, SHM_BYTE_SIZE: int(byte_size)}
    if offset:
        params[SHM_OFFSET] = int(offset)
    return params


def shape_size(shape: Sequence[int]) -> int:
    """Number of elements of a shape (1 for a 0-d tensor)."""
    return math.prod(shape)


_SCALAR_TYPES = frozenset({bool, int, float, str})


def check_shape(shape: Any, tensor: str, error: type[EncodeError] | type[DecodeError]) -> list[int]:
    """``shape`` as a new list of ints >= 0; raises ``error`` naming ``tensor`` and the problem otherwise."""
    # Fast path for the common case (a list of plain non-negative ints, as JSON decoding yields): on every
    # decoded tensor of every response, so it is worth skipping the generic checks below.
    if type(shape) is list and all(type(d) is int and d >= 0 for d in shape):
        return list(shape)
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        raise error(f"tensor {tensor!r}: shape must be a list of integers, got {shape!r}")
    dims = []
    for dim in shape:
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
            raise error(f"tensor {tensor!r}: shape {list(shape)!r} has a non-integer dimension {dim!r}")
        if dim < 0:
            raise error(
                f"tensor {tensor!r}: shape {list(shape)!r} has a negative dimension; "
                "-1 is only valid in model metadata, give the actual size"
            )
        dims.append(int(dim))
    return dims


def validate_parameters(
    parameters: Mapping[str, Any] | None, where: str, error: type[EncodeError] | type[DecodeError] = EncodeError
) -> dict[str, ParameterValue]:
    """Copy ``parameters`` into a plain dict, checking each value is bool, int, float or str."""
    if parameters is None:
        return {}
    if type(parameters) is dict and all(type(k) is str and type(v) in _SCALAR_TYPES for k, v in parameters.items()):
        return dict(parameters)  # the common case, without per-value isinstance chains
    if not isinstance(parameters, collections.abc.Mapping):
        raise error(f"{where}: parameters must be a mapping of str to bool/int/float/str, got {parameters!r}")
    out: dict[str, ParameterValue] = {}
    for key, value in parameters.items():
        if not isinstance(key, str):
            raise error(f"{where}: parameter name {key!r} is not a string")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (bool, int, float, str)):
            raise error(f"{where}: parameter {key!r} has a {type(value).__name__} value; use bool, int, float or str")
        out[key] = value
    return out


def dtype_to_datatype_or_none(dtype: np.dtype[Any]) -> str | None:
    try:
        return dtype_to_datatype(dtype)
    except EncodeError:
        return None


_JSON_KINDS = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}


def _numeric_json_to_numpy(
    data: Any, datatype: str, tensor: str, error: type[EncodeError] | type[DecodeError]
) -> np.ndarray[Any, Any]:
    """Convert JSON numbers to a flat array of ``datatype``, rejecting what would silently change value.

    numpy alone would parse strings ("1.5"), truncate 1.5 to 1 for integer types and accept 0/1 for BOOL; the
    protocol has none of that, so the values are parsed with numpy's own inference first and the kind checked.
    """
    target = datatype_to_dtype(datatype)
    try:
        parsed = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise error(f"tensor {tensor!r}: data is not a regular list of {datatype} values ({exc})") from exc
    if parsed.dtype == object and any(isinstance(v, (list, tuple)) for v in parsed.reshape(-1)):
        # numpy < 1.24 makes an object array of rows of different lengths instead of raising
        raise error(f"tensor {tensor!r}: data is not a regular list of {datatype} values (rows of different lengths)")
    if parsed.size == 0:
        return np.empty(0, dtype=target)
    kind = parsed.dtype.kind
    want = target.kind
    ok = kind == want or (want in "iu" and kind in "iu") or (want == "f" and kind in "iuf")
    if not ok and kind in "fO" and want in "iu":
        # Mixing int64 and uint64 values makes numpy infer float64 (or object beyond 64 bits): convert exactly to
        # the target (numpy raises for out-of-range ints), then make sure no fractional value was truncated.
        try:
            exact = np.asarray(data, dtype=target).reshape(-1)
        except (ValueError, TypeError, OverflowError) as exc:
            raise error(f"tensor {tensor!r}: data is not a list of {datatype} values ({exc})") from exc
        if kind == "O" or np.array_equal(exact.astype(np.float64), parsed.reshape(-1)):
            return exact
    if not ok:
        found = "strings" if kind in "US" else _JSON_KINDS.get(kind, f"{parsed.dtype} values")
        raise error(f"tensor {tensor!r}: {datatype} data must contain {_JSON_KINDS[want]}, found {found}")
    if want in "iu" and parsed.dtype != target:
        info = np.iinfo(target)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise error(f"tensor {tensor!r}: a value is out of range for {datatype} ([{info.min}, {info.max}])")
    return parsed.astype(target, copy=False).reshape(-1)


def _flatten_bytes(
    data: Sequence[Any], tensor: str, error: type[EncodeError] | type[DecodeError]
) -> np.ndarray[Any, Any]:
    out: list[bytes] = []
    stack: list[Iterator[Any]] = [iter(data)]
    depth = 0
    while stack:
        for item in stack[-1]:
            if isinstance(item, (list, tuple)):
                depth += 1
                if depth > 64:
                    raise error(f"tensor {tensor!r}: BYTES data is nested more than 64 levels")
                stack.append(iter(item))
                break
            if isinstance(item, str):
                out.append(item.encode("utf-8"))
            elif isinstance(item, bytes):
                out.append(item)
            else:
                raise error(f"tensor {tensor!r}: BYTES JSON data must be strings, found {type(item).__name__}")
        else:
            stack.pop()
            depth -= 1
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


class InferRequestedOutput:
    """An output the client asks for.

    Args:
        name: Output name.
        binary_data: Ask for the output as binary when the server supports it (REST).
        class_count: If > 0, ask for the top-k classification result (Triton ``classification`` extension):
            a BYTES output of ``"score:index[:label]"`` strings.
        parameters: Extra output parameters.
    """

    __slots__ = ("name", "binary_data", "class_count", "parameters")

    def __init__(
        self,
        name: str,
        binary_data: bool = True,
        class_count: int = 0,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise EncodeError(f"requested output name must be a non-empty string, got {name!r}")
        if isinstance(class_count, bool) or not isinstance(class_count, int) or class_count < 0:
            raise EncodeError(f"requested output {name!r}: class_count must be an integer >= 0")
        self.name = name
        self.binary_data = bool(binary_data)
        self.class_count = class_count
        self.parameters = validate_parameters(parameters, f"requested output {name!r}")

    def set_shared_memory(self, region_name: str, byte_size: int, offset: int = 0) -> InferRequestedOutput:
        """Ask the server to write this output into a registered system shared memory region.

        The reply then carries the output's name, shape and datatype with these parameters and no data: read it
        with ``region.as_numpy(output.datatype, output.shape, offset)``. The output is not asked for as binary.

        Args:
            region_name: The name the region was registered under with the server.
            byte_size: Bytes available for the output in the region (the server fails the request when the output
                is larger).
            offset: Byte offset in the region.

        Returns:
            self, so calls can be chained.
        """
        params = _shm_parameters(region_name, byte_size, offset, f"requested output {self.name!r}")
        self.unset_shared_memory()
        self.parameters.update(params)
        return self

    def unset_shared_memory(self) -> InferRequestedOutput:
        """Get the output in the reply again instead of in shared memory."""
        for key in _SHM_KEYS:
            self.parameters.pop(key, None)
        return self

    @property
    def shared_memory(self) -> tuple[str, int, int] | None:
        """``(region_name, byte_size, offset)`` when the output goes to shared memory, else None."""
        if SHM_REGION not in self.parameters:
            return None
        return shared_memory_of(self.parameters, f"requested output {self.name!r}", EncodeError)

    def wire_parameters(self) -> dict[str, ParameterValue]:
        """The parameters as sent (without ``binary_data``, which depends on the server)."""
        params = dict(self.parameters)
        if self.class_count:
            params["classification"] = self.class_count
        return params

    def __repr__(self) -> str:
        return f"InferRequestedOutput(name={self.name!r}, binary_data={self.binary_data})"
