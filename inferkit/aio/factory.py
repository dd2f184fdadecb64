"""The async InferenceClientFactory: the URL's scheme picks :mod:`inferkit.aio`'s REST or gRPC client.

Owns: returning the async clients. The scheme parsing and scheme sets are the sync factory's
(:mod:`inferkit.factory`); each call returns a new client, the caller owns it.
Must not import at module level: grpc, aiohttp, the sync transports, inferkit.aio.grpc_client.
"""

from __future__ import annotations

import importlib
from typing import Any

from inferkit.config import RESTConfig
from inferkit.factory import _GRPC_SCHEMES, _REST_SCHEMES, _scheme

__all__ = ["InferenceClientFactory"]


class InferenceClientFactory:
    """Make the right async client for a URL (``http(s)://`` -> REST, ``grpc(s)://`` -> gRPC).

    Same methods, arguments and errors as :class:`inferkit.InferenceClientFactory`; usable on the class or on an
    instance. The caller owns the client (``async with`` or ``await client.close()``).
    """

    @staticmethod
    def get_inference_client(url: str, config: RESTConfig | None = None, **grpc_kwargs: Any) -> Any:
        """A new async client for ``url`` (see :meth:`inferkit.InferenceClientFactory.get_inference_client`)."""
        rest = _scheme(url) in _REST_SCHEMES
        if rest and grpc_kwargs:
            raise ValueError(f"{sorted(grpc_kwargs)} are gRPC client options, but {url!r} is a REST URL")
        if not rest and config is not None:
            raise ValueError(f"config=RESTConfig(...) applies to REST URLs, but {url!r} is a gRPC URL")
        if rest:
            return InferenceClientFactory.get_rest_client(url, config)
        return InferenceClientFactory.get_grpc_client(url, **grpc_kwargs)

    @staticmethod
    def get_rest_client(url: str, config: RESTConfig | None = None, session: Any = None) -> Any:
        """A new :class:`inferkit.aio.InferenceRESTClient` for an ``http(s)://`` URL."""
        if _scheme(url) not in _REST_SCHEMES:
            raise ValueError(f"a REST client needs an http:// or https:// URL, got {url!r}")
        module = importlib.import_module("inferkit.aio.rest_client")
        return module.InferenceRESTClient(url, config=config, session=session)

    @staticmethod
    def get_grpc_client(url: str, **grpc_kwargs: Any) -> Any:
        """A new :class:`inferkit.aio.InferenceGRPCClient` for a ``grpc(s)://`` URL (loads grpc)."""
        scheme = _scheme(url)
        if scheme not in _GRPC_SCHEMES:
            raise ValueError(f"a gRPC client needs a grpc:// or grpcs:// URL, got {url!r}")
        if scheme == "grpcs" and grpc_kwargs.get("use_ssl") is False:
            raise ValueError(f"{url!r} asks for TLS (grpcs://) but use_ssl=False was given")
        if scheme == "grpcs":
            grpc_kwargs["use_ssl"] = True
        module = importlib.import_module("inferkit.aio.grpc_client")
        return module.InferenceGRPCClient(url, **grpc_kwargs)  # the client parses grpc(s):// itself
