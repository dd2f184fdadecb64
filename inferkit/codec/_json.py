"""JSON encode/decode for the codec: orjson when installed (the ``fast`` extra), the stdlib otherwise.

Owns: the choice of JSON library and numpy-aware encoding. orjson is imported on first use, never at
``import inferkit``. Must not import: requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from inferkit.errors import DecodeError

__all__ = ["dumps", "loads", "backend"]

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
