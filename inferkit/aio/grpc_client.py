"""The async gRPC client, :class:`InferenceGRPCClient` (grpc.aio), the mirror of :mod:`inferkit.grpc_client`.

Owns: the grpc.aio channel, made lazily in the running event loop and again when the client is used from another
loop; driving the shared retry loop (:func:`inferkit._grpc_common.grpc_exchange`) with ``await`` and
``asyncio.sleep``; the async stream API. Settings, call descriptions, error mapping and stream reply handling are
:mod:`inferkit._grpc_common`, shared with the sync client.
Must not import: requests, urllib3, aiohttp, inferkit.rest_client, inferkit._http, inferkit.grpc_client; grpc is
imported on first use (an ImportError names ``pip install 'inferkit[grpc]'``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence

from inferkit._grpc_common import (
    Attempt,
    GRPCCall,
    GRPCCalls,
    GRPCSettings,
    Headers,
    codec,
    grpc_exchange,
    load_grpc,
    log_line,
    make_stubs,
    stream_reply,
)
from inferkit.aio.batching import AsyncBatchMixin
from inferkit.batching import RebuildOnUnpickle
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.config import APIKey, BasicAuth, BearerToken, RetryPolicy
from inferkit.errors import InferkitError, ReadTimeout, ServerError, TransportError

__all__ = ["InferenceGRPCClient", "AsyncInferStream"]

logger = logging.getLogger("inferkit")

_UNSET: Any = object()


async def _once(build: Any) -> AsyncIterator[bytes]:
    yield build()


class InferenceGRPCClient(RebuildOnUnpickle, AsyncBatchMixin):
    """An asyncio gRPC client for Open Inference Protocol v2 servers; same arguments as the sync client.

    Nothing is bound to an event loop at construction: the grpc.aio channel is made on first use in the running
    loop (and made again in another loop). Use ``async with`` or ``await client.close()``. Errors are the same
    typed :mod:`inferkit.errors` as the sync client's; nothing from grpc leaks.
    """

    def __init__(
        self,
        url: str,
        verbose: bool = False,
        use_ssl: bool = False,
        root_certificates: str | bytes | None = None,
        private_key: str | bytes | None = None,
        certificate_chain: str | bytes | None = None,
        creds: Any = None,
        channel_args: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        timeout: float | None = 60,
        retries: int = 3,
        *,
        retry: RetryPolicy | None = None,
        metadata: Headers = None,
        auth: BearerToken | APIKey | BasicAuth | None = None,
        compression: str | None = None,
        max_message_size: int | None = None,
    ) -> None:
        self._s = GRPCSettings(
            url,
            verbose,
            use_ssl,
            root_certificates,
            private_key,
            certificate_chain,
            creds,
            channel_args,
            timeout,
            retries,
            retry,
            metadata,
            auth,
            compression,
            max_message_size,
        )
        self._grpc = load_grpc()
        self._calls = GRPCCalls(self._s.retry)
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- channel ----------------------------------------------------------------------------------------------
    def _stub(self, name: str) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._closed:
                raise TransportError(f"the gRPC client for {self._s.target} is closed")
            old, old_loop = self._channel, self._loop
            self._channel = self._s.channel(self._grpc.aio)
            self._stubs = make_stubs(self._channel)
            self._loop = loop
            if old is not None and old_loop is not None and not old_loop.is_closed() and old_loop.is_running():
                asyncio.run_coroutine_threadsafe(old.close(), old_loop)
        return self._stubs[name]

    @property
    def host(self) -> str:
        """The target, ``host:port``."""
        return self._s.target

    @property
    def channel(self) -> Any:
        """The ``grpc.aio.Channel`` of the running loop."""
        self._stub("ServerLive")
        return self._channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with every call (lower-case keys)."""
        return self._s.metadata

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in effect."""
        return self._s.retry

    async def close(self) -> None:
        """Close the channel; later calls raise TransportError. Safe to call twice."""
        self._closed = True
        channel, loop, self._channel, self._loop = self._channel, self._loop, None, None
        if channel is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            await channel.close()
        elif not loop.is_closed() and loop.is_running():
            asyncio.run_coroutine_threadsafe(channel.close(), loop)

    async def __aenter__(self) -> InferenceGRPCClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"aio.InferenceGRPCClient({self._s.target!r})"

    # -- the call path ---------------------------------------------------------------------------------------
    async def _do(self, call: GRPCCall, headers: Headers, timeout: float | None) -> Any:
        """One RPC with deadline, metadata and retries; the only place a grpc error is caught."""
        stub = self._stub(call.rpc)
        metadata = self._s.call_metadata(headers)
        log = self._logger(call, metadata) if self._s.verbose else None
        exchange = grpc_exchange(call, self._s.deadline(timeout), self._s.retry, clock=time.monotonic, log=log)
        rpc_error = self._grpc.RpcError
        request = call.request
        todo = next(exchange)
        while True:
            if isinstance(todo, Attempt):
                payload = _once(request) if callable(request) else request
                try:
                    outcome: Any = (True, await stub(payload, timeout=todo.timeout, metadata=metadata))
                except rpc_error as exc:
                    outcome = (False, exc)
                del payload
            else:
                await asyncio.sleep(todo)
                outcome = None
            try:
                todo = exchange.send(outcome)
            except StopIteration as done:
                return done.value

    def _logger(self, call: GRPCCall, metadata: Any) -> Any:
        def log(status: str, attempts: int, start: float) -> None:
            ms = (time.monotonic() - start) * 1000
            logger.info("%s", log_line(self._s.target, call.rpc, call.model_name, status, ms, attempts, metadata))

        return log

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
        """Load (or reload) a model; ``config`` is a JSON model config, ``files`` maps ``"file:<path>"`` to bytes."""
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

    # -- inference -------------------------------------------------------------------------------------------
    async def infer(
        self, request: InferRequest, headers: Headers = None, timeout: float | None = None
    ) -> InferResponse:
        """Run one inference (``ModelInfer``); see the sync client for retries and memory."""
        result: InferResponse = await self._do(self._calls.infer(request), headers, timeout)
        return result

    def stream(self, timeout: float | None = _UNSET, headers: Headers = None) -> AsyncInferStream:
        """Open a bidirectional ``ModelStreamInfer`` stream (call from a running loop); see the sync client.

        Example:
            >>> async with client.stream(timeout=30) as stream:
            ...     await stream.send(request)
            ...     await stream.close_send()
            ...     async for response in stream:
            ...         print(response.as_numpy("OUT"))
        """
        stub = self._stub("ModelStreamInfer")
        total = self._s.timeout if timeout is _UNSET else self._s.deadline(timeout) if timeout is not None else None
        return AsyncInferStream(
            stub(timeout=total, metadata=self._s.call_metadata(headers)), total, self._grpc.RpcError
        )

    async def stream_infer(
        self, requests: Iterable[InferRequest], timeout: float | None = _UNSET, headers: Headers = None
    ) -> AsyncIterator[InferResponse]:
        """Send ``requests`` on one stream and yield every response as it arrives (errors raised, typed)."""
        async with self.stream(timeout=timeout, headers=headers) as s:
            for request in requests:
                await s.send(request)
            await s.close_send()
            async for response in s:
                yield response


class AsyncInferStream:
    """One ``ModelStreamInfer`` call: ``await send()`` requests, ``async for`` responses; ``async with`` closes it.

    A reply with ``error_message`` raises its typed error from ``__anext__`` and the stream stays usable; a transport
    failure or the stream's deadline raises and ends it.
    """

    def __init__(self, call: Any, timeout: float | None, rpc_error: type) -> None:
        self._call = call
        self._timeout = timeout
        self._rpc_error = rpc_error
        self._models: list[str] = []
        self._send_closed = False
        self._finished = False
        self._cancelled = False

    @property
    def model_name(self) -> str | None:
        """The model of the requests sent, when they all went to one model."""
        return self._models[0] if len(set(self._models)) == 1 else None

    async def send(self, request: InferRequest) -> None:
        """Send one request."""
        if self._send_closed:
            raise TransportError("the stream is closed for sending (close_send() or cancel() was called)")
        wire = codec().serialize_infer_request(request)
        self._models.append(request.model_name)
        try:
            await self._call.write(wire)
        except self._rpc_error as exc:
            self._send_closed = True
            raise stream_reply(exc, self.model_name, self._cancelled, self._rpc_error) or TransportError(
                "the stream was cancelled"
            ) from exc
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
            raise ReadTimeout(f"no stream response within {timeout:g} s", model_name=self.model_name) from None
        except asyncio.CancelledError:
            if self._cancelled:
                self._finished = True
                return None
            raise
        except self._rpc_error as exc:
            self._finished = True
            return stream_reply(exc, self.model_name, self._cancelled, self._rpc_error)  # type: ignore[no-any-return]
        if item is self._eof():
            self._finished = True
            return None
        return stream_reply(item, self.model_name, self._cancelled, self._rpc_error)  # type: ignore[no-any-return]

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
