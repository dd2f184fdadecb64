"""JSON encode/decode for the codec: orjson when installed (the ``fast`` extra), the stdlib otherwise.

Owns: the choice of JSON library, numpy-aware encoding, and reading large tensor bodies with pysimdjson (also in the
``fast`` extra; see ``loads_tensors``). Both are imported on first use, never at ``import inferkit``.
Must not import: requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from inferkit.errors import DecodeError

__all__ = ["dumps", "loads", "loads_tensors", "backend"]

_dumps: Callable[[Any], bytes] | None = None
_loads: Callable[[bytes | bytearray | memoryview | str], Any] | None = None
_backend = ""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _setup() -> None:
    global _dumps, _loads, _backend
    try:
        import orjson  # noqa: PLC0415 - optional, loaded lazily
    except ImportError:
        encoder = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=True)

        def std_dumps(obj: Any) -> bytes:
            return encoder.encode(obj).encode("utf-8")

        def std_loads(data: bytes | bytearray | memoryview | str) -> Any:
            if isinstance(data, memoryview):
                data = bytes(data)
            return json.loads(data)

        _dumps, _loads, _backend = std_dumps, std_loads, "json"
    else:
        option = orjson.OPT_SERIALIZE_NUMPY

        def fast_dumps(obj: Any) -> bytes:
            return orjson.dumps(obj, default=_default, option=option)

        _dumps, _loads, _backend = fast_dumps, orjson.loads, "orjson"


def backend() -> str:
    """``"orjson"`` or ``"json"``."""
    if not _backend:
        _setup()
    return _backend


def dumps(obj: Any) -> bytes:
    """Serialize to compact UTF-8 JSON bytes; numpy arrays and scalars are accepted."""
    if _dumps is None:
        _setup()
    assert _dumps is not None
    return _dumps(obj)


def loads(data: bytes | bytearray | memoryview | str, *, what: str = "JSON body") -> Any:
    """Parse JSON; malformed, non-UTF-8 or too deeply nested input raises DecodeError naming ``what``."""
    if _loads is None:
        _setup()
    assert _loads is not None
    try:
        return _loads(data)
    except RecursionError as exc:
        raise DecodeError(f"{what} is nested too deeply to parse") from exc
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError, orjson.JSONDecodeError, UnicodeDecodeError
        preview = bytes(data[:120]) if not isinstance(data, str) else data[:120].encode()
        raise DecodeError(f"{what} is not valid JSON ({exc}); starts with {preview!r}") from exc


# -- large tensor bodies: pysimdjson ----------------------------------------------------------------------------
# A JSON tensor body is mostly one long list of numbers per tensor. orjson (or json) makes a Python number per
# element and numpy then copies them into an array: for 4M FP32 values, 230 ms + 90 ms. pysimdjson parses the text
# in C and its ``as_buffer`` writes a flat list of numbers straight into a buffer (130 ms + 30 ms), so only the
# numbers' final cast remains. Measured per body (decode + as_numpy, this machine): orjson wins below about 2 KB
# (64 FP32: 9.8 against 12.6 us), simdjson above (1k FP32 / INT64: 1.9x / 2.5x; 16k: 2.4x / 3.9x); BYTES and BOOL
# lists, which simdjson hands over as Python lists, are 6-13% slower than with orjson. Hence the floor.
SIMDJSON_MIN_BYTES = 4096
_AS_BUFFER = {"d": np.float64, "i": np.int64, "u": np.uint64}
_KIND = {
    **dict.fromkeys(("FP16", "FP32", "FP64"), "d"),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64"), "i"),
    **dict.fromkeys(("UINT8", "UINT16", "UINT32", "UINT64"), "u"),
}
_simdjson: Any = None  # the module, False when it is not installed


def loads_tensors(data: bytes | bytearray | memoryview, *, what: str = "JSON body") -> Any:
    """Parse an infer request or response body: ``loads``, except that with pysimdjson installed and a body of at
    least ``SIMDJSON_MIN_BYTES``, a tensor's ``data`` that is a flat list of numbers comes back as a numpy array
    (float64 for FP types, int64 / uint64 for INT / UINT; the tensor converts it like a list).

    Anything else (nested lists, BOOL and BYTES data, a non-number in the list, a number the buffer type cannot
    hold, a body pysimdjson refuses) comes back as ``loads`` would give it, so errors and values are the same on
    both paths (tests/unit/test_json_tensors.py checks this against ``loads``).
    """
    global _simdjson
    if len(data) < SIMDJSON_MIN_BYTES:
        return loads(data, what=what)
    if _simdjson is None:
        try:
            import simdjson  # noqa: PLC0415 - optional, loaded lazily
        except ImportError:
            _simdjson = False
        else:
            _simdjson = simdjson
    if _simdjson is False:
        return loads(data, what=what)
    try:
        doc = _simdjson.Parser().parse(data)  # one parser per call: a parser holds one document at a time
    except (ValueError, TypeError, RuntimeError):  # invalid JSON, bad UTF-8, too deep: loads raises its error
        return loads(data, what=what)
    if not isinstance(doc, _simdjson.Object):
        return _plain(doc)
    header = {}
    for key in doc.keys():  # not items(): it converts every value to Python objects, the data lists too
        value = doc[key]
        is_list = key in ("inputs", "outputs") and isinstance(value, _simdjson.Array)
        header[key] = [_tensor(entry) for entry in value] if is_list else _plain(value)
    return header


def _plain(value: Any) -> Any:
    if isinstance(value, _simdjson.Object):
        return value.as_dict()
    if isinstance(value, _simdjson.Array):
        return value.as_list()
    return value


def _tensor(entry: Any) -> Any:
    if not isinstance(entry, _simdjson.Object):
        return _plain(entry)
    out = {key: _plain(entry[key]) for key in entry.keys() if key != "data"}
    if "data" in entry:
        data = entry["data"]
        kind = _KIND.get(out["datatype"]) if isinstance(out.get("datatype"), str) else None
        # Flat lists only: as_buffer flattens nested lists without checking that they are regular. A nested list is
        # recognised by its first element or by a flattened count other than its length; what is left (a number
        # first, then one-element lists among numbers, [1, [2], 3]) is read as flat, values in order.
        if kind and isinstance(data, _simdjson.Array) and (len(data) == 0 or not isinstance(data[0], _simdjson.Array)):
            try:
                array = np.frombuffer(data.as_buffer(of_type=kind), dtype=_AS_BUFFER[kind])
            except (TypeError, ValueError):  # a bool, string, null or fraction, or out of the buffer type's range
                array = None
            if array is not None and array.size == len(data):
                out["data"] = array
                return out
        out["data"] = _plain(data)
    return out
