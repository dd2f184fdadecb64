"""inferkit.aio: the asyncio mirror of inferkit's clients (aiohttp for REST, grpc.aio for gRPC).

``from inferkit.aio import InferenceRESTClient, InferenceGRPCClient, InferenceClientFactory`` gives the same names,
constructors, parameters and errors as ``inferkit``, with awaitable methods, ``async with`` and ``await close()``.
Importing this package imports neither aiohttp nor grpc: each client's module loads its library on first use and
names the extra to install when it is missing.
Must not import: the sync transports (``inferkit.rest_client``, ``inferkit._transport``, ``inferkit.grpc_client``).
"""

# The module namespace holds the public API, dunders and underscored helpers only (no `from __future__ import
# annotations`, no bare `typing` names), so `dir(inferkit.aio)` and tab completion show what users may use.
import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from typing import Any

    from inferkit.aio.factory import InferenceClientFactory
    from inferkit.aio.grpc_client import InferenceGRPCClient
    from inferkit.aio.rest_client import InferenceRESTClient

__all__ = ["InferenceRESTClient", "InferenceGRPCClient", "InferenceClientFactory"]

_LAZY = {
    "InferenceRESTClient": "inferkit.aio.rest_client",
    "InferenceGRPCClient": "inferkit.aio.grpc_client",
    "InferenceClientFactory": "inferkit.aio.factory",
}


def __getattr__(name: str) -> "Any":
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inferkit.aio' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    dunders = {name for name in globals() if name.startswith("__") and name.endswith("__")}
    return sorted(dunders | set(__all__))
