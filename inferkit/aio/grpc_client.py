"""The async gRPC client, :class:`InferenceGRPCClient` (grpc.aio), the mirror of :mod:`inferkit.grpc_client`.

Owns: the public async gRPC API (each unary method runs its call description through the transport,
:mod:`inferkit.aio._grpc`, and the async driver) and the async stream API. Settings, the retry loop and stream
reply handling are :mod:`inferkit._grpc_common`, shared with the sync client; call descriptions are the codec's
(:mod:`inferkit.codec.grpc_calls`).
Must not import: requests, urllib3, aiohttp, inferkit.rest_client, inferkit._transport, inferkit.grpc_client; grpc is
imported on first use (an ImportError names ``pip install 'inferkit[grpc]'``).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterable, Mapping

from inferkit import _grpc_shm
from inferkit._grpc_common import (
    UNSET,
    GRPCClientBase,
    Headers,
    StreamState,
    load_grpc,
)
from inferkit._grpc_generate import NO_CONFIG, AsyncGenerateStream, GenerateSpecs, single_answer
from inferkit.aio._grpc import AsyncGRPCTransport
from inferkit.aio.batching import AsyncBatchMixin
from inferkit.batching import RebuildOnUnpickle
from inferkit.codec.generate import response_to_dict
from inferkit.codec.grpc_calls import GRPCCall
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.errors import InferkitError, ServerError, TransportError

__all__ = ["InferenceGRPCClient", "AsyncInferStream"]


class InferenceGRPCClient(RebuildOnUnpickle, AsyncBatchMixin, GRPCClientBase):
    """An asyncio gRPC client for Open Inference Protocol v2 servers; same arguments as the sync client.

    Nothing is bound to an event loop at construction: the grpc.aio channel is made on first use in the running
    loop (and made again in another loop). Use ``async with`` or ``await client.close()``. Errors are the same
    typed :mod:`inferkit.errors` as the sync client's; nothing from grpc leaks. The keep-alive options
    (``keepalive_time`` 330 s, ``keepalive_timeout`` 20 s, ``idle_timeout`` 30 min) work as in the sync client: a
    peer that vanished during a call is found by pings within ``keepalive_time + keepalive_timeout``; the server
    must accept that ping rate (``grpc.http2.min_ping_interval_without_data_ms``, 5 min by default).
    ``channels=N`` opens N channels (connections) per event loop, taken in turn by the calls.
    """

    _repr_prefix = "aio."

    # -- the transport ----------------------------------------------------------------------------------------
    def _open(self) -> AsyncGRPCTransport:
        return AsyncGRPCTransport(self._s, self._grpc)

    @property
    def channel(self) -> Any:
        """The ``grpc.aio.Channel`` of the running loop."""
        return self._transport.channel

    async def close(self) -> None:
        """Close the channel; later calls raise ConnectError (the client is closed). Safe to call twice."""
        await self._transport.close()

    async def __aenter__(self) -> InferenceGRPCClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _do(self, call: GRPCCall, headers: Headers, timeout: float | None) -> Any:
        return await self._transport.call(call, headers, timeout)

    # -- health and metadata ---------------------------------------------------------------------------------
    async def is_server_live(self, headers: Headers = None, timeout: float | None = None) -> bool:
        """Whether the server is live (``ServerLive``)."""
        return bool(await self._do(self._calls.server_live(), headers, timeout))

    async def is_server_ready(self, headers: Headers = None, timeout: float | None = None) -> bool:
        """Whether the server is ready (``ServerReady``)."""
        return bool(await self._do(self._calls.server_ready(), headers, timeout))

    async def is_model_ready(
        self, model_name: str, model_version: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> bool:
        """Whether a model (version) is ready; False for a model the server does not know."""
        return bool(await self._do(self._calls.model_ready(model_name, model_version), headers, timeout))

    async def get_server_metadata(
        self, headers: Headers = None, timeout: float | None = None, *, as_message: bool = False
    ) -> Any:
        """Server name, version and extensions (or the message)."""
        return await self._do(self._calls.server_metadata(as_message), headers, timeout)

    async def get_model_metadata(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """``{"name", "versions", "platform", "inputs", "outputs"}`` as REST returns it (or the message)."""
        return await self._do(self._calls.model_metadata(model_name, model_version, as_message), headers, timeout)

    async def get_model_config(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """The model's configuration as a dict, or the ``ModelConfigResponse``."""
        return await self._do(self._calls.model_config(model_name, model_version, as_message), headers, timeout)

    async def get_model_statistics(
        self,
        model_name: str | None = None,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """``{"model_stats": [...]}`` for one model or (no name) all of them, or the message."""
        return await self._do(self._calls.model_statistics(model_name, model_version, as_message), headers, timeout)

    async def get_model_repository_index(
        self, headers: Headers = None, timeout: float | None = None, *, as_message: bool = False
    ) -> Any:
        """``[{"name", "version", "state", "reason"}, ...]`` for every model in the repository (or the message)."""
        return await self._do(self._calls.repository_index(as_message), headers, timeout)

    async def load_model(
        self,
        model_name: str,
        headers: Headers = None,
        timeout: float | None = None,
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
        timeout: float | None = None,
        *,
        unload_dependents: bool = False,
    ) -> None:
        """Unload a model (and, with ``unload_dependents``, the models that depend on it)."""
        await self._do(self._calls.unload_model(model_name, unload_dependents), headers, timeout)

    # -- trace and log settings (Triton extensions) ------------------------------------------------------------
    async def get_trace_settings(
        self, model_name: str | None = None, headers: Headers = None, timeout: float | None = None
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
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Change trace settings (e.g. ``{"trace_rate": 100, "trace_level": ["TIMESTAMPS"]}``) of one model or the
        server; a value of None clears a model's own setting. Returns the settings now in force."""
        call = self._calls.trace_settings(model_name, {} if settings is None else settings)
        result: dict[str, Any] = await self._do(call, headers, timeout)
        return result

    async def get_log_settings(self, headers: Headers = None, timeout: float | None = None) -> dict[str, Any]:
        """The server's log settings (``logging`` extension), typed: ``{"log_info": True, "log_verbose_level": 0,
        "log_format": "default", "log_file": "", ...}``."""
        result: dict[str, Any] = await self._do(self._calls.log_settings(None), headers, timeout)
        return result

    async def update_log_settings(
        self, settings: Mapping[str, Any], headers: Headers = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Change log settings (bools, ints, str: ``{"log_verbose_level": 1}``); returns the settings now in force."""
        result: dict[str, Any] = await self._do(self._calls.log_settings(settings), headers, timeout)
        return result

    # -- system shared memory (Triton extension) ------------------------------------------------------------
    async def get_system_shared_memory_status(
        self, region_name: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Registered system shared memory regions (Triton ``system_shared_memory`` extension).

        Args:
            region_name: Only this region (the server answers an error when it is unknown); None: every region.

        Returns:
            ``[{"name", "key", "offset", "byte_size"}, ...]``.
        """
        result: list[dict[str, Any]] = await self._do(_grpc_shm.shm_status(region_name), headers, timeout)
        return result

    async def register_system_shared_memory(
        self,
        name: str,
        key: str,
        byte_size: int,
        offset: int = 0,
        headers: Headers = None,
        timeout: float | None = None,
    ) -> None:
        """Register a system shared memory region: the server maps ``byte_size`` bytes of ``key`` from ``offset``.

        Args:
            name: The name requests will use (``InferInput.set_shared_memory(name, ...)``).
            key: The POSIX shared memory key, e.g. ``region.key`` of a :class:`inferkit.shm.SharedMemoryRegion`.
            byte_size: Bytes to map.
            offset: Byte offset of the mapped part in the shared memory object.

        The server must run on the same host. Registering a name twice is a ConflictError (409 / ALREADY_EXISTS).
        """
        await self._do(_grpc_shm.shm_register(name, key, byte_size, offset), headers, timeout)

    async def unregister_system_shared_memory(
        self, name: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> None:
        """Unregister a system shared memory region (None: every region); the region itself is not unlinked."""
        await self._do(_grpc_shm.shm_unregister(name), headers, timeout)

    # -- inference -------------------------------------------------------------------------------------------
    async def infer(
        self, request: InferRequest, headers: Headers = None, timeout: float | None = None
    ) -> InferResponse:
        """Run one inference (``ModelInfer``); see the sync client for retries and memory."""
        call = self._calls.infer(request)
        if request.outputs is not None:  # only requested outputs may be in shared memory
            call = _grpc_shm.infer_call(call, request)
        result: InferResponse = await self._do(call, headers, timeout)
        return result

    def stream(self, timeout: float | None = UNSET, headers: Headers = None) -> AsyncInferStream:
        """Open a bidirectional ``ModelStreamInfer`` stream (call from a running loop); see the sync client.

        Example:
            >>> async with client.stream(timeout=30) as stream:
            ...     await stream.send(request)
            ...     await stream.close_send()
            ...     async for response in stream:
            ...         print(response.as_numpy("OUT"))
        """
        stub, total, metadata = self._stream_args(timeout, headers)
        return AsyncInferStream(
            stub(timeout=total, metadata=metadata), total, self._grpc.RpcError, self._s.tls_without_client_cert
        )

    async def stream_infer(
        self, requests: Iterable[InferRequest], timeout: float | None = UNSET, headers: Headers = None
    ) -> AsyncIterator[InferResponse]:
        """Send ``requests`` on one stream and yield every response as it arrives (errors raised, typed)."""
        async with self.stream(timeout=timeout, headers=headers) as s:
            for request in requests:
                await s.send(request)
            await s.close_send()
            async for response in s:
                yield response

    # -- generate (Triton's generate extension, over ModelInfer / ModelStreamInfer) -----------------------------
    async def generate(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The REST client's ``generate`` over gRPC (see :meth:`inferkit.InferenceGRPCClient.generate`)."""
        request, decoupled = await self._generate_request(model_name, model_version, payload, headers, timeout)
        if not decoupled:
            return response_to_dict(await self.infer(request, headers, timeout))
        async with self.stream(UNSET if timeout is None else timeout, headers) as stream:
            await stream.send(request)
            await stream.close_send()
            return single_answer(model_name, [response async for response in stream])

    def generate_stream(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
    ) -> AsyncGenerateStream:
        """NOT awaited: ``async for event in client.generate_stream(...)`` or ``async with``; a dict per response
        (see :meth:`inferkit.InferenceGRPCClient.generate_stream`). Cancelling the reading task cancels the call."""

        async def opener() -> tuple[Any, InferRequest]:
            request, _ = await self._generate_request(model_name, model_version, payload, headers, timeout)
            return self.stream(UNSET if timeout is None else timeout, headers), request

        GenerateSpecs.check(model_name, payload)
        return AsyncGenerateStream(model_name, opener, self._s.retry)

    async def _generate_request(
        self, model_name: str, model_version: str | None, payload: Any, headers: Headers, timeout: float | None
    ) -> tuple[InferRequest, bool]:
        GenerateSpecs.check(model_name, payload)
        spec = self._generate_specs.get(model_name, model_version)
        if spec is None:
            metadata = await self.get_model_metadata(model_name, model_version, headers, timeout)
            try:
                config = await self.get_model_config(model_name, model_version, headers, timeout)
            except NO_CONFIG:
                config = {}
            spec = self._generate_specs.put(model_name, model_version, metadata, config)
        return GenerateSpecs.request(model_name, model_version, payload, spec), spec.decoupled


class AsyncInferStream(StreamState):
    """One ``ModelStreamInfer`` call: ``await send()`` requests, ``async for`` responses; ``async with`` closes it.

    A reply with ``error_message`` raises its typed error from ``__anext__`` and the stream stays usable; a transport
    failure or the stream's deadline raises and ends it.
    """

    def __init__(
        self, call: Any, timeout: float | None, rpc_error: type[BaseException], tls_without_client_cert: bool = False
    ) -> None:
        super().__init__(timeout, tls_without_client_cert)
        self._call = call
        self._rpc_error = rpc_error

    async def send(self, request: InferRequest) -> None:
        """Send one request."""
        wire = self._wire(request)
        try:
            await self._call.write(wire)
        except self._rpc_error as exc:
            self._send_closed = True
            raise self._reply(exc) or TransportError("the stream was cancelled") from exc
        except asyncio.InvalidStateError as exc:
            raise TransportError("the stream has ended; open a new one", model_name=self.model_name) from exc

    async def close_send(self) -> None:
        """Tell the server no more requests follow; iteration ends after the last response."""
        if not self._send_closed:
            self._send_closed = True
            await self._call.done_writing()

    def cancel(self) -> None:
        """Cancel the stream: pending responses are dropped and iteration ends."""
        self._cancelled = True
        self._send_closed = True
        self._call.cancel()

    async def recv(self, timeout: float | None = None) -> InferResponse | None:
        """The next response, waiting at most ``timeout`` seconds; None when the stream has ended."""
        if self._finished:
            return None
        try:
            item = (
                await asyncio.wait_for(self._call.read(), timeout) if timeout is not None else await self._call.read()
            )
        except asyncio.TimeoutError:
            raise self._timed_out(timeout) from None
        except asyncio.CancelledError:
            if self._cancelled:
                self._finished = True
                return None
            raise
        except self._rpc_error as exc:
            self._finished = True
            return self._reply(exc)  # type: ignore[no-any-return]
        if item is self._eof():
            self._finished = True
            return None
        return self._reply(item)  # type: ignore[no-any-return]

    @staticmethod
    def _eof() -> Any:
        return load_grpc().aio.EOF

    def __aiter__(self) -> AsyncInferStream:
        return self

    async def __anext__(self) -> InferResponse:
        response = await self.recv()
        if response is None:
            raise StopAsyncIteration
        return response

    async def results(self) -> AsyncIterator[InferResponse | InferkitError]:
        """Iterate without raising for failed requests: each item is a response or the typed error."""
        while True:
            try:
                response = await self.recv()
            except ServerError as err:
                yield err
                continue
            if response is None:
                return
            yield response

    async def close(self) -> None:
        """Stop sending and, if responses are still pending, cancel the call."""
        if not self._finished:
            self._cancelled = True
            self._call.cancel()
        self._send_closed = True

    async def __aenter__(self) -> AsyncInferStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
