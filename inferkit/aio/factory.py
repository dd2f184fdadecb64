"""The async InferenceClientFactory: the URL's scheme picks :mod:`inferkit.aio`'s REST or gRPC client.

Owns: the async factory class, which returns :mod:`inferkit.aio` clients; each call returns a new client, the caller
owns it. The dispatch (scheme parsing, option checks) is :mod:`inferkit._factory_common`, shared with the sync
factory.
Must not import at module level: grpc, aiohttp, the sync transports, inferkit.aio.rest_client,
inferkit.aio.grpc_client.
"""

from __future__ import annotations

from inferkit import _factory_common as _common

__all__ = ["InferenceClientFactory"]


class InferenceClientFactory:
    """Make the right async client for a URL (``http(s)://`` -> REST, ``grpc(s)://`` -> gRPC).

    A URL without a scheme means ``http://`` (REST), as for the sync factory and ``InferenceRESTClient``.

    Same methods, arguments and errors as :class:`inferkit.InferenceClientFactory`; usable on the class or on an
    instance. The caller owns the client (``async with`` or ``await client.close()``).
    """

    _client_modules = ("inferkit.aio.rest_client", "inferkit.aio.grpc_client")

    get_inference_client = classmethod(_common.get_inference_client)
    get_rest_client = classmethod(_common.get_rest_client)
    get_grpc_client = classmethod(_common.get_grpc_client)
