"""InferenceClientFactory: the URL's scheme picks the REST or the gRPC client.

Owns: the sync factory class. ``http://`` / ``https://`` -> :class:`~inferkit.rest_client.InferenceRESTClient`
(a URL without a scheme, ``"localhost:8000"``, means ``http://``);
``grpc://`` / ``grpcs://`` -> :class:`~inferkit.grpc_client.InferenceGRPCClient`, imported only when asked for,
so the REST path never loads grpc. Nothing is cached: every call returns a new client for the URL it was given.
The dispatch itself (scheme parsing, option checks) is :mod:`inferkit._factory_common`, shared with
:mod:`inferkit.aio.factory`.
Must not import at module level: grpc, aiohttp, inferkit.rest_client, inferkit.grpc_client, inferkit.aio.
"""

from __future__ import annotations

from inferkit import _factory_common as _common

__all__ = ["InferenceClientFactory"]


class InferenceClientFactory:
    """Make the right client for a URL: ``http(s)://`` -> REST, ``grpc(s)://`` -> gRPC.

    A URL without a scheme means ``http://`` (REST), the same rule as ``InferenceRESTClient("localhost:8000")``
    and ``inferkit bench -u localhost:8000``; for gRPC, say ``grpc://host:port``.

    Usable on the class or on an instance (KServe-style ``InferenceClientFactory().get_inference_client(...)``).
    Unlike KServe's factory, which keeps the first client it made and returns it for every later URL, each
    call returns a new client for *that* URL; the caller owns it (``close()`` it or use ``with``).
    """

    _client_modules = ("inferkit.rest_client", "inferkit.grpc_client")

    get_inference_client = classmethod(_common.get_inference_client)
    get_rest_client = classmethod(_common.get_rest_client)
    get_grpc_client = classmethod(_common.get_grpc_client)
