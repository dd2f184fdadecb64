"""Case tables shared by the sync and async transport tests (REST and gRPC).

The same rows drive ``test_rest_*`` / ``test_grpc_client`` (sync) and ``test_aio_*`` (async): a behaviour is
written down once, and a difference between the clients shows up as a failing row, not as a forgotten copy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from inferkit import InferInput, InferRequest, errors
from inferkit.testing import Fault

# -- REST -----------------------------------------------------------------------------------------------------------

#: Statuses every client retries under the default RetryPolicy (then succeeds).
RETRYABLE_STATUSES = [429, 500, 502, 503, 504]

#: Statuses no policy may retry, and the typed error each raises.
NEVER_RETRIED = [
    (400, errors.InvalidInputError),
    (401, errors.UnauthenticatedError),
    (403, errors.PermissionDeniedError),
    (404, errors.NotFoundError),
    (422, errors.UnprocessableEntityError),
]

#: Faults that break the connection: a ConnectError (also a ConnectionError) when retries are off.
BROKEN_CONNECTION_ACTIONS = ["drop_before", "drop_during", "truncate"]

#: Replies that arrive but cannot be decoded.
MALFORMED_REPLY_FAULTS = [
    (Fault(route="infer", action="malformed_json"), errors.DecodeError),
    (Fault(route="infer", action="lie_header_length"), errors.DecodeError),
    (Fault(route="infer", action="lie_binary_size"), errors.DecodeError),
]


class Call(NamedTuple):
    """A client method call and what it must return (``check(result)`` is True) or raise."""

    method: str
    args: tuple[Any, ...]
    check: Any  # a callable on the result, or an exception class

    @property
    def id(self) -> str:
        return f"{self.method}{self.args}"


def _is(value: Any) -> Any:
    return lambda result: result is value


#: Health and metadata calls against the standard models plus ``multi`` (versions 1 and 2) on a v2 REST server.
REST_CALLS = [
    Call("is_server_live", (), _is(True)),
    Call("is_server_ready", (), _is(True)),
    Call("is_model_ready", ("add_sub",), _is(True)),
    Call("is_model_ready", ("multi", "2"), _is(True)),
    Call("is_model_ready", ("no_such_model",), _is(False)),
    Call("is_model_ready", ("multi", "7"), _is(False)),
    Call("get_server_metadata", (), lambda m: "binary_tensor_data" in m["extensions"]),
    Call("get_model_metadata", ("add_sub",), lambda m: [i["name"] for i in m["inputs"]] == ["INPUT0", "INPUT1"]),
    Call("get_model_metadata", ("multi", "2"), lambda m: m["name"] == "multi"),
    Call("get_model_config", ("add_sub",), lambda c: c["input"][0]["data_type"] == "TYPE_INT32"),
    Call("get_model_statistics", ("multi", "2"), lambda s: s["model_stats"][0]["version"] == "2"),
    Call("get_model_repository_index", (), lambda idx: any(e["name"] == "add_sub" for e in idx)),
    Call("get_model_metadata", ("no_such_model",), errors.NotFoundError),
    Call("predict", ("add_sub", [[1]]), errors.UnsupportedOperationError),
]


def add_sub_request(model: str = "add_sub", **kwargs: Any) -> tuple[InferRequest, np.ndarray, np.ndarray]:
    """An add_sub request (INT32 [1, 16]) and its two inputs."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
    return InferRequest(model, [x0, x1], **kwargs), a, b


# -- gRPC ----------------------------------------------------------------------------------------------------------

#: Identity models of the gRPC tests: (model, datatype, array) round-trips unchanged.
GRPC_IDENTITY_CASES = [
    ("id_bytes", "BYTES", np.array([b"a", b"", "\u00fcber".encode(), b"\0\1"], dtype=object)),
    ("id_fp16", "FP16", np.array([1.5, -2.0, 65504.0], np.float16)),
    ("id_versions", "INT64", np.array([-(2**63), 2**63 - 1], np.int64)),
]

#: gRPC codes retried under the default policy.
GRPC_RETRYABLE_CODES = ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]

#: ``retries=`` values: exactly that many retries, then the error (attempts = retries + 1).
GRPC_RETRIES_VALUES = [0, 1, 2, 4, 6]
