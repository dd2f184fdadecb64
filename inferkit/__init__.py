"""inferkit: a sync-first Python client for model servers (Triton, KServe, MLServer).

The public sync API and the shared types. Importing this package imports numpy and the codec only: the REST
client loads ``requests`` on first use of its name, and gRPC, aiohttp, orjson and ml_dtypes are never imported
here (``inferkit.aio`` is the async namespace).
Must not import: grpc, protobuf, aiohttp, orjson, ml_dtypes, tqdm, inferkit.aio.
"""

from __future__ import annotations

import importlib
import logging as _logging
from typing import TYPE_CHECKING, Any

from inferkit._version import __version__
from inferkit.codec.datatypes import DATATYPES
from inferkit.codec.tensors import (
    InferInput,
    InferOutput,
    InferRequest,
    InferRequestedOutput,
    InferResponse,
)
from inferkit.config import APIKey, BasicAuth, BearerToken, RESTConfig, RetryPolicy, Timeout
from inferkit.errors import (
    ConnectError,
    DecodeError,
    EncodeError,
    InferkitError,
    InferTimeoutError,
    InvalidInputError,
    ItemError,
    NotFoundError,
    ServerError,
    TransportError,
)

# A library's logger gets a NullHandler so an application without logging configured sees nothing (not Python's
# last-resort stderr handler); the application decides where inferkit's records go.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

if TYPE_CHECKING:
    from inferkit.factory import InferenceClientFactory
    from inferkit.grpc_client import InferenceGRPCClient
    from inferkit.rest_client import InferenceRESTClient
    from inferkit.shm import SharedMemoryRegion

__all__ = [
    "__version__",
    "DATATYPES",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferRequestedOutput",
    "InferResponse",
    "RESTConfig",
    "RetryPolicy",
    "Timeout",
    "APIKey",
    "BasicAuth",
    "BearerToken",
    "InferenceRESTClient",
    "InferenceGRPCClient",
    "InferenceClientFactory",
    "ItemError",
    "SharedMemoryRegion",
    "InferkitError",
    "EncodeError",
    "DecodeError",
    "TransportError",
    "ConnectError",
    "InferTimeoutError",
    "ServerError",
    "InvalidInputError",
    "NotFoundError",
]

# Names whose modules import optional or heavier dependencies: loaded on first attribute access.
_LAZY = {
    "InferenceRESTClient": "inferkit.rest_client",
    "InferenceGRPCClient": "inferkit.grpc_client",
    "InferenceClientFactory": "inferkit.factory",
    "SharedMemoryRegion": "inferkit.shm",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inferkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
