"""Triton's trace and log settings (``trace`` and ``logging`` extensions): one dict shape for both transports.

Owns: checking the settings a caller sends, their wire form, and reading a server's answer into the dict both
clients return. Triton answers the trace settings with strings over REST (``"trace_rate": "1000"``, ``trace_level``
a list) and with lists of strings over gRPC (``SettingValue.value``); both become the same typed dict:

* ``trace_level``: a list of level names (``["OFF"]``, ``["TIMESTAMPS", "TENSORS"]``);
* ``trace_rate``, ``trace_count``, ``log_frequency``: ints (``trace_count`` -1: no limit);
* any other key (``trace_file``, ``trace_mode``, ...): the string, or a list when the server sent several values.

The log settings are typed on the wire (bools, an unsigned int, strings) and come back as they are:
``{"log_file": str, "log_info": bool, "log_warning": bool, "log_error": bool, "log_verbose_level": int,
"log_format": str}``. Updates take the same types; a trace setting may also be given as an int (sent as text, as
Triton wants it) and set to None to clear a model's own value (the model follows the global setting again).
Must not import: requests, urllib3, aiohttp, grpc, protobuf.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

from inferkit.errors import DecodeError, EncodeError

__all__ = [
    "TRACE_INT_SETTINGS",
    "TraceWireValue",
    "trace_settings_wire",
    "read_trace_settings",
    "log_settings_wire",
    "read_log_settings",
]

#: Trace settings whose values are integers (Triton sends them as decimal text).
TRACE_INT_SETTINGS = frozenset({"trace_rate", "trace_count", "log_frequency"})

#: A trace setting as sent: text, several texts (``trace_level``), or None (clear the model's own value).
TraceWireValue = Union[str, list[str], None]


def trace_settings_wire(settings: Mapping[str, Any] | None, where: str) -> dict[str, TraceWireValue]:
    """The settings to send: ints as decimal text, ``trace_level`` always a list, None kept (it clears)."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise EncodeError(f"{where}: settings must be a dict of setting name to value, got {settings!r}")
    out: dict[str, TraceWireValue] = {}
    for key, value in settings.items():
        if not isinstance(key, str):
            raise EncodeError(f"{where}: setting name {key!r} is not a string")
        if value is None:
            out[key] = None
        elif isinstance(value, bool):
            raise EncodeError(f"{where}: trace setting {key!r} takes text or an int, not {value!r}")
        elif isinstance(value, (int, str)):
            out[key] = [str(value)] if key == "trace_level" else str(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        else:
            raise EncodeError(
                f"{where}: trace setting {key!r} must be a str, an int, a list of str or None, got {value!r}"
            )
    return out


def read_trace_settings(raw: Any, where: str = "trace settings") -> dict[str, Any]:
    """A server's trace settings (``{key: str | [str, ...]}``, from REST or gRPC) as the typed dict above."""
    if not isinstance(raw, Mapping):
        raise DecodeError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, str) for v in values):
            raise DecodeError(f"{where}: setting {key!r} must be text or a list of text, got {value!r}")
        if key == "trace_level":
            out[key] = values
        elif len(values) != 1:
            out[key] = values
        elif key in TRACE_INT_SETTINGS:
            try:
                out[key] = int(values[0])
            except ValueError:
                raise DecodeError(f"{where}: setting {key!r} must be an integer, got {values[0]!r}") from None
        else:
            out[key] = values[0]
    return out


def log_settings_wire(settings: Mapping[str, Any], where: str) -> dict[str, bool | int | str]:
    """The log settings to send: bool, int >= 0 (``log_verbose_level``) or str values, checked."""
    if not isinstance(settings, Mapping):
        raise EncodeError(f"{where}: settings must be a dict of setting name to value, got {settings!r}")
    out: dict[str, bool | int | str] = {}
    for key, value in settings.items():
        if not isinstance(key, str):
            raise EncodeError(f"{where}: setting name {key!r} is not a string")
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < 2**32:
            raise EncodeError(f"{where}: log setting {key!r} must be an int from 0 to 2**32-1, got {value!r}")
        if not isinstance(value, (bool, int, str)):
            raise EncodeError(f"{where}: log setting {key!r} must be a bool, an int or a str, got {value!r}")
        out[key] = value
    return out


def read_log_settings(raw: Any, where: str = "log settings") -> dict[str, bool | int | str]:
    """A server's log settings (already typed on both transports), checked."""
    if not isinstance(raw, Mapping):
        raise DecodeError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    for key, value in raw.items():
        if not isinstance(value, (bool, int, str)):
            raise DecodeError(f"{where}: setting {key!r} must be a bool, an int or text, got {value!r}")
    return dict(raw)
