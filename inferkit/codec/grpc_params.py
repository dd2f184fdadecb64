"""Parameters of the v2 gRPC protocol: protobuf parameter maps <-> dicts.

Owns: writing a dict of parameters into a message's ``map<string, InferParameter>`` (requests, responses,
tensors, requested outputs) and reading one back, and writing the parameters of repository load / unload requests
(``map<string, ModelRepositoryParameter>``). ``InferParameter`` values map bool -> ``bool_param``, int ->
``int64_param`` (``uint64_param`` above 2**63-1), float -> ``double_param``, str -> ``string_param``, and back;
repository parameters take bool, int, str and bytes (``bytes_param``).
Must not import: requests, urllib3, aiohttp, grpc; protobuf is only reached through the messages passed in.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from inferkit.codec.tensors import ParameterValue
from inferkit.errors import EncodeError

__all__ = ["encode_parameters", "decode_parameters", "encode_repository_parameters"]


_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def encode_parameters(params: Mapping[str, ParameterValue], target: Any, where: str = "request") -> None:
    """Write ``params`` into a protobuf ``map<string, InferParameter>`` field (``target``)."""
    for key, value in params.items():
        entry = target[key]
        if isinstance(value, (bool, np.bool_)):
            entry.bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
            if _INT64_MIN <= value <= _INT64_MAX:
                entry.int64_param = value
            elif _INT64_MAX < value <= _UINT64_MAX:
                entry.uint64_param = value
            else:
                raise EncodeError(f"{where}: parameter {key!r} = {value} does not fit in 64 bits")
        elif isinstance(value, (float, np.floating)):
            entry.double_param = float(value)
        elif isinstance(value, str):
            entry.string_param = value
        else:
            raise EncodeError(f"{where}: parameter {key!r} has a {type(value).__name__} value; use bool/int/float/str")


def decode_parameters(params: Any) -> dict[str, ParameterValue]:
    """Read a protobuf ``map<string, InferParameter>`` into a dict (unset parameters are skipped)."""
    out: dict[str, ParameterValue] = {}
    for key, entry in params.items():
        which = entry.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(entry, which)
    return out


def encode_repository_parameters(target: Any, params: Mapping[str, Any] | None, where: str) -> None:
    """Write ``params`` into a ``map<string, ModelRepositoryParameter>`` field (``target``): bool, int, str, bytes."""
    for key, value in (params or {}).items():
        entry = target[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            entry.int64_param = value
        elif isinstance(value, str):
            entry.string_param = value
        elif isinstance(value, (bytes, bytearray)):
            entry.bytes_param = bytes(value)
        else:
            raise EncodeError(f"{where}: parameter {key!r} must be bool, int, str or bytes, got {type(value).__name__}")
