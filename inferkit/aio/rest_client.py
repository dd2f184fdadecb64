"""The async REST client: :class:`InferenceRESTClient` (aiohttp), the mirror of :mod:`inferkit.rest_client`.

Owns: the public async REST API. Each method is the sync method with ``await``: the shared
:class:`~inferkit.codec.rest_calls.RestCalls` describes the call, :class:`~inferkit.aio._transport.AsyncTransport`
sends it, the call's parser reads the reply. Same constructor, methods, parameters, defaults and errors as the sync
client (``tests/unit/test_parity.py`` checks it).
Must not import: requests, urllib3, grpc, inferkit.rest_client, inferkit._transport, inferkit.grpc_client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping, Optional

from inferkit import errors
from inferkit.aio._stream import AsyncEventStream
from inferkit.aio._transport import AsyncTransport
from inferkit.aio.batching import AsyncBatchMixin
from inferkit.batching import RebuildOnUnpickle
from inferkit.codec.rest_calls import RestCall, RestCalls, check_infer_request
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.config import RESTConfig, TimeoutLike

__all__ = ["InferenceRESTClient"]

Headers = Optional[Mapping[str, str]]


class InferenceRESTClient(RebuildOnUnpickle, AsyncBatchMixin):
    """An asyncio REST client for one model server; share one instance across tasks.

    Args:
        url: The server's base URL, e.g. ``http://localhost:8000`` (a base path is kept; no scheme means http).
        config: Settings (protocol, timeouts, retries, TLS, auth, pool size, compression...), the same
            :class:`~inferkit.RESTConfig` as the sync client. ``transport`` may be a zero-argument callable that
            returns an ``aiohttp.BaseConnector`` (called in each event loop); a ``requests`` ``AuthBase`` in
            ``auth`` is sync-only and raises ValueError.
        session: Accepted for signature parity with the sync client; must be None (the aiohttp session is
            made in the running loop, see below).

    Nothing is bound to an event loop at construction: the aiohttp session is made on first use in the running
    loop, and made again when the client is used from another loop (a client created at import time, or reused
    across ``asyncio.run`` calls). Use ``async with`` or ``await client.close()``.

    Every method accepts ``headers`` and ``timeout`` as in the sync client; errors are the same typed
    :mod:`inferkit.errors` (``except TimeoutError`` / ``except ConnectionError`` work). A cancelled call
    releases its connection and leaves the client usable.
    """

    def __init__(self, url: str, config: RESTConfig | None = None, session: Any = None) -> None:
        if config is None:
            config = RESTConfig()
        elif not isinstance(config, RESTConfig):
            raise ValueError(f"config must be a RESTConfig, got {type(config).__name__}")
        if session is not None:
            raise ValueError(
                "the async client makes its aiohttp session in the running event loop; pass connection settings "
                "in RESTConfig (or RESTConfig.transport=lambda: aiohttp.TCPConnector(...)) instead of a session"
            )
        self._config = config
        self._transport = AsyncTransport(url, config)
        self._calls = RestCalls(config)
        self._probe: asyncio.Future[bool] | None = None

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The server's base URL (scheme, host, port and base path)."""
        return self._transport.base_url

    @property
    def config(self) -> RESTConfig:
        """The client's (immutable) configuration."""
        return self._config

    @property
    def protocol_version(self) -> str:
        """``"v2"`` or ``"v1"``."""
        return self._config.protocol

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close pooled connections; later calls raise ConnectError (the client is closed: make a new one)."""
        await self._transport.close()

    async def __aenter__(self) -> InferenceRESTClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"aio.InferenceRESTClient({self.host!r}, protocol={self.protocol_version!r})"

    # -- plumbing -----------------------------------------------------------------------------------------------
    async def _do(self, call: RestCall, headers: Headers, timeout: TimeoutLike) -> Any:
        return call.parse(call, await self._transport.send(call, headers, timeout))

    async def _use_binary(self, headers: Headers, timeout: TimeoutLike) -> bool:
        # One probe in flight per loop, shared by every task that needs the answer (a gather of first infers).
        probe = self._probe
        if probe is None or probe.get_loop() is not asyncio.get_running_loop() or probe.done():
            calls = self._calls
            if calls.binary is not None:
                return calls.binary
            if not calls.probe_due(time.monotonic()):
                return False  # the last probe failed transiently a moment ago: JSON
            probe = self._probe = asyncio.ensure_future(self._ask_binary(headers, timeout))
        return await asyncio.shield(probe)

    async def _ask_binary(self, headers: Headers, timeout: TimeoutLike) -> bool:
        """The binary probe, as in the sync client: retried under the policy; a transient failure means JSON for
        this call and another probe after ``RestCalls.PROBE_RETRY_INTERVAL``."""
        try:
            answer = await self._do(self._calls.binary_probe(), headers, timeout)
        except errors.TransportError:
            answer = None
        if answer is None:
            self._calls.probe_failed(time.monotonic())
            return False
        return bool(answer)

    # -- inference ------------------------------------------------------------------------------------------------
    async def infer(self, request: InferRequest, headers: Headers = None, timeout: TimeoutLike = None) -> InferResponse:
        """Run inference (see :meth:`inferkit.InferenceRESTClient.infer`)."""
        binary = self._calls.binary
        if binary is None:
            check_infer_request(request)  # before the probe, which would trip over tritonclient-style arguments
            binary = await self._use_binary(headers, timeout)
        result: InferResponse = await self._do(self._calls.infer(request, binary), headers, timeout)
        return result

    async def predict(
        self,
        model_name: str,
        instances: Any = None,
        inputs: Any = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """KServe v1 ``:predict`` with ``instances`` (rows) or ``inputs`` (columns); returns the reply dict."""
        result: dict[str, Any] = await self._do(self._calls.predict(model_name, instances, inputs), headers, timeout)
        return result

    async def explain(
        self,
        model_name: str,
        instances: Any = None,
        inputs: Any = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> Any:
        """KServe v1 ``:explain``; returns the reply's JSON."""
        return await self._do(self._calls.explain(model_name, instances, inputs), headers, timeout)

    # -- generate (Triton's generate extension) -----------------------------------------------------------------
    async def generate(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """``POST v2/models/{model}/generate`` (see :meth:`inferkit.InferenceRESTClient.generate`)."""
        call = self._calls.generate(model_name, model_version, payload, False)
        result: dict[str, Any] = await self._do(call, headers, timeout)
        return result

    def generate_stream(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> AsyncEventStream:
        """``POST v2/models/{model}/generate_stream``: NOT awaited; ``async for event in ...`` or ``async with``.

        The request is sent when the stream is first used (see :meth:`inferkit.InferenceRESTClient.generate_stream`
        for retries, timeouts and errors); cancelling the task that reads it closes its connection.
        """
        call = self._calls.generate(model_name, model_version, payload, True)
        return AsyncEventStream(self._transport, call, headers, timeout)

    # -- health ---------------------------------------------------------------------------------------------------
    async def is_server_live(self, headers: Headers = None, timeout: TimeoutLike = None) -> bool:
        """Whether the server is live. Raises a TransportError if it cannot be reached at all."""
        return bool(await self._do(self._calls.server_live(), headers, timeout))

    async def is_server_ready(self, headers: Headers = None, timeout: TimeoutLike = None) -> bool:
        """Whether the server is ready (v1: whether it lists its models)."""
        return bool(await self._do(self._calls.server_ready(), headers, timeout))

    async def is_model_ready(
        self, model_name: str, model_version: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> bool:
        """Whether a model (version) is ready; False for an unknown model."""
        return bool(await self._do(self._calls.model_ready(model_name, model_version), headers, timeout))

    # -- metadata and management (v2) ---------------------------------------------------------------------------
    async def get_server_metadata(self, headers: Headers = None, timeout: TimeoutLike = None) -> dict[str, Any]:
        """``GET /v2``: name, version and extensions."""
        result: dict[str, Any] = await self._do(self._calls.server_metadata(), headers, timeout)
        return result

    async def get_model_metadata(
        self, model_name: str, model_version: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> dict[str, Any]:
        """A model's metadata: name, versions, platform, inputs and outputs."""
        call = self._calls.model_metadata(model_name, model_version)
        result: dict[str, Any] = await self._do(call, headers, timeout)
        return result

    async def get_model_config(
        self, model_name: str, model_version: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> dict[str, Any]:
        """A model's configuration (Triton ``model_configuration`` extension), as JSON."""
        call = self._calls.model_config(model_name, model_version)
        result: dict[str, Any] = await self._do(call, headers, timeout)
        return result

    async def get_model_statistics(
        self,
        model_name: str | None = None,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """Inference statistics of one model, or of all models when none is named."""
        call = self._calls.model_statistics(model_name, model_version)
        result: dict[str, Any] = await self._do(call, headers, timeout)
        return result

    async def get_model_repository_index(
        self, headers: Headers = None, timeout: TimeoutLike = None
    ) -> list[dict[str, Any]]:
        """The models in the server's repository (``model_repository`` extension)."""
        result: list[dict[str, Any]] = await self._do(self._calls.repository_index(), headers, timeout)
        return result

    async def load_model(
        self,
        model_name: str,
        headers: Headers = None,
        timeout: TimeoutLike = None,
        *,
        config: str | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Load (or reload) a model (``model_repository`` extension).

        Args:
            model_name: The model.
            config: A model configuration as JSON text (``json.dumps({...})``), used instead of the repository's
                ``config.pbtxt`` (e.g. another ``max_batch_size``).
            files: File overrides, ``{"file:<version>/<file name>": content_bytes}`` (e.g. ``"file:1/model.py"``):
                the model is loaded from them and ``config`` alone (Triton needs both); sent as bytes over gRPC,
                base64 over REST. Not resent once the request may have arrived.
        """
        await self._do(self._calls.load_model(model_name, config, files), headers, timeout)

    async def unload_model(
        self,
        model_name: str,
        headers: Headers = None,
        timeout: TimeoutLike = None,
        *,
        unload_dependents: bool = False,
    ) -> None:
        """Unload a model (and, with ``unload_dependents``, the models that depend on it)."""
        await self._do(self._calls.unload_model(model_name, unload_dependents), headers, timeout)

    # -- trace and log settings (Triton extensions) ------------------------------------------------------------
    async def get_trace_settings(
        self, model_name: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> dict[str, Any]:
        """Trace settings (``trace`` extension) of one model, or the server's (None); the same typed dict on REST
        and gRPC: ``{"trace_level": ["OFF"], "trace_rate": 1000, "trace_count": -1, "log_frequency": 0,
        "trace_file": "", "trace_mode": "triton"}`` (see :mod:`inferkit.codec.server_settings`)."""
        result: dict[str, Any] = await self._do(self._calls.trace_settings(model_name, None), headers, timeout)
        return result

    async def update_trace_settings(
        self,
        model_name: str | None = None,
        settings: Mapping[str, Any] | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """Change trace settings (e.g. ``{"trace_rate": 100, "trace_level": ["TIMESTAMPS"]}``) of one model or the
        server; a value of None clears a model's own setting. Returns the settings now in force."""
        call = self._calls.trace_settings(model_name, {} if settings is None else settings)
        result: dict[str, Any] = await self._do(call, headers, timeout)
        return result

    async def get_log_settings(self, headers: Headers = None, timeout: TimeoutLike = None) -> dict[str, Any]:
        """The server's log settings (``logging`` extension), typed: ``{"log_info": True, "log_verbose_level": 0,
        "log_format": "default", "log_file": "", ...}``."""
        result: dict[str, Any] = await self._do(self._calls.log_settings(None), headers, timeout)
        return result

    async def update_log_settings(
        self, settings: Mapping[str, Any], headers: Headers = None, timeout: TimeoutLike = None
    ) -> dict[str, Any]:
        """Change log settings (bools, ints, str: ``{"log_verbose_level": 1}``); returns the settings now in force."""
        result: dict[str, Any] = await self._do(self._calls.log_settings(settings), headers, timeout)
        return result

    # -- system shared memory (Triton extension) ------------------------------------------------------------
    async def get_system_shared_memory_status(
        self, region_name: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> list[dict[str, Any]]:
        """Registered system shared memory regions (Triton ``system_shared_memory`` extension).

        Args:
            region_name: Only this region (the server answers an error when it is unknown); None: every region.

        Returns:
            ``[{"name", "key", "offset", "byte_size"}, ...]``.
        """
        result: list[dict[str, Any]] = await self._do(self._calls.shm_status(region_name), headers, timeout)
        return result

    async def register_system_shared_memory(
        self,
        name: str,
        key: str,
        byte_size: int,
        offset: int = 0,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> None:
        """Register a system shared memory region: the server maps ``byte_size`` bytes of ``key`` from ``offset``.

        Args:
            name: The name requests will use (``InferInput.set_shared_memory(name, ...)``).
            key: The POSIX shared memory key, e.g. ``region.key`` of a :class:`inferkit.shm.SharedMemoryRegion`.
            byte_size: Bytes to map.
            offset: Byte offset of the mapped part in the shared memory object.

        The server must run on the same host. Registering a name twice is a ConflictError (Triton answers REST
        400 "... already in manager", recognised as such; gRPC ALREADY_EXISTS).
        """
        await self._do(self._calls.shm_register(name, key, byte_size, offset), headers, timeout)

    async def unregister_system_shared_memory(
        self, name: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> None:
        """Unregister a system shared memory region (None: every region); the region itself is not unlinked."""
        await self._do(self._calls.shm_unregister(name), headers, timeout)
