"""inferkit.aio: the asyncio mirror of inferkit's clients (aiohttp for REST, grpc.aio for gRPC).

``from inferkit.aio import InferenceRESTClient, InferenceGRPCClient, InferenceClientFactory`` gives the same names,
constructors, parameters and errors as ``inferkit``, with awaitable methods, ``async with`` and ``await close()``.
Importing this package imports neither aiohttp nor grpc: each client's module loads its library on first use and
names the extra to install when it is missing.
Must not import: the sync transports (``inferkit.rest_client``, ``inferkit._transport``, ``inferkit.grpc_client``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferkit.aio.factory import InferenceClientFactory
    from inferkit.aio.grpc_client import InferenceGRPCClient
    from inferkit.aio.rest_client import InferenceRESTClient

__all__ = ["InferenceRESTClient", "InferenceGRPCClient", "InferenceClientFactory"]

_LAZY = {
    "InferenceRESTClient": "inferkit.aio.rest_client",
    "InferenceGRPCClient": "inferkit.aio.grpc_client",
    "InferenceClientFactory": "inferkit.aio.factory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inferkit.aio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
