"""The sync REST client: :class:`InferenceRESTClient` (Open Inference Protocol v2 and KServe v1).

Owns: the public sync REST API. Each method is a few lines: the codec builds the body and route, the transport
(:mod:`inferkit._transport.http`) sends it with pooling, retries and error mapping, the codec parses the reply.
Must not import: aiohttp, grpc, inferkit.aio, inferkit.grpc_client.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping, Optional

import requests

from inferkit import errors
from inferkit._transport.driver import CancelScope
from inferkit._transport.http import SyncTransport
from inferkit._transport.stream import EventStream, open_stream
from inferkit.batching import BatchMixin, RebuildOnUnpickle
from inferkit.codec.rest_calls import RestCall, RestCalls, check_infer_request
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.config import RESTConfig, TimeoutLike

__all__ = ["InferenceRESTClient"]

Headers = Optional[Mapping[str, str]]


class InferenceRESTClient(RebuildOnUnpickle, BatchMixin):
    """A blocking REST client for one model server; thread-safe, share one instance across threads.

    Args:
        url: The server's base URL, e.g. ``http://localhost:8000`` or, behind an ingress, a URL with a base
            path such as ``https://host/serving/m1`` (every route is appended to it). A URL without a scheme
            means ``http://``.
        config: Settings (protocol, timeouts, retries, TLS, auth, pool size, compression...).
        session: A ``requests.Session`` of your own (corporate proxies, CA bundles, custom adapters, hooks);
            its adapters, ``verify``, ``cert``, proxies and headers are honoured, and it is not closed by
            :meth:`close`. By default the client makes its own session with a pool sized from ``config``.

    Every method accepts ``headers`` (merged over the configured headers for that call only; the dict is not
    changed) and ``timeout`` (a :class:`~inferkit.Timeout`, seconds, or ``(connect, read)``).

    Binary tensors: with ``RESTConfig.binary_data=None`` (the default) the client asks the server once, on the
    first ``infer``, whether it lists the ``binary_tensor_data`` extension (Triton and KServe do, MLServer does
    not) and uses binary framing only then. That request is retried under the client's retry policy. If the
    server answers it with a 4xx (e.g. 404: no ``/v2`` metadata), JSON is used from then on (it works
    everywhere). If it still fails transiently after the retries (5xx, 429, or no answer), that call uses JSON
    and the server is asked again on a later call, at most once per ``RestCalls.PROBE_RETRY_INTERVAL`` (30 s)
    so that a server that always fails is not asked on every call. The probe runs under the call's
    ``timeout``, before the infer itself: set ``binary_data`` to skip it.
    """

    #: ``infer_many`` runs requests on worker threads sharing this client's pool; leaving early or a losing hedge
    #: copy closes that request's connection.
    _many_scope = CancelScope

    def __init__(self, url: str, config: RESTConfig | None = None, session: requests.Session | None = None) -> None:
        if config is None:
            config = RESTConfig()
        elif not isinstance(config, RESTConfig):
            raise ValueError(f"config must be a RESTConfig, got {type(config).__name__}")
        self._config = config
        self._transport = SyncTransport(url, config, session)
        self._calls = RestCalls(config)
        self._binary_lock = threading.Lock()

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
    def close(self) -> None:
        """Close pooled connections (a session passed in by the caller stays open); later calls raise ConnectError
        (the client is closed: make a new one)."""
        self._transport.close()

    def __enter__(self) -> InferenceRESTClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InferenceRESTClient({self.host!r}, protocol={self.protocol_version!r})"

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _do(self, call: RestCall, headers: Headers, timeout: TimeoutLike) -> Any:
        return call.parse(call, self._transport.send(call, headers, timeout))

    def _use_binary(self, headers: Headers, timeout: TimeoutLike) -> bool:
        calls = self._calls
        if not calls.probe_due(time.monotonic()):
            return False  # the last probe failed transiently a moment ago: JSON, without taking the lock
        with self._binary_lock:
            if calls.binary is not None:
                return calls.binary
            if not calls.probe_due(time.monotonic()):
                return False
            try:
                answer = self._do(calls.binary_probe(), headers, timeout)
            except errors.TransportError:
                answer = None
            if answer is None:  # no answer, or 5xx / 429 after the retries: JSON for this call, ask again later
                calls.probe_failed(time.monotonic())
                return False
            return bool(answer)

    # -- inference ------------------------------------------------------------------------------------------------
    def infer(self, request: InferRequest, headers: Headers = None, timeout: TimeoutLike = None) -> InferResponse:
        """Run inference.

        Args:
            request: The request (model, version, inputs, requested outputs, parameters).
            headers: Extra headers for this call.
            timeout: Timeout for this call.

        Returns:
            The response; binary outputs are zero-copy views of the received body.

        Raises:
            EncodeError: The request cannot be encoded (nothing was sent).
            ServerError: The server answered with an error (a subclass per status).
            TransportError: No answer (connect, TLS, timeouts, pool exhausted, deadline).
            DecodeError: The reply is malformed.

        Requests with a ``sequence_id`` parameter are never retried once they may have reached the server.
        On a v1 client the request is converted to ``{"instances": ...}`` and the predictions back to tensors.
        """
        binary = self._calls.binary
        if binary is None:
            check_infer_request(request)  # before the probe, which would trip over tritonclient-style arguments
            binary = self._use_binary(headers, timeout)
        result: InferResponse = self._do(self._calls.infer(request, binary), headers, timeout)
        return result

    def predict(
        self,
        model_name: str,
        instances: Any = None,
        inputs: Any = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """KServe v1 ``:predict`` with ``instances`` (rows) or ``inputs`` (columns); returns the reply dict."""
        result: dict[str, Any] = self._do(self._calls.predict(model_name, instances, inputs), headers, timeout)
        return result

    def explain(
        self,
        model_name: str,
        instances: Any = None,
        inputs: Any = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> Any:
        """KServe v1 ``:explain``; returns the reply's JSON (its shape depends on the explainer)."""
        return self._do(self._calls.explain(model_name, instances, inputs), headers, timeout)

    # -- generate (Triton's generate extension) -----------------------------------------------------------------
    def generate(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """``POST v2/models/{model}/generate``: one answer, as the dict Triton sends (e.g. ``text_output``).

        Args:
            payload: The model's inputs and ``parameters`` as Triton's generate schema has them, e.g.
                ``{"text_input": "Hello", "max_tokens": 16}``.

        Raises:
            ServerError: An error status, or the ``{"error": ...}`` Triton answers with a 200 (e.g. for a model
                that streams several responses: :class:`~inferkit.errors.InvalidInputError`, use
                :meth:`generate_stream`).
            DecodeError: The answer is not a JSON object.

        Retried like ``infer`` (see :class:`~inferkit.config.RetryPolicy`).
        """
        result: dict[str, Any] = self._do(
            self._calls.generate(model_name, model_version, payload, False), headers, timeout
        )
        return result

    def generate_stream(
        self,
        model_name: str,
        payload: Mapping[str, Any],
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> EventStream:
        """``POST v2/models/{model}/generate_stream``: the server-sent events, one dict per event.

        Returns once the first event has arrived (failures before it are retried under the retry policy, never
        after it); iterate for the events, and use it as a context manager (or call ``close()``) to end it early,
        which closes its connection so the server stops generating. The read timeout bounds the wait for each
        event, ``RetryPolicy.deadline`` (or ``Timeout.total``) the whole stream. An error event raises
        :class:`~inferkit.errors.ServerError` naming the model; a malformed event :class:`~inferkit.errors.DecodeError`.

        Example:
            >>> with client.generate_stream("llm", {"text_input": "Hello", "max_tokens": 64}) as events:
            ...     for event in events:
            ...         print(event["text_output"], end="")
        """
        return open_stream(
            self._transport, self._calls.generate(model_name, model_version, payload, True), headers, timeout
        )

    # -- health ---------------------------------------------------------------------------------------------------
    def is_server_live(self, headers: Headers = None, timeout: TimeoutLike = None) -> bool:
        """Whether the server is live. Raises a TransportError if it cannot be reached at all."""
        return bool(self._do(self._calls.server_live(), headers, timeout))

    def is_server_ready(self, headers: Headers = None, timeout: TimeoutLike = None) -> bool:
        """Whether the server is ready (v1: whether it lists its models)."""
        return bool(self._do(self._calls.server_ready(), headers, timeout))

    def is_model_ready(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> bool:
        """Whether a model (version) is ready; False for an unknown model."""
        return bool(self._do(self._calls.model_ready(model_name, model_version), headers, timeout))

    # -- metadata and management (v2) ---------------------------------------------------------------------------
    def get_server_metadata(self, headers: Headers = None, timeout: TimeoutLike = None) -> dict[str, Any]:
        """``GET /v2``: name, version and extensions."""
        result: dict[str, Any] = self._do(self._calls.server_metadata(), headers, timeout)
        return result

    def get_model_metadata(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """A model's metadata: name, versions, platform, inputs and outputs."""
        result: dict[str, Any] = self._do(self._calls.model_metadata(model_name, model_version), headers, timeout)
        return result

    def get_model_config(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """A model's configuration (Triton ``model_configuration`` extension), as JSON."""
        result: dict[str, Any] = self._do(self._calls.model_config(model_name, model_version), headers, timeout)
        return result

    def get_model_statistics(
        self,
        model_name: str | None = None,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """Inference statistics (``statistics`` extension) of one model, or of all models when none is named."""
        result: dict[str, Any] = self._do(self._calls.model_statistics(model_name, model_version), headers, timeout)
        return result

    def get_model_repository_index(self, headers: Headers = None, timeout: TimeoutLike = None) -> list[dict[str, Any]]:
        """The models in the server's repository (``model_repository`` extension)."""
        result: list[dict[str, Any]] = self._do(self._calls.repository_index(), headers, timeout)
        return result

    def load_model(
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
        self._do(self._calls.load_model(model_name, config, files), headers, timeout)

    def unload_model(
        self,
        model_name: str,
        headers: Headers = None,
        timeout: TimeoutLike = None,
        *,
        unload_dependents: bool = False,
    ) -> None:
        """Unload a model (and, with ``unload_dependents``, the models that depend on it)."""
        self._do(self._calls.unload_model(model_name, unload_dependents), headers, timeout)

    # -- trace and log settings (Triton extensions) ------------------------------------------------------------
    def get_trace_settings(
        self, model_name: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
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
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """Change trace settings (e.g. ``{"trace_rate": 100, "trace_level": ["TIMESTAMPS"]}``) of one model or the
        server; a value of None clears a model's own setting. Returns the settings now in force."""
        call = self._calls.trace_settings(model_name, {} if settings is None else settings)
        result: dict[str, Any] = self._do(call, headers, timeout)
        return result

    def get_log_settings(self, headers: Headers = None, timeout: TimeoutLike = None) -> dict[str, Any]:
        """The server's log settings (``logging`` extension), typed: ``{"log_info": True, "log_verbose_level": 0,
        "log_format": "default", "log_file": "", ...}``."""
        result: dict[str, Any] = self._do(self._calls.log_settings(None), headers, timeout)
        return result

    def update_log_settings(
        self, settings: Mapping[str, Any], headers: Headers = None, timeout: TimeoutLike = None
    ) -> dict[str, Any]:
        """Change log settings (bools, ints, str: ``{"log_verbose_level": 1}``); returns the settings now in force."""
        result: dict[str, Any] = self._do(self._calls.log_settings(settings), headers, timeout)
        return result

    # -- system shared memory (Triton extension) ------------------------------------------------------------
    def get_system_shared_memory_status(
        self, region_name: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> list[dict[str, Any]]:
        """Registered system shared memory regions (Triton ``system_shared_memory`` extension).

        Args:
            region_name: Only this region (the server answers an error when it is unknown); None: every region.

        Returns:
            ``[{"name", "key", "offset", "byte_size"}, ...]``.
        """
        result: list[dict[str, Any]] = self._do(self._calls.shm_status(region_name), headers, timeout)
        return result

    def register_system_shared_memory(
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
        self._do(self._calls.shm_register(name, key, byte_size, offset), headers, timeout)

    def unregister_system_shared_memory(
        self, name: str | None = None, headers: Headers = None, timeout: TimeoutLike = None
    ) -> None:
        """Unregister a system shared memory region (None: every region); the region itself is not unlinked."""
        self._do(self._calls.shm_unregister(name), headers, timeout)
