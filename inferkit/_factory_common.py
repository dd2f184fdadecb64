"""The client factories' dispatch, shared by :mod:`inferkit.factory` (sync) and :mod:`inferkit.aio.factory`.

Owns: URL scheme parsing (one rule everywhere: a URL without a scheme means ``http://``, as
``InferenceRESTClient`` and ``inferkit bench`` read it), scheme -> transport kind, checking that the options
given suit that transport, and the ``get_inference_client`` / ``get_rest_client`` / ``get_grpc_client`` methods
themselves, bound into each factory class as classmethods. A factory class names its client modules in
``_client_modules`` (REST, gRPC); they are imported only when a client of that kind is asked for, so the REST
path never loads grpc and the async factory never loads a sync transport.
Must not import: requests, urllib3, aiohttp, grpc, any client module (inferkit.rest_client, inferkit.grpc_client,
inferkit._transport, inferkit.aio.*).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from inferkit.config import RESTConfig

__all__ = [
    "ACCEPTED",
    "REST_SCHEMES",
    "GRPC_SCHEMES",
    "scheme_of",
    "get_inference_client",
    "get_rest_client",
    "get_grpc_client",
]

REST_SCHEMES = ("http", "https")
GRPC_SCHEMES = ("grpc", "grpcs")


ACCEPTED = "http:// or https:// (REST), grpc:// or grpcs:// (gRPC); no scheme means http://"


def scheme_of(url: Any) -> str:
    """The URL's scheme (lower case); a URL without one (``"localhost:8000"``) means ``http``.

    Raises:
        ValueError: ``url`` is not a non-empty string, or its scheme is not one of ``http``, ``https``, ``grpc``,
            ``grpcs`` (the message names the URL and what is accepted).
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"the server URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        return "http"  # "localhost:8000", as InferenceRESTClient (and tritonclient) read it
    scheme = urlsplit(url).scheme.lower()
    if scheme not in REST_SCHEMES + GRPC_SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}: use {ACCEPTED}")
    return scheme


def _client_class(factory: Any, kind: int, name: str) -> Any:
    """The client class ``name`` from the factory's REST (0) or gRPC (1) module, imported now (lazily)."""
    return getattr(importlib.import_module(factory._client_modules[kind]), name)


def get_inference_client(cls: Any, /, url: str, config: RESTConfig | None = None, **grpc_kwargs: Any) -> Any:
    """A new client for ``url``: ``http(s)://`` gives the REST client, ``grpc(s)://`` the gRPC client.

    A URL without a scheme means ``http://``: ``"localhost:8000"`` gives the REST client of
    ``http://localhost:8000``, as ``InferenceRESTClient("localhost:8000")`` does; a gRPC client needs
    ``grpc://`` or ``grpcs://``.

    Args:
        url: ``http://host:port[/base]``, ``https://...``, ``host:port[/base]`` (means ``http://``),
            ``grpc://host:port`` or ``grpcs://host:port``.
        config: The REST client's settings (REST URLs only).
        **grpc_kwargs: Keyword arguments of ``InferenceGRPCClient`` (gRPC URLs only), e.g. ``timeout``,
            ``retries``, ``root_certificates``. ``grpcs://`` implies ``use_ssl=True``.

    Raises:
        ValueError: The scheme is unknown, the URL has no host, or options were given for the other transport.
    """
    if scheme_of(url) in REST_SCHEMES:
        if grpc_kwargs:
            raise ValueError(
                f"{sorted(grpc_kwargs)} are gRPC client options, but {url!r} is a REST URL; "
                "put REST settings in config=RESTConfig(...)"
            )
        return cls.get_rest_client(url, config)
    if config is not None:
        raise ValueError(
            f"config=RESTConfig(...) applies to REST URLs, but {url!r} is a gRPC URL; pass gRPC options "
            "as keyword arguments (timeout=..., retries=..., root_certificates=...)"
        )
    return cls.get_grpc_client(url, **grpc_kwargs)


def get_rest_client(cls: Any, /, url: str, config: RESTConfig | None = None, session: Any = None) -> Any:
    """A new ``InferenceRESTClient`` for an ``http(s)://`` URL (no scheme means ``http://``)."""
    if scheme_of(url) not in REST_SCHEMES:
        raise ValueError(f"a REST client needs an http:// or https:// URL, got {url!r}")
    return _client_class(cls, 0, "InferenceRESTClient")(url, config=config, session=session)


def get_grpc_client(cls: Any, /, url: str, **grpc_kwargs: Any) -> Any:
    """A new ``InferenceGRPCClient`` for a ``grpc(s)://`` URL (loads grpc)."""
    scheme = scheme_of(url)
    if scheme not in GRPC_SCHEMES:
        raise ValueError(f"a gRPC client needs a grpc:// or grpcs:// URL, got {url!r}")
    target = url.split("://", 1)[1].rstrip("/")
    if not target:
        raise ValueError(f"the gRPC URL {url!r} has no host:port")
    if scheme == "grpcs":
        if grpc_kwargs.get("use_ssl") is False:
            raise ValueError(f"{url!r} asks for TLS (grpcs://) but use_ssl=False was given")
        grpc_kwargs["use_ssl"] = True
    return _client_class(cls, 1, "InferenceGRPCClient")(target, **grpc_kwargs)
