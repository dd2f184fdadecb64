"""Triton's request-level controls: priority, a server-side timeout and sequence state, as request parameters.

Owns: the names Triton reserves among a request's parameters (:data:`RESERVED_PARAMETERS`), checking a caller's
``parameters`` against them, and turning the named arguments of :class:`~inferkit.InferRequest` (``priority``,
``timeout``, ``sequence_id``, ``sequence_start``, ``sequence_end``) into the parameters Triton reads, with its wire
units (the timeout in microseconds). Both transports send those parameters as they send any other: REST as JSON
numbers, booleans and strings; gRPC as ``InferParameter`` (``int64_param`` for ids, priorities and the timeout,
``string_param`` for a string ``sequence_id``, ``bool_param`` for the flags).
Must not import: requests, urllib3, aiohttp, grpc, protobuf, inferkit.codec.tensors.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from inferkit.codec.tensor_specs import ParameterValue, validate_parameters
from inferkit.errors import EncodeError

__all__ = ["RESERVED_PARAMETERS", "request_parameters"]

#: Request parameters Triton gives a meaning of its own (tritonclient refuses them in ``parameters`` too). Each is
#: set by a named argument of ``InferRequest`` or by the client itself (``binary_data_output``, ``headers``).
RESERVED_PARAMETERS = {
    "sequence_id": "InferRequest(..., sequence_id=...)",
    "sequence_start": "InferRequest(..., sequence_start=True)",
    "sequence_end": "InferRequest(..., sequence_end=True)",
    "priority": "InferRequest(..., priority=...)",
    "timeout": "InferRequest(..., timeout=seconds)",
    "binary_data_output": "RESTConfig(binary_data=...) or InferRequestedOutput(name, binary_data=...)",
    "headers": "client.infer(request, headers={...})",
}

_UINT64_MAX = 2**64 - 1
_INT64_MAX = 2**63 - 1


def request_parameters(
    where: str,
    parameters: Mapping[str, Any] | None,
    priority: int | None = None,
    timeout: float | None = None,
    sequence_id: int | str | None = None,
    sequence_start: bool = False,
    sequence_end: bool = False,
) -> dict[str, ParameterValue]:
    """The parameters of a request: the caller's (checked; no reserved name) plus the controls that are set.

    Args:
        where: Names the request in errors (e.g. ``"model 'm' request"``).
        parameters: The caller's own parameters (bool, int, float or str values).
        priority: Triton's priority level (an int >= 0; 0 is the model's default level, 1 the highest).
        timeout: Seconds the server may keep the request queued before it gives up (Triton's ``timeout``,
            sent in microseconds; the model's queue policy must allow a per-request timeout).
        sequence_id: The sequence (correlation id) of a stateful model: a non-zero int or a non-empty str.
        sequence_start: This request starts the sequence.
        sequence_end: This request ends the sequence.

    Raises:
        EncodeError: A reserved name in ``parameters`` (the message names the argument to use instead), or a
            control of the wrong type or range.
    """
    params = validate_parameters(parameters, where)
    if params:
        for key in params:
            if key in RESERVED_PARAMETERS:
                raise EncodeError(
                    f"{where}: parameter {key!r} is reserved by the protocol; use {RESERVED_PARAMETERS[key]} "
                    "instead of parameters={...}"
                )
    if sequence_id is not None:
        params["sequence_id"] = _sequence_id(sequence_id, where)
        params["sequence_start"] = _flag(sequence_start, "sequence_start", where)
        params["sequence_end"] = _flag(sequence_end, "sequence_end", where)
    elif sequence_start or sequence_end:
        raise EncodeError(f"{where}: sequence_start and sequence_end need a sequence_id")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= _INT64_MAX:
            raise EncodeError(f"{where}: priority must be an int >= 0 (0: the model's default level), got {priority!r}")
        params["priority"] = priority
    if timeout is not None:
        params["timeout"] = _microseconds(timeout, where)
    return params


def _sequence_id(value: Any, where: str) -> int | str:
    if isinstance(value, str):
        if value:
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        if 0 < value <= _UINT64_MAX:
            return value
    else:
        raise EncodeError(f"{where}: sequence_id must be an int or a str, got {type(value).__name__} {value!r}")
    raise EncodeError(
        f"{where}: sequence_id must be a non-zero int (up to 2**64-1) or a non-empty str, got {value!r}; "
        "leave it out for a request outside a sequence"
    )


def _flag(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise EncodeError(f"{where}: {name} must be True or False, got {value!r}")
    return value


def _microseconds(seconds: Any, where: str) -> int:
    """Seconds -> whole microseconds, rounded up (a positive timeout never becomes 0, which means "none")."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise EncodeError(f"{where}: timeout must be a positive number of seconds, got {seconds!r}")
    micros = math.ceil(seconds * 1_000_000)
    if micros > _INT64_MAX:
        raise EncodeError(f"{where}: timeout of {seconds!r} seconds is too long")
    return micros
