"""The reference server's trace and log settings, answered as Triton 2.51 answers them.

Owns: the global and per-model trace settings and the log settings, their updates and Triton's errors for them
(unknown model 400, a bad value 400, a value of the wrong JSON type 500, the trace or log file 501: not settable over
the network). Values are kept in Triton's REST form (trace settings as text, ``trace_level`` a list; log settings
typed); the REST and gRPC front ends convert. Must not import: aiohttp, grpc, protobuf.
"""

from __future__ import annotations

from typing import Any, Mapping

from inferkit.testing._model import ModelError

__all__ = ["ServerSettings"]

_TRACE_DEFAULTS: dict[str, Any] = {
    "trace_level": ["OFF"],
    "trace_rate": "1000",
    "trace_count": "-1",
    "log_frequency": "0",
    "trace_file": "",
    "trace_mode": "triton",
}
_TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
_LOG_DEFAULTS: dict[str, Any] = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "default",
}


class ServerSettings:
    """Trace settings (global, and each model's own values over them) and log settings."""

    def __init__(self) -> None:
        self.trace: dict[str, Any] = dict(_TRACE_DEFAULTS)
        self.model_trace: dict[str, dict[str, Any]] = {}
        self.log: dict[str, Any] = dict(_LOG_DEFAULTS)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def get_trace(self, model: str | None) -> dict[str, Any]:
        return {**self.trace, **self.model_trace.get(model, {})} if model else dict(self.trace)

    def update_trace(self, model: str | None, update: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``update`` (Triton's REST form: text, a list for ``trace_level``, None to clear a model's value)."""
        target = self.model_trace.setdefault(model, {}) if model else self.trace
        staged = dict(target)
        for key, value in update.items():
            if key not in _TRACE_DEFAULTS:
                continue  # as Triton: unknown settings are ignored
            if value is None:  # a model follows the global value again; the global one returns to its default
                if model:
                    staged.pop(key, None)
                else:
                    staged[key] = _TRACE_DEFAULTS[key]
            elif key == "trace_file":
                raise ModelError(501, "trace file location can not be updated through network protocol")
            elif key == "trace_level":
                staged[key] = _levels(value)
            elif not isinstance(value, str):
                raise ModelError(500, "attempt to access JSON non-string as string")
            elif key == "trace_mode":
                continue  # fixed at startup in Triton 2.51
            else:
                try:
                    int(value)
                except ValueError:
                    raise ModelError(400, f"Unable to parse '{key}', got: {value}") from None
                staged[key] = value
        target.clear()
        target.update(staged)
        return self.get_trace(model)

    def update_log(self, update: Mapping[str, Any]) -> dict[str, Any]:
        staged = dict(self.log)
        for key, value in update.items():
            if key == "log_file":
                raise ModelError(501, "log file location can not be updated through network protocol")
            if key in ("log_info", "log_warning", "log_error"):
                if not isinstance(value, bool):
                    raise ModelError(500, "attempt to access JSON non-boolean as boolean")
            elif key == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ModelError(500, "attempt to access JSON non-unsigned-integer as unsigned-integer")
            elif key == "log_format":
                if value not in ("default", "ISO8601"):
                    raise ModelError(503, f"invalid argument for --log_format, got: {value}")
            else:
                continue  # as Triton: unknown settings are ignored
            staged[key] = value
        self.log = staged
        return dict(self.log)


def _levels(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ModelError(500, "attempt to access JSON non-array as array")
    levels = [v for v in value if v in _TRACE_LEVELS]  # as Triton: unknown level names are ignored
    if "OFF" in levels and len(value) > 1:
        raise ModelError(400, "Expect only one trace level 'OFF' is specified")
    if levels and levels != ["OFF"]:
        # Triton 2.51 started without --trace-file, whose location cannot be set over the network.
        raise ModelError(400, "Attempting to set invalid trace setting :trace file name is not given")
    return ["OFF"]
