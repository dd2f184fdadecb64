"""InferenceClientFactory: the URL's scheme picks the REST or the gRPC client.

Owns: scheme dispatch. ``http://`` / ``https://`` -> :class:`~inferkit.rest_client.InferenceRESTClient`;
``grpc://`` / ``grpcs://`` -> :class:`~inferkit.grpc_client.InferenceGRPCClient`, imported only when asked for,
so the REST path never loads grpc. Nothing is cached: every call returns a new client for the URL it was given.
Must not import at module level: grpc, aiohttp, inferkit.grpc_client, inferkit.aio.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from inferkit.config import RESTConfig

__all__ = ["InferenceClientFactory"]

_REST_SCHEMES = ("http", "https")
_GRPC_SCHEMES = ("grpc", "grpcs")


class InferenceClientFactory:
    """Make the right client for a URL.

    Usable on the class or on an instance (KServe-style ``InferenceClientFactory().get_inference_client(...)``).
    Unlike KServe's factory, which keeps the first client it made and returns it for every later URL, each
    call returns a new client for *that* URL; the caller owns it (``close()`` it or use ``with``).
    """

    @staticmethod
    def get_inference_client(url: str, config: RESTConfig | None = None, **grpc_kwargs: Any) -> Any:
        """A client for ``url``.

        Args:
            url: ``http://host:port[/base]``, ``https://...``, ``grpc://host:port`` or ``grpcs://host:port``.
            config: The REST client's settings (REST URLs only).
            **grpc_kwargs: Keyword arguments of ``InferenceGRPCClient`` (gRPC URLs only), e.g. ``timeout``,
                ``retries``, ``root_certificates``. ``grpcs://`` implies ``use_ssl=True``.

        Raises:
            ValueError: The scheme is missing or unknown, or options were given for the other transport.
        """
        scheme = _scheme(url)
        if scheme in _REST_SCHEMES:
            if grpc_kwargs:
                raise ValueError(
                    f"{sorted(grpc_kwargs)} are gRPC client options, but {url!r} is a REST URL; "
                    "put REST settings in config=RESTConfig(...)"
                )
            return InferenceClientFactory.get_rest_client(url, config)
        if config is not None:
            raise ValueError(
                f"config=RESTConfig(...) applies to REST URLs, but {url!r} is a gRPC URL; pass gRPC options "
                "as keyword arguments (timeout=..., retries=..., root_certificates=...)"
            )
        return InferenceClientFactory.get_grpc_client(url, **grpc_kwargs)

    @staticmethod
    def get_rest_client(url: str, config: RESTConfig | None = None, session: Any = None) -> Any:
        """A new :class:`~inferkit.rest_client.InferenceRESTClient` for an ``http(s)://`` URL."""
        if _scheme(url) not in _REST_SCHEMES:
            raise ValueError(f"a REST client needs an http:// or https:// URL, got {url!r}")
        module = importlib.import_module("inferkit.rest_client")
        return module.InferenceRESTClient(url, config=config, session=session)

    @staticmethod
    def get_grpc_client(url: str, **grpc_kwargs: Any) -> Any:
        """A new :class:`~inferkit.grpc_client.InferenceGRPCClient` for a ``grpc(s)://`` URL (loads grpc)."""
        scheme = _scheme(url)
        if scheme not in _GRPC_SCHEMES:
            raise ValueError(f"a gRPC client needs a grpc:// or grpcs:// URL, got {url!r}")
        target = url.split("://", 1)[1].rstrip("/")
        if not target:
            raise ValueError(f"the gRPC URL {url!r} has no host:port")
        if scheme == "grpcs":
            if grpc_kwargs.get("use_ssl") is False:
                raise ValueError(f"{url!r} asks for TLS (grpcs://) but use_ssl=False was given")
            grpc_kwargs["use_ssl"] = True
        module = importlib.import_module("inferkit.grpc_client")  # lazy: grpc is an optional extra
        return module.InferenceGRPCClient(target, **grpc_kwargs)


def _scheme(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"the server URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        raise ValueError(
            f"the server URL {url!r} has no scheme: use http:// or https:// for REST, grpc:// or grpcs:// for gRPC"
        )
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _REST_SCHEMES + _GRPC_SCHEMES:
        raise ValueError(
            f"unsupported URL scheme {scheme!r} in {url!r}: use http:// or https:// (REST), grpc:// or grpcs:// (gRPC)"
        )
    return scheme
