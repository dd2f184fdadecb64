"""The sync gRPC client, :class:`InferenceGRPCClient` (grpcio).

Owns: the public sync gRPC API, the start of ``infer_many``'s requests as gRPC futures, and the blocking stream
API (a reader thread). Each unary method is a few lines: the call description (``inferkit.codec.grpc_calls``)
runs through the transport (:mod:`inferkit._transport.grpc`: the channel, re-created in a forked child; one
attempt for the sync driver). Settings, channel options, the retry decisions, the mapping of ``grpc.RpcError``
to inferkit errors and stream reply handling are :mod:`inferkit._grpc_common`, shared with
:mod:`inferkit.aio.grpc_client`; building and parsing messages is the codec's job (``inferkit.codec.grpc_*``).
Must not import at module level: grpc or protobuf (``import inferkit.grpc_client`` works without the
``grpc`` extra; the constructor raises an ImportError naming ``pip install 'inferkit[grpc]'``), requests,
urllib3, aiohttp, or anything from ``inferkit.aio``.

Design decisions (see also the class docstring):

* **Retries are all client-side**, driven by :class:`~inferkit.config.RetryPolicy`: UNAVAILABLE and
  RESOURCE_EXHAUSTED (the policy's ``retry_grpc_codes``), connection failures and, when
  ``retry_on_timeout``, an attempt that ran out of its deadline. gRPC's own service-config retries are left
  off because they cannot do what the policy promises: they are capped at 5 attempts, never retry a request
  larger than the retry buffer (256 KiB), cannot tell a sequence request (never retried) from another call to
  the same method, and do not report how many attempts were made. gRPC's *transparent* retries (a request that
  never left the client) stay on. The per-call ``timeout`` is one deadline across all attempts and the
  backoff sleeps between them (as gRPC's own retries would do); the server's pushback (trailing metadata
  ``grpc-retry-pushback-ms`` or ``retry-after``) replaces the backoff when the policy respects it. The same
  serialized request bytes are resent, except for requests of ``LARGE_REQUEST_BYTES`` (16 MiB) or more: those
  are sent from a request iterator (same unary RPC on the wire) so that neither inferkit nor gRPC holds the
  serialized request while the reply arrives, which keeps the peak memory of a 64 MiB round trip near 2.5x the
  payload instead of 3.75x; a retry of such a request rebuilds its bytes from the caller's arrays (one memcpy).
* **Errors**: codes map through :func:`inferkit.errors.error_for_grpc_code` with the model name and request id
  attached. UNAVAILABLE with a transport-level message from grpc-core (connection refused, "failed to connect",
  reset, DNS, socket closed) means the server never answered and becomes :class:`~inferkit.errors.ConnectError`
  (:class:`~inferkit.errors.TLSError` when the handshake or a certificate failed); an UNAVAILABLE sent by a
  server carries the server's own message and stays :class:`~inferkit.errors.ServiceUnavailableError`.
  DEADLINE_EXCEEDED is :class:`~inferkit.errors.ReadTimeout`, or :class:`~inferkit.errors.ConnectTimeout` when the
  channel was still connecting (never READY); a deadline that ran out across retries is
  :class:`~inferkit.errors.DeadlineExceeded`. RESOURCE_EXHAUSTED "message larger than max" is not rate
  limiting and is not retried: the request (our send limit, or the server's limit: 413,
  :class:`~inferkit.errors.PayloadTooLargeError`) or the reply (our receive limit,
  :class:`~inferkit.errors.ResponseTooLargeError`) exceeded a message size limit.
* **Streams**: :meth:`InferenceGRPCClient.stream` opens one ``ModelStreamInfer`` call; ``send()`` queues
  requests, iterating yields responses as they arrive; a reply carrying ``error_message`` raises the typed error
  from :func:`inferkit.codec.grpc_stream.stream_error` at that point of the iteration and the stream stays usable.
  Every wait is bounded by the stream's deadline.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

from inferkit import _grpc_shm
from inferkit._grpc_common import (
    DEFAULT_CHANNEL_OPTIONS,
    UNSET,
    GRPCClientBase,
    Headers,
    StreamState,
    map_rpc_error,
)
from inferkit._grpc_generate import NO_CONFIG, GenerateSpecs, GenerateStream, single_answer
from inferkit._transport.grpc import GRPCTransport
from inferkit.batching import BatchMixin, RebuildOnUnpickle, StartFn, no_cancel, settle
from inferkit.codec.generate import response_to_dict
from inferkit.codec.grpc_calls import LARGE_REQUEST_BYTES, GRPCCall
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.errors import InferkitError, ReadTimeout, ServerError

__all__ = ["InferenceGRPCClient", "InferStream", "DEFAULT_CHANNEL_OPTIONS", "LARGE_REQUEST_BYTES", "map_rpc_error"]


class InferenceGRPCClient(RebuildOnUnpickle, BatchMixin, GRPCClientBase):
    """A blocking gRPC client for servers that speak the Open Inference Protocol v2 (Triton, KServe, MLServer).

    One client (one HTTP/2 channel) is meant to be shared by every thread of a process; it is thread-safe and
    recreates its channel in a child process after ``fork()``.

    Args:
        url: ``"host:port"``, ``"grpc://host:port"`` or ``"grpcs://host:port"`` (TLS).
        verbose: Log every call (RPC, model, status, duration) at INFO on logger ``inferkit``; credentials
            in metadata are redacted.
        use_ssl: Use TLS (implied by ``grpcs://`` and by any certificate argument).
        root_certificates: CA bundle to trust: PEM bytes or a file path (None: the system's roots).
        private_key: Client key for mutual TLS: PEM bytes or a file path.
        certificate_chain: Client certificate chain for mutual TLS: PEM bytes or a file path.
        creds: Ready ``grpc.ChannelCredentials`` (overrides the three above).
        channel_args: Extra channel options, a dict or a list of ``(key, value)``; merged over
            :data:`DEFAULT_CHANNEL_OPTIONS` key by key, so passing some never drops the others.
        timeout: Default deadline in seconds of every call, across its retries (None: no deadline).
        retries: Retries of a failed call (``RetryPolicy(max_retries=retries)``; see ``retry``).
        retry: The full :class:`~inferkit.config.RetryPolicy` (overrides ``retries``).
        metadata: Metadata (headers) sent with every call; per-call ``headers`` are added after them.
        auth: :class:`~inferkit.config.BearerToken`, :class:`~inferkit.config.APIKey` or
            :class:`~inferkit.config.BasicAuth`, sent as metadata on every call.
        compression: ``"gzip"`` or ``"deflate"`` to compress requests (None: no compression).
        max_message_size: Largest message sent or received, in bytes (default: no limit).
        keepalive_time: Seconds without data on a connection with calls in flight before a keep-alive ping
            (default 330, above the 5 min a default gRPC server accepts between pings without data; None: no
            pings). Pings keep flowing during a long call, so a peer that vanished silently (a dropped load
            balancer flow, a host that lost power) is found within ``keepalive_time + keepalive_timeout``, not at
            the call's deadline; the call then fails with an UNAVAILABLE error. No pings are sent without calls.
            The server must accept this ping rate: its ``grpc.http2.min_ping_interval_without_data_ms`` (default
            5 min) must not exceed it, or it answers GOAWAY "too_many_pings" and closes the connection.
        keepalive_timeout: Seconds to wait for a ping's ack before the connection is considered dead and its calls
            fail (default 20; None: gRPC's own, up to 1 min). Sets ``grpc.keepalive_timeout_ms`` and
            ``grpc.http2.ping_timeout_ms`` (the one grpc-core applies to an unanswered keep-alive ping).
        idle_timeout: Seconds without calls before the channel goes IDLE and closes its connection; the next call
            reconnects (default 1800, gRPC's own; None: never idle).
        propagate_trace: Send the current OpenTelemetry span's trace context (W3C ``traceparent`` metadata) with
            every call, when the application uses OpenTelemetry (the ``opentelemetry`` extra); False: never.
        channels: How many channels (each its own HTTP/2 connection) the client opens; calls take them in turn
            (default 1: on the 2-core machines measured, more did not raise throughput at any concurrency from 1
            to 256; see docs/performance.md). Try 2-4 when the client host has cores to spare and one
            connection's stream limit or a server's per-connection thread is the bottleneck.

    The keep-alive settings are channel options (``grpc.keepalive_time_ms``, ``grpc.keepalive_timeout_ms``,
    ``grpc.http2.ping_timeout_ms``, ``grpc.client_idle_timeout_ms``): a key given in ``channel_args`` wins.

    Example:
        >>> with InferenceGRPCClient("localhost:8001") as client:
        ...     resp = client.infer(InferRequest("m", [x]))
    """

    # -- the transport ----------------------------------------------------------------------------------------
    def _open(self) -> GRPCTransport:
        return GRPCTransport(self._s, self._grpc)

    @property
    def channel(self) -> Any:
        """The underlying ``grpc.Channel`` (recreated after a fork)."""
        return self._transport.channel

    def close(self) -> None:
        """Close the channel; later calls raise ConnectError (the client is closed). Safe to call twice."""
        self._transport.close()

    def __enter__(self) -> InferenceGRPCClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, call: GRPCCall, headers: Headers, timeout: float | None) -> Any:
        return self._transport.call(call, headers, timeout)

    # -- health and metadata ---------------------------------------------------------------------------------
    def is_server_live(self, headers: Headers = None, timeout: float | None = None) -> bool:
        """Whether the server is live (``ServerLive``)."""
        return bool(self._do(self._calls.server_live(), headers, timeout))

    def is_server_ready(self, headers: Headers = None, timeout: float | None = None) -> bool:
        """Whether the server is ready (``ServerReady``)."""
        return bool(self._do(self._calls.server_ready(), headers, timeout))

    def is_model_ready(
        self, model_name: str, model_version: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> bool:
        """Whether a model (version) is ready; False for a model the server does not know."""
        return bool(self._do(self._calls.model_ready(model_name, model_version), headers, timeout))

    def get_server_metadata(
        self, headers: Headers = None, timeout: float | None = None, *, as_message: bool = False
    ) -> Any:
        """Server name, version and extensions: ``{"name", "version", "extensions"}`` (or the message)."""
        return self._do(self._calls.server_metadata(as_message), headers, timeout)

    def get_model_metadata(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """``{"name", "versions", "platform", "inputs", "outputs"}`` as REST returns it (or the message)."""
        return self._do(self._calls.model_metadata(model_name, model_version, as_message), headers, timeout)

    def get_model_config(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """The model's configuration (Triton ``model_configuration``) as a dict, or the ``ModelConfigResponse``."""
        return self._do(self._calls.model_config(model_name, model_version, as_message), headers, timeout)

    def get_model_statistics(
        self,
        model_name: str | None = None,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """``{"model_stats": [...]}`` for one model or (no name) all of them, or the message."""
        return self._do(self._calls.model_statistics(model_name, model_version, as_message), headers, timeout)

    def get_model_repository_index(
        self, headers: Headers = None, timeout: float | None = None, *, as_message: bool = False
    ) -> Any:
        """``[{"name", "version", "state", "reason"}, ...]`` for every model in the repository (or the message)."""
        return self._do(self._calls.repository_index(as_message), headers, timeout)

    def load_model(
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
        self._do(self._calls.load_model(model_name, config, files), headers, timeout)

    def unload_model(
        self,
        model_name: str,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        unload_dependents: bool = False,
    ) -> None:
        """Unload a model (and, with ``unload_dependents``, the models that depend on it)."""
        self._do(self._calls.unload_model(model_name, unload_dependents), headers, timeout)

    # -- trace and log settings (Triton extensions) ------------------------------------------------------------
    def get_trace_settings(
        self, model_name: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Trace settings (``trace`` extension) of one model, or the server's (None); the same typed dict on REST
        and gRPC: ``{"trace_level": ["OFF"], "trace_rate": 1000, "trace_count": -1, "log_frequency": 0,
        "trace_file": "", "trace_mode": "triton"}`` (see :mod:`inferkit.codec.server_settings`)."""
        result: dict[str, Any] = self._do(self._calls.trace_settings(model_name, None), headers, timeout)
        return result

    def update_trace_settings(
        self,
        model_name: str | None = None,
        settings: Mapping[str, Any] | None = None,
        headers: Headers = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Change trace settings (e.g. ``{"trace_rate": 100, "trace_level": ["TIMESTAMPS"]}``) of one model or the
        server; a value of None clears a model's own setting. Returns the settings now in force."""
        call = self._calls.trace_settings(model_name, {} if settings is None else settings)
        result: dict[str, Any] = self._do(call, headers, timeout)
        return result

    def get_log_settings(self, headers: Headers = None, timeout: float | None = None) -> dict[str, Any]:
        """The server's log settings (``logging`` extension), typed: ``{"log_info": True, "log_verbose_level": 0,
        "log_format": "default", "log_file": "", ...}``."""
        result: dict[str, Any] = self._do(self._calls.log_settings(None), headers, timeout)
        return result

    def update_log_settings(
        self, settings: Mapping[str, Any], headers: Headers = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Change log settings (bools, ints, str: ``{"log_verbose_level": 1}``); returns the settings now in force."""
        result: dict[str, Any] = self._do(self._calls.log_settings(settings), headers, timeout)
        return result

    # -- system shared memory (Triton extension) ------------------------------------------------------------
    def get_system_shared_memory_status(
        self, region_name: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Registered system shared memory regions (Triton ``system_shared_memory`` extension).

        Args:
            region_name: Only this region (the server answers an error when it is unknown); None: every region.

        Returns:
            ``[{"name", "key", "offset", "byte_size"}, ...]``.
        """
        result: list[dict[str, Any]] = self._do(_grpc_shm.shm_status(region_name), headers, timeout)
        return result

    def register_system_shared_memory(
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
        self._do(_grpc_shm.shm_register(name, key, byte_size, offset), headers, timeout)

    def unregister_system_shared_memory(
        self, name: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> None:
        """Unregister a system shared memory region (None: every region); the region itself is not unlinked."""
        self._do(_grpc_shm.shm_unregister(name), headers, timeout)

    # -- inference -------------------------------------------------------------------------------------------
    def infer(self, request: InferRequest, headers: Headers = None, timeout: float | None = None) -> InferResponse:
        """Run one inference (``ModelInfer``).

        The request is serialized once (each tensor copied once); retries resend the same bytes, except for
        requests of :data:`LARGE_REQUEST_BYTES` or more, which are rebuilt for a retry so that no copy of the
        tensors is held while the reply arrives (peak memory). A request with a ``sequence_id`` is never retried.
        Outputs are zero-copy views of the received reply.
        """
        call = self._calls.infer(request)
        if request.outputs is not None:  # only requested outputs may be in shared memory
            call = _grpc_shm.infer_call(call, request)
        result: InferResponse = self._do(call, headers, timeout)
        return result

    def _many_starter(self, headers: Headers, timeout: float | None, concurrency: int) -> StartFn:
        """``infer_many``'s start function: :meth:`_start_infer` bound to the call's headers and timeout."""
        return functools.partial(self._start_infer, headers=headers, timeout=timeout)

    def _start_infer(
        self,
        request: InferRequest,
        done: Callable[[bool, Any], None],
        defer: Callable[[Callable[[], None]], None],
        headers: Headers = None,
        timeout: float | None = None,
    ) -> Callable[[], Any]:
        """Start one inference without blocking (for ``infer_many``); returns a function that cancels it.

        ``done(True, response)`` or ``done(False, exception)`` is called exactly once, from gRPC's own thread, or
        from ``defer`` (a caller's thread where blocking is fine) when the first attempt failed and the call goes on
        under the retry policy exactly as :meth:`infer` would (same deadline, counted from the first attempt).
        One gRPC thread completing every call is what lets many calls in flight cost about what the aio client's
        event loop costs; a blocked thread per call pays a thread switch or two under the GIL for each.
        """
        transport = self._transport
        try:
            call = self._calls.infer(request)
            if request.outputs is not None:
                call = _grpc_shm.infer_call(call, request)
            if self._s.verbose:
                # One log line per attempt: the blocking path, on the caller's thread.
                defer(lambda: settle(done, lambda: self._do(call, headers, timeout)))
                return no_cancel
            run = transport.prepare(call, headers, timeout)
        except BaseException as exc:  # noqa: BLE001 - a bad request is this item's outcome, like infer() raising
            done(False, exc)
            return no_cancel
        rpc_error = self._grpc.RpcError

        def finished(future: Any) -> None:
            try:
                reply = future.result()
            except rpc_error as exc:
                failed = (False, exc)  # `exc` itself is unbound when the except block ends
                defer(lambda: settle(done, lambda: transport.retry(run, failed)))
            except BaseException as exc:  # noqa: BLE001 - reported, never lost on gRPC's thread
                done(False, exc)
            else:
                settle(done, lambda: call.parse(reply))

        try:
            future = run.stub.future(run.payload, timeout=run.total, metadata=run.metadata)
        except BaseException as exc:  # noqa: BLE001 - e.g. the channel was closed meanwhile: this item's outcome
            done(False, exc)
            return no_cancel
        future.add_done_callback(finished)
        return future.cancel  # type: ignore[no-any-return]

    def stream(self, timeout: float | None = UNSET, headers: Headers = None) -> InferStream:
        """Open a bidirectional ``ModelStreamInfer`` stream (for decoupled models: several responses a request).

        Args:
            timeout: Deadline of the whole stream in seconds (default: the client's ``timeout``); when it runs
                out, waiting for a response raises :class:`~inferkit.errors.ReadTimeout`. None: no deadline
                (reads can still be bounded with ``recv(timeout=...)``).
            headers: Metadata for this stream.

        Example:
            >>> with client.stream(timeout=30) as stream:
            ...     stream.send(request_a)
            ...     stream.send(request_b)
            ...     stream.close_send()          # no more requests: iteration ends after the last response
            ...     for response in stream:
            ...         print(response.as_numpy("OUT"))
        """
        stub, total, metadata = self._stream_args(timeout, headers)
        return InferStream(stub, metadata, total, self)

    def stream_infer(
        self, requests: Iterable[InferRequest], timeout: float | None = UNSET, headers: Headers = None
    ) -> Iterator[InferResponse]:
        """Send ``requests`` on one stream and yield every response as it arrives (errors raised, typed).

        The stream is cancelled if the caller stops iterating early.
        """
        with self.stream(timeout=timeout, headers=headers) as s:
            for request in requests:
                s.send(request)
            s.close_send()
            yield from s

    # -- generate (Triton's generate extension, over ModelInfer / ModelStreamInfer) -----------------------------
    def generate(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The REST client's ``generate`` over gRPC: the same payload, the same dict back.

        The payload's fields become typed tensors from the model's metadata (fetched once per model), as Triton does
        for HTTP; the call is ``ModelInfer``, or one ``ModelStreamInfer`` call on a decoupled model.
        """
        request, decoupled = self._generate_request(model_name, model_version, payload, headers, timeout)
        if not decoupled:
            return response_to_dict(self.infer(request, headers, timeout))
        with self.stream(UNSET if timeout is None else timeout, headers) as stream:
            stream.send(request)
            stream.close_send()
            return single_answer(model_name, list(stream))

    def generate_stream(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
    ) -> GenerateStream:
        """The REST client's ``generate_stream`` over one ``ModelStreamInfer`` call: a dict per response.

        ``timeout`` is the deadline of the whole stream (default: the client's); leaving early cancels the call.
        """
        request, _ = self._generate_request(model_name, model_version, payload, headers, timeout)
        return GenerateStream(
            lambda: self.stream(UNSET if timeout is None else timeout, headers), request, self._s.retry
        )

    def _generate_request(
        self, model_name: str, model_version: str | None, payload: Any, headers: Headers, timeout: float | None
    ) -> tuple[InferRequest, bool]:
        GenerateSpecs.check(model_name, payload)
        spec = self._generate_specs.get(model_name, model_version)
        if spec is None:
            metadata = self.get_model_metadata(model_name, model_version, headers, timeout)
            try:
                config = self.get_model_config(model_name, model_version, headers, timeout)
            except NO_CONFIG:
                config = {}
            spec = self._generate_specs.put(model_name, model_version, metadata, config)
        return GenerateSpecs.request(model_name, model_version, payload, spec), spec.decoupled


_END = object()


class InferStream(StreamState):
    """One ``ModelStreamInfer`` call: send requests, iterate responses. Use as a context manager.

    ``send()`` may be called from any thread while another iterates. Iteration yields :class:`InferResponse`
    objects in arrival order and ends when the server closes the stream (after :meth:`close_send`). A reply
    with ``error_message`` raises its typed error from ``next()``; calling ``next()`` again continues with the
    following replies (or use :meth:`results`). A transport failure or the deadline raises and ends the stream.
    """

    def __init__(self, stub: Any, metadata: Any, timeout: float | None, client: InferenceGRPCClient) -> None:
        super().__init__(timeout, client._s.tls_without_client_cert)
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._client = client  # keeps the channel alive while the stream is
        self._rpc_error = client._grpc.RpcError
        self._call = stub(self._request_iter(), timeout=timeout, metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="inferkit-grpc-stream", daemon=True)
        self._reader.start()

    def _request_iter(self) -> Iterator[bytes]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for reply in self._call:
                self._responses.put(reply)
        except Exception as exc:  # noqa: BLE001 - an RpcError or other: surfaced to the reader, never lost here
            self._responses.put(exc)
        finally:
            # Unblock gRPC's request-consuming thread, which would otherwise wait on the queue forever.
            self._requests.put(_END)
        self._responses.put(_END)

    def send(self, request: InferRequest) -> None:
        """Queue one request (serialized now, sent as soon as the stream can take it)."""
        self._requests.put(self._wire(request))

    def close_send(self) -> None:
        """Tell the server no more requests follow; iteration ends after the last response."""
        if not self._send_closed:
            self._send_closed = True
            self._requests.put(_END)

    def cancel(self) -> None:
        """Cancel the stream: pending responses are dropped and iteration ends."""
        self._cancelled = True
        self.close_send()
        self._call.cancel()

    def recv(self, timeout: float | None = None) -> InferResponse | None:
        """The next response, waiting at most ``timeout`` seconds (and never past the stream's deadline).

        Returns None when the stream has ended. Raises :class:`~inferkit.errors.ReadTimeout` when nothing
        arrived in time, or the typed error of a failed request.
        """
        if self._finished:
            return None
        wait, by_stream = timeout, False
        if self._deadline is not None:
            # gRPC ends the call at its deadline and the reader reports it; the grace second is a backstop.
            left = max(0.0, self._deadline - time.monotonic()) + 1.0
            if wait is None or left < wait:
                wait, by_stream = left, True
        try:
            item = self._responses.get(timeout=wait)
        except queue.Empty:
            if not by_stream:
                raise self._timed_out(timeout) from None
            self.cancel()
            self._finished = True
            raise ReadTimeout(
                f"the stream's {self._timeout:g} s deadline ran out", model_name=self.model_name
            ) from None
        if item is _END:
            self._finished = True
            return None
        if isinstance(item, BaseException):  # the call failed: whatever it was, the stream has ended
            self._finished = True
        return self._reply(item)  # type: ignore[no-any-return]

    def __iter__(self) -> InferStream:
        return self

    def __next__(self) -> InferResponse:
        response = self.recv()
        if response is None:
            raise StopIteration
        return response

    def results(self) -> Iterator[InferResponse | InferkitError]:
        """Iterate without raising for failed requests: each item is a response or the typed error."""
        while True:
            try:
                response = self.recv()
            except ServerError as err:
                yield err
                continue
            if response is None:
                return
            yield response

    def close(self) -> None:
        """Stop sending and, if responses are still pending, cancel the call."""
        self.close_send()
        if not self._finished:
            self._cancelled = True
            self._call.cancel()
        self._reader.join(timeout=5)

    def __enter__(self) -> InferStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
