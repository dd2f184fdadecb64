"""The sync REST client: :class:`InferenceRESTClient` (Open Inference Protocol v2 and KServe v1).

Owns: the public sync REST API. Each method is a few lines: the codec builds the body and route, the transport
(:mod:`inferkit._http`) sends it with pooling, retries and error mapping, the codec parses the reply.
Must not import: aiohttp, grpc, inferkit.aio, inferkit.grpc_client.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Optional

import requests

from inferkit import errors
from inferkit._http import HTTPResponse, SyncTransport
from inferkit.codec import _json, rest_v1, rest_v2
from inferkit.codec.routes import Route, v1, v2
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.config import RESTConfig, TimeoutLike

__all__ = ["InferenceRESTClient"]

Headers = Optional[Mapping[str, str]]
_JSON_HEADERS = {"Content-Type": rest_v2.JSON_CONTENT_TYPE}
_EMPTY_JSON = b"{}"


class InferenceRESTClient:
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
    not) and uses binary framing only then. If the server answers that metadata request with an error, JSON is
    used from then on (it works everywhere); if the server cannot be reached, the decision is postponed to the
    next call.
    """

    def __init__(self, url: str, config: RESTConfig | None = None, session: requests.Session | None = None) -> None:
        if config is None:
            config = RESTConfig()
        elif not isinstance(config, RESTConfig):
            raise ValueError(f"config must be a RESTConfig, got {type(config).__name__}")
        self._config = config
        self._transport = SyncTransport(url, config, session)
        self._v2 = config.protocol == "v2"
        self._binary: bool | None = config.binary_data
        self._binary_lock = threading.Lock()
        self._infer_paths: dict[tuple[str, str | None], str] = {}
        self._retry_infer = config.retry_policy.allows_request(is_infer=True, is_sequence=False)

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
        """Close pooled connections (a session passed in by the caller stays open)."""
        self._transport.close()

    def __enter__(self) -> InferenceRESTClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InferenceRESTClient({self.host!r}, protocol={self.protocol_version!r})"

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _require_v2(self, operation: str) -> None:
        if not self._v2:
            raise errors.UnsupportedOperationError(
                f"{operation} is part of the Open Inference Protocol v2; this client speaks KServe v1 "
                "(RESTConfig(protocol='v1')). Use protocol='v2' against a v2 endpoint."
            )

    def _require_v1(self, operation: str) -> None:
        if self._v2:
            raise errors.UnsupportedOperationError(
                f"{operation} is a KServe v1 call; this client speaks the Open Inference Protocol v2. "
                "Create the client with RESTConfig(protocol='v1') for a v1 endpoint."
            )

    def _send(
        self,
        route: Route,
        body: bytes | None = None,
        *,
        headers: Headers,
        timeout: TimeoutLike,
        content_headers: Mapping[str, str] | None = None,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> HTTPResponse:
        return self._transport.request(
            route.method,
            route.path,
            body,
            content_headers=content_headers if content_headers is not None else (_JSON_HEADERS if body else None),
            headers=headers,
            timeout=timeout,
            model_name=model_name,
            **kwargs,
        )

    def _get_json(self, route: Route, *, headers: Headers, timeout: TimeoutLike, model_name: str | None = None) -> Any:
        resp = self._send(route, headers=headers, timeout=timeout, model_name=model_name)
        return _json.loads(resp.body, what=f"reply to {route.method} {route.path}") if resp.body else None

    def _check(self, route: Route, *, headers: Headers, timeout: TimeoutLike, model_name: str | None = None) -> bool:
        """A health/readiness probe: 200 -> True; another answer -> False; auth errors and no answer raise."""
        resp = self._send(
            route,
            headers=headers,
            timeout=timeout,
            model_name=model_name,
            retry_statuses=False,
            raise_for_status=False,
        )
        if resp.status in (401, 403):
            message = rest_v2.decode_error_body(resp.body, default=f"HTTP {resp.status}")
            raise errors.error_for_http_status(
                resp.status, message, model_name=model_name, attempts=resp.attempts
            )
        return 200 <= resp.status < 300

    def _use_binary(self, headers: Headers, timeout: TimeoutLike) -> bool:
        binary = self._binary
        if binary is not None:
            return binary
        with self._binary_lock:
            if self._binary is not None:
                return self._binary
            try:
                resp = self._transport.request(
                    "GET",
                    v2.server_metadata().path,
                    headers=headers,
                    timeout=timeout,
                    retryable=False,
                    retry_statuses=False,
                    raise_for_status=False,
                )
            except errors.TransportError:
                return False  # unknown yet: JSON for this call, ask again next time
            supported = False
            if resp.status == 200:
                try:
                    meta = _json.loads(resp.body, what="server metadata")
                    supported = isinstance(meta, dict) and rest_v2.supports_binary(meta)
                except errors.DecodeError:
                    supported = False
            self._binary = supported
            return supported

    def _infer_path(self, model_name: str, model_version: str | None) -> str:
        key = (model_name, model_version)
        path = self._infer_paths.get(key)
        if path is None:
            path = v2.infer(model_name, model_version).path
            if len(self._infer_paths) < 4096:  # bounded: model names come from callers
                self._infer_paths[key] = path
        return path

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
        if not isinstance(request, InferRequest):
            raise errors.EncodeError(f"infer() needs an InferRequest, got {type(request).__name__}")
        name = request.model_name
        if not self._v2:
            body = _json.dumps(rest_v1.v2_request_to_v1_body(request))
            reply = self._v1_call(v1.predict(name), body, name, headers, timeout, request.is_sequence)
            return rest_v1.v1_body_to_v2_response(
                rest_v1.decode_predict_response(reply, model_name=name), name
            )
        encoded = rest_v2.encode_infer_request(request, binary=self._use_binary(headers, timeout))
        resp = self._transport.request(
            "POST",
            self._infer_path(name, request.model_version),
            encoded.body,
            content_headers=encoded.headers,
            headers=headers,
            timeout=timeout,
            retryable=self._retry_infer and not request.is_sequence,
            model_name=name,
            request_id=request.request_id,
        )
        header_length = rest_v2.parse_header_length(
            resp.header(rest_v2.HEADER_LENGTH), len(resp.body), f"response of model {name!r}"
        )
        return rest_v2.decode_infer_response(resp.body, header_length, model_name=name)

    def _v1_call(
        self, route: Route, body: bytes, model_name: str, headers: Headers, timeout: TimeoutLike, sequence: bool = False
    ) -> bytes:
        resp = self._send(
            route,
            body,
            headers=headers,
            timeout=timeout,
            model_name=model_name,
            retryable=self._config.retry_policy.allows_request(is_infer=True, is_sequence=sequence),
        )
        return resp.body

    def predict(
        self,
        model_name: str,
        instances: Any = None,
        inputs: Any = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """KServe v1 ``:predict`` with ``instances`` (rows) or ``inputs`` (columns); returns the reply dict."""
        self._require_v1("predict()")
        body = rest_v1.encode_predict_request(instances, inputs=inputs, model_name=model_name)
        reply = self._v1_call(v1.predict(model_name), body, model_name, headers, timeout)
        return rest_v1.decode_predict_response(reply, model_name=model_name)

    def explain(
        self,
        model_name: str,
        instances: Any = None,
        inputs: Any = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> Any:
        """KServe v1 ``:explain``; returns the reply's JSON (its shape depends on the explainer)."""
        self._require_v1("explain()")
        body = rest_v1.encode_predict_request(instances, inputs=inputs, model_name=model_name)
        reply = self._v1_call(v1.explain(model_name), body, model_name, headers, timeout)
        return rest_v1.decode_explain_response(reply, model_name=model_name)

    # -- health ---------------------------------------------------------------------------------------------------
    def is_server_live(self, headers: Headers = None, timeout: TimeoutLike = None) -> bool:
        """Whether the server is live. Raises a TransportError if it cannot be reached at all."""
        route = v2.server_live() if self._v2 else v1.server_live()
        return self._check(route, headers=headers, timeout=timeout)

    def is_server_ready(self, headers: Headers = None, timeout: TimeoutLike = None) -> bool:
        """Whether the server is ready (v1: whether it lists its models)."""
        route = v2.server_ready() if self._v2 else v1.list_models()
        return self._check(route, headers=headers, timeout=timeout)

    def is_model_ready(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> bool:
        """Whether a model (version) is ready; False for an unknown model."""
        if self._v2:
            return self._check(
                v2.model_ready(model_name, model_version), headers=headers, timeout=timeout, model_name=model_name
            )
        resp = self._send(
            v1.model_ready(model_name),
            headers=headers,
            timeout=timeout,
            model_name=model_name,
            retry_statuses=False,
            raise_for_status=False,
        )
        if resp.status in (401, 403):
            raise errors.error_for_http_status(
                resp.status, rest_v2.decode_error_body(resp.body), model_name=model_name, attempts=resp.attempts
            )
        if resp.status != 200:
            return False
        try:
            body = _json.loads(resp.body, what=f"v1 model status of {model_name!r}")
        except errors.DecodeError:
            return True
        return bool(body.get("ready", True)) if isinstance(body, dict) else True

    # -- metadata and management (v2) ---------------------------------------------------------------------------
    def get_server_metadata(self, headers: Headers = None, timeout: TimeoutLike = None) -> dict[str, Any]:
        """``GET /v2``: name, version and extensions."""
        self._require_v2("get_server_metadata()")
        result: dict[str, Any] = self._get_json(v2.server_metadata(), headers=headers, timeout=timeout)
        return result

    def get_model_metadata(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """A model's metadata: name, versions, platform, inputs and outputs."""
        self._require_v2("get_model_metadata()")
        result: dict[str, Any] = self._get_json(
            v2.model_metadata(model_name, model_version), headers=headers, timeout=timeout, model_name=model_name
        )
        return result

    def get_model_config(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """A model's configuration (Triton ``model_configuration`` extension), as JSON."""
        self._require_v2("get_model_config()")
        result: dict[str, Any] = self._get_json(
            v2.model_config(model_name, model_version), headers=headers, timeout=timeout, model_name=model_name
        )
        return result

    def get_model_statistics(
        self,
        model_name: str | None = None,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: TimeoutLike = None,
    ) -> dict[str, Any]:
        """Inference statistics (``statistics`` extension) of one model, or of all models when none is named."""
        self._require_v2("get_model_statistics()")
        result: dict[str, Any] = self._get_json(
            v2.model_statistics(model_name, model_version), headers=headers, timeout=timeout, model_name=model_name
        )
        return result

    def get_model_repository_index(self, headers: Headers = None, timeout: TimeoutLike = None) -> list[dict[str, Any]]:
        """The models in the server's repository (``model_repository`` extension)."""
        self._require_v2("get_model_repository_index()")
        resp = self._send(v2.repository_index(), _EMPTY_JSON, headers=headers, timeout=timeout)
        result = _json.loads(resp.body, what="repository index") if resp.body else []
        if not isinstance(result, list):
            raise errors.DecodeError(f"the repository index must be a JSON list, got {type(result).__name__}")
        return result

    def load_model(self, model_name: str, headers: Headers = None, timeout: TimeoutLike = None) -> None:
        """Load (or reload) a model (``model_repository`` extension)."""
        self._require_v2("load_model()")
        self._send(v2.repository_load(model_name), _EMPTY_JSON, headers=headers, timeout=timeout, model_name=model_name)

    def unload_model(self, model_name: str, headers: Headers = None, timeout: TimeoutLike = None) -> None:
        """Unload a model (``model_repository`` extension)."""
        self._require_v2("unload_model()")
        self._send(
            v2.repository_unload(model_name), _EMPTY_JSON, headers=headers, timeout=timeout, model_name=model_name
        )
