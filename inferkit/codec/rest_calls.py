"""Every REST client operation as data: what to send, how to retry it, and how to read the reply.

Owns: :class:`RestCalls`, which turns each public method of the REST clients (sync and async alike) into a
:class:`RestCall` (method, path, body, content headers, retry flags, context for errors, and the function that
interprets the reply), the health-probe semantics, the binary-tensor auto-detection decision, and the mapping of
an error reply to a typed error. A client method is then: ``call = calls.op(...)``; the transport sends it (with
retries) and returns a :class:`Reply`; ``call.parse(reply)`` is the result. Sync and async clients share all of
it and differ only in ``await``.
Must not import: requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import quote

from inferkit import errors
from inferkit.codec import _json, generate, rest_v1, rest_v2
from inferkit.codec.repository import load_parameters
from inferkit.codec.routes import Route, v1, v2
from inferkit.codec.server_settings import (
    log_settings_wire,
    read_log_settings,
    read_trace_settings,
    trace_settings_wire,
)
from inferkit.codec.sse import Event, SSEDecoder
from inferkit.codec.tensors import InferRequest, InferRequestedOutput, check_shm_registration
from inferkit.config import RESTConfig, parse_retry_after

__all__ = ["Reply", "Opened", "RestCall", "RestCalls", "check_infer_request", "reply_error"]

Parser = Callable[["RestCall", "Reply"], Any]

_JSON_HEADERS: Mapping[str, str] = {"Content-Type": rest_v2.JSON_CONTENT_TYPE}
_STREAM_HEADERS: Mapping[str, str] = {"Content-Type": rest_v2.JSON_CONTENT_TYPE, "Accept": generate.EVENT_STREAM}
_EMPTY_JSON = b"{}"


@dataclass(slots=True)  # one per request: no per-instance dict
class Reply:
    """A complete reply: status, headers (case-insensitive ``get``), the whole body in one buffer (bytes, or a
    bytearray for large bodies read in place; binary outputs are views of it)."""

    status: int
    headers: Any
    body: bytes | bytearray
    attempts: int = 1

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)


@dataclass(slots=True)
class Opened(Reply):
    """The start of a 2xx event stream, as a transport's attempt returns it once the first event is complete:
    the decoder, the events read so far, whether the stream already ended, and the transport's open ``source``."""

    source: Any = None
    decoder: SSEDecoder = field(default_factory=SSEDecoder)
    events: list[Event] = field(default_factory=list)
    ended: bool = False

    def feed(self, chunk: bytes) -> bool:
        """Decode a chunk read before the first event; True once the first event is complete or the stream ended
        (an empty chunk: the source is released)."""
        if not chunk:
            self.events += self.decoder.end()
            self.ended = True
            self.source.release()
            return True
        self.events += self.decoder.feed(chunk)
        return bool(self.events)


#: Triton answers its ALREADY_EXISTS errors with HTTP 400 over REST (ALREADY_EXISTS over gRPC, a ConflictError); the
#: only ones a client meets are its shared memory managers' "shared memory region '<name>' already in manager"
#: (2.51's exact words, system and CUDA regions). Recognised so that REST raises ConflictError too: one meaning, one
#: class on both protocols. ``status_code`` stays the 400 the server sent.
_ALREADY_REGISTERED = "already in manager"


def reply_error(reply: Reply, *, model_name: str | None = None, request_id: str | None = None) -> errors.ServerError:
    """The typed error of an error reply (status, the server's message, Retry-After, attempts)."""
    status = reply.status
    message = rest_v2.decode_error_body(reply.body, default=f"HTTP {status}")
    retry_after = parse_retry_after(reply.headers)
    if status == 400 and _ALREADY_REGISTERED in message:
        return errors.ConflictError(
            message,
            status_code=status,
            retry_after=retry_after,
            model_name=model_name,
            request_id=request_id,
            attempts=reply.attempts,
        )
    return errors.error_for_http_status(
        status, message, retry_after=retry_after, model_name=model_name, request_id=request_id, attempts=reply.attempts
    )


def _no_result(call: RestCall, reply: Reply) -> None:
    return None


@dataclass(frozen=True, slots=True)  # one per request: no per-instance dict, half the construction time
class RestCall:
    """One operation ready to send.

    Attributes:
        method: HTTP method.
        path: Path relative to the client's base URL.
        body: Request body, built once and resent as is by retries (a large binary infer body is a
            :class:`~inferkit.codec.rest_v2.BodyParts`: transports that write parts send it without joining).
        content_headers: Headers describing the body.
        parse: ``parse(call, reply)`` turns the final reply into the method's result (or raises).
        retryable: Whether the request may be sent again once it may have reached the server.
        retry_statuses: Whether retryable statuses are retried (False for probes: the status is the answer).
        raise_for_status: Whether an error status raises (else ``parse`` sees it).
        model_name: For errors.
        request_id: For errors.
    """

    method: str
    path: str
    body: bytes | rest_v2.BodyParts | None = None
    content_headers: Mapping[str, str] | None = None
    parse: Parser = _no_result
    retryable: bool = True
    retry_statuses: bool = True
    raise_for_status: bool = True
    model_name: str | None = None
    request_id: str | None = None


class RestCalls:
    """Builds the :class:`RestCall` of each client operation for one client (protocol and retry settings).

    Also holds the client's binary-tensor decision (:attr:`binary`): None until known.
    """

    #: Seconds during which no new binary probe is sent after one failed transiently (5xx, 429 or no answer,
    #: retries spent): calls in between use JSON. A server that always fails is asked at most once per interval.
    PROBE_RETRY_INTERVAL = 30.0

    def __init__(self, config: RESTConfig) -> None:
        self.v2 = config.protocol == "v2"
        self._policy = config.retry_policy
        self._retry_infer = self._policy.allows_request(is_infer=True, is_sequence=False)
        # v1 has no binary framing: nothing to decide.
        self.binary: bool | None = config.binary_data if self.v2 else False
        self._infer_paths: dict[tuple[str, str | None], str] = {}
        # Monotonic time before which no new binary probe is sent (after a transient failure); the clients own
        # the clock, this module none.
        self._probe_after = 0.0

    # -- protocol guards -----------------------------------------------------------------------------------------
    def _require_v2(self, operation: str) -> None:
        if not self.v2:
            raise errors.UnsupportedOperationError(
                f"{operation} is part of the Open Inference Protocol v2; this client speaks KServe v1 "
                "(RESTConfig(protocol='v1')). Use protocol='v2' against a v2 endpoint."
            )

    def _require_v1(self, operation: str) -> None:
        if self.v2:
            raise errors.UnsupportedOperationError(
                f"{operation} is a KServe v1 call; this client speaks the Open Inference Protocol v2. "
                "Create the client with RESTConfig(protocol='v1') for a v1 endpoint."
            )

    # -- health ------------------------------------------------------------------------------------------------
    def server_live(self) -> RestCall:
        return _probe(v2.server_live() if self.v2 else v1.server_live())

    def server_ready(self) -> RestCall:
        return _probe(v2.server_ready() if self.v2 else v1.list_models())

    def model_ready(self, model_name: str, model_version: str | None) -> RestCall:
        _model_name(model_name, "is_model_ready")
        if self.v2:
            return _probe(v2.model_ready(model_name, model_version), model_name)
        return _probe(v1.model_ready(model_name), model_name, _v1_ready)

    # -- metadata and management ------------------------------------------------------------------------------
    def server_metadata(self) -> RestCall:
        self._require_v2("get_server_metadata()")
        return _get_json(v2.server_metadata())

    def model_metadata(self, model_name: str, model_version: str | None) -> RestCall:
        self._require_v2("get_model_metadata()")
        _model_name(model_name, "get_model_metadata")
        return _get_json(v2.model_metadata(model_name, model_version), model_name)

    def model_config(self, model_name: str, model_version: str | None) -> RestCall:
        self._require_v2("get_model_config()")
        _model_name(model_name, "get_model_config")
        return _get_json(v2.model_config(model_name, model_version), model_name)

    def model_statistics(self, model_name: str | None, model_version: str | None) -> RestCall:
        self._require_v2("get_model_statistics()")
        if model_name is not None:
            _model_name(model_name, "get_model_statistics")
        return _get_json(v2.model_statistics(model_name, model_version), model_name)

    def repository_index(self) -> RestCall:
        self._require_v2("get_model_repository_index()")
        return _post_json(v2.repository_index(), None, _repository_index)

    def load_model(self, model_name: str, config: str | None, files: Mapping[str, bytes] | None) -> RestCall:
        self._require_v2("load_model()")
        _model_name(model_name, "load_model")
        params = load_parameters(model_name, config, files, base64_files=True)
        route = v2.repository_load(model_name)
        if not params:
            return _post_json(route, model_name)
        body = _json.dumps({"parameters": params})
        return RestCall(route.method, route.path, body, _JSON_HEADERS, retryable=False, model_name=model_name)

    def unload_model(self, model_name: str, unload_dependents: bool) -> RestCall:
        self._require_v2("unload_model()")
        _model_name(model_name, "unload_model")
        route = v2.repository_unload(model_name)
        if not unload_dependents:
            return _post_json(route, model_name)
        body = _json.dumps({"parameters": {"unload_dependents": True}})
        return RestCall(route.method, route.path, body, _JSON_HEADERS, model_name=model_name)

    # -- trace and log settings (Triton extensions) ------------------------------------------------------------
    def trace_settings(self, model_name: str | None, settings: Mapping[str, Any] | None) -> RestCall:
        """GET (``settings`` None) or POST the trace settings, globally or of one model; parsed to the shared dict."""
        self._require_v2("get_trace_settings()" if settings is None else "update_trace_settings()")
        if model_name is not None:
            _model_name(model_name, "get_trace_settings")
        route = v2.trace_setting(model_name, update=settings is not None)
        if settings is None:
            return RestCall(route.method, route.path, parse=_trace_reply, model_name=model_name)
        body = _json.dumps(trace_settings_wire(settings, f"trace settings of {model_name or 'server'}"))
        return RestCall(route.method, route.path, body, _JSON_HEADERS, parse=_trace_reply, model_name=model_name)

    def log_settings(self, settings: Mapping[str, Any] | None) -> RestCall:
        """GET (``settings`` None) or POST the log settings."""
        self._require_v2("get_log_settings()" if settings is None else "update_log_settings()")
        route = v2.logging(update=settings is not None)
        if settings is None:
            return RestCall(route.method, route.path, parse=_log_reply)
        body = _json.dumps(log_settings_wire(settings, "log settings"))
        return RestCall(route.method, route.path, body, _JSON_HEADERS, parse=_log_reply)

    # -- system shared memory (Triton extension) ----------------------------------------------------------------
    def shm_status(self, region_name: str | None) -> RestCall:
        self._require_v2("get_system_shared_memory_status()")
        return RestCall("GET", _shm_path(region_name, "status"), parse=_shm_status_reply)

    def shm_register(self, name: str, key: str, byte_size: int, offset: int) -> RestCall:
        self._require_v2("register_system_shared_memory()")
        name, key, byte_size, offset = check_shm_registration(name, key, byte_size, offset)
        body = _json.dumps({"key": key, "offset": offset, "byte_size": byte_size})
        # Not resent once it may have arrived: a second register of the same name is a 409 that would hide success.
        return RestCall("POST", _shm_path(name, "register"), body, _JSON_HEADERS, retryable=False)

    def shm_unregister(self, name: str | None) -> RestCall:
        self._require_v2("unregister_system_shared_memory()")
        return RestCall("POST", _shm_path(name, "unregister"), _EMPTY_JSON, _JSON_HEADERS)

    # -- binary tensor detection -----------------------------------------------------------------------------
    def binary_probe(self) -> RestCall:
        """Ask the server whether it lists ``binary_tensor_data``; ``parse`` records and returns the answer.

        The probe is retried under the client's retry policy like any GET (a 5xx, 429 or lost connection is
        transient). Its parse returns True / False for an answer, which is final: a 200 (binary if the extension
        is listed) or another 4xx such as 404 (the server has no ``/v2`` metadata: JSON, which works everywhere,
        from then on). It returns None when the server still answers 5xx or 429 once the retries are spent; the
        client then uses JSON for that call and calls :meth:`probe_failed`, as it does when the probe raises a
        TransportError (no answer at all).
        """
        route = v2.server_metadata()
        return RestCall(route.method, route.path, parse=self._record_binary, raise_for_status=False)

    def _record_binary(self, call: RestCall, reply: Reply) -> bool | None:
        status = reply.status
        if status == 429 or status >= 500:
            return None  # transient: undecided, ask again later
        supported = False
        if status == 200:
            try:
                meta = _json.loads(reply.body, what="server metadata")
                supported = isinstance(meta, dict) and rest_v2.supports_binary(meta)
            except errors.DecodeError:
                supported = False
        self.binary = supported
        return supported

    def probe_due(self, now: float) -> bool:
        """Whether a binary probe may be sent at monotonic time ``now`` (see :attr:`PROBE_RETRY_INTERVAL`)."""
        return now >= self._probe_after

    def probe_failed(self, now: float) -> None:
        """Record that the binary probe failed transiently at monotonic time ``now``: no new probe for a while."""
        self._probe_after = now + self.PROBE_RETRY_INTERVAL

    # -- inference ---------------------------------------------------------------------------------------------
    def infer(self, request: InferRequest, binary: bool) -> RestCall:
        """An infer (v2), or on a v1 client a ``:predict`` with the request converted to instances."""
        if not isinstance(request, InferRequest):
            raise errors.infer_argument_error(request)
        name = request.model_name
        if not self.v2:
            body = _json.dumps(rest_v1.v2_request_to_v1_body(request))
            return self._v1_call(v1.predict(name), body, name, _v1_as_v2_response, request.is_sequence)
        encoded = rest_v2.encode_infer_request(request, binary=binary)
        shared = rest_v2.shared_memory_outputs(request.outputs)
        return RestCall(
            "POST",
            self._infer_path(name, request.model_version),
            encoded.payload,
            encoded.headers,
            parse=_infer_reply if shared is None else _ShmInferReply(request.outputs or ()),
            retryable=self._retry_infer and not request.is_sequence,
            model_name=name,
            request_id=request.request_id,
        )

    def generate(self, model_name: str, model_version: str | None, payload: Any, stream: bool) -> RestCall:
        """Triton's ``/generate`` (parsed into a dict) or ``/generate_stream`` (the transport reads its events)."""
        self._require_v2("generate")
        body = generate.encode_payload(model_name, payload)
        route = v2.generate(model_name, model_version, stream)
        return RestCall(
            route.method,
            route.path,
            body,
            _STREAM_HEADERS if stream else _JSON_HEADERS,
            parse=_no_result if stream else _generate_reply,
            retryable=self._retry_infer,
            model_name=model_name,
        )

    def predict(self, model_name: str, instances: Any, inputs: Any) -> RestCall:
        self._require_v1("predict()")
        _model_name(model_name, "predict", _V1_USAGE.format(method="predict"))
        body = rest_v1.encode_predict_request(instances, inputs=inputs, model_name=model_name)
        return self._v1_call(v1.predict(model_name), body, model_name, _predict_reply)

    def explain(self, model_name: str, instances: Any, inputs: Any) -> RestCall:
        self._require_v1("explain()")
        _model_name(model_name, "explain", _V1_USAGE.format(method="explain"))
        body = rest_v1.encode_predict_request(instances, inputs=inputs, model_name=model_name)
        return self._v1_call(v1.explain(model_name), body, model_name, _explain_reply)

    def _v1_call(
        self,
        route: Route,
        body: bytes,
        model_name: str,
        parse: Parser,
        sequence: bool = False,
    ) -> RestCall:
        return RestCall(
            route.method,
            route.path,
            body,
            _JSON_HEADERS,
            parse=parse,
            retryable=self._policy.allows_request(is_infer=True, is_sequence=sequence),
            model_name=model_name,
        )

    def _infer_path(self, model_name: str, model_version: str | None) -> str:
        key = (model_name, model_version)
        path = self._infer_paths.get(key)
        if path is None:
            path = v2.infer(model_name, model_version).path
            if len(self._infer_paths) < 4096:  # bounded: model names come from callers
                self._infer_paths[key] = path
        return path


# -- argument checks --------------------------------------------------------------------------------------------
_V1_USAGE = (
    "client.{method}('my_model', instances=[...]) (or inputs=...); to send an InferRequest to a v1 server, "
    "use client.infer(request), which converts it to instances"
)


def _model_name(value: Any, method: str, usage: str | None = None) -> None:
    """A TypeError saying what to pass when a model name is not a str (an InferRequest, a dict...)."""
    if not isinstance(value, str):
        raise errors.argument_type_error(
            f"{method}()", "a model name (a str) first", value, usage or f"client.{method}('my_model', ...)"
        )


def check_infer_request(request: Any) -> None:
    """The TypeError of :func:`~inferkit.errors.infer_argument_error` when ``request`` is not an InferRequest
    (the REST clients check before their binary probe, which would otherwise fail on the misplaced arguments)."""
    if not isinstance(request, InferRequest):
        raise errors.infer_argument_error(request)


# -- reply interpretation ----------------------------------------------------------------------------------------
def _probe(route: Route, model_name: str | None = None, parse: Parser | None = None) -> RestCall:
    return RestCall(
        route.method,
        route.path,
        parse=parse or _probe_reply,
        retry_statuses=False,
        raise_for_status=False,
        model_name=model_name,
    )


def _probe_reply(call: RestCall, reply: Reply) -> bool:
    """A health/readiness probe: 2xx -> True; another answer -> False (not retried); auth errors raise."""
    if reply.status in (401, 403):
        raise reply_error(reply, model_name=call.model_name)
    return 200 <= reply.status < 300


def _v1_ready(call: RestCall, reply: Reply) -> bool:
    if not _probe_reply(call, reply) or reply.status != 200:
        return False
    try:
        body = _json.loads(reply.body, what=f"v1 model status of {call.model_name!r}")
    except errors.DecodeError:
        return True
    return bool(body.get("ready", True)) if isinstance(body, dict) else True


def _json_reply(call: RestCall, reply: Reply) -> Any:
    return _json.loads(reply.body, what=f"reply to {call.method} {call.path}") if reply.body else None


def _get_json(route: Route, model_name: str | None = None) -> RestCall:
    return RestCall(route.method, route.path, parse=_json_reply, model_name=model_name)


def _post_json(route: Route, model_name: str | None, parse: Parser = _no_result) -> RestCall:
    return RestCall(route.method, route.path, _EMPTY_JSON, _JSON_HEADERS, parse=parse, model_name=model_name)


def _trace_reply(call: RestCall, reply: Reply) -> dict[str, Any]:
    return read_trace_settings(_json.loads(reply.body, what="trace settings"))


def _log_reply(call: RestCall, reply: Reply) -> dict[str, Any]:
    return read_log_settings(_json.loads(reply.body, what="log settings"))


def _repository_index(call: RestCall, reply: Reply) -> list[dict[str, Any]]:
    result = _json.loads(reply.body, what="repository index") if reply.body else []
    if not isinstance(result, list):
        raise errors.DecodeError(f"the repository index must be a JSON list, got {type(result).__name__}")
    return result


def _generate_reply(call: RestCall, reply: Reply) -> Any:
    return generate.decode_answer(call.model_name, reply.body)


def _infer_reply(call: RestCall, reply: Reply) -> Any:
    name = call.model_name
    header_length = rest_v2.parse_header_length(
        reply.header(rest_v2.HEADER_LENGTH), len(reply.body), f"response of model {name!r}"
    )
    return rest_v2.decode_infer_response(reply.body, header_length, model_name=name)


class _ShmInferReply:
    """Parses an infer reply whose request asked for outputs in shared memory (a server may not echo them)."""

    __slots__ = ("requested",)

    def __init__(self, requested: Any) -> None:
        self.requested: list[InferRequestedOutput] = list(requested)

    def __call__(self, call: RestCall, reply: Reply) -> Any:
        name = call.model_name
        header_length = rest_v2.parse_header_length(
            reply.header(rest_v2.HEADER_LENGTH), len(reply.body), f"response of model {name!r}"
        )
        return rest_v2.decode_infer_response(reply.body, header_length, model_name=name, requested=self.requested)


def _shm_path(region_name: str | None, action: str) -> str:
    if region_name in (None, ""):
        return f"/v2/systemsharedmemory/{action}"
    if not isinstance(region_name, str):
        raise errors.EncodeError(f"shared memory region name must be a string, got {region_name!r}")
    return f"/v2/systemsharedmemory/region/{quote(region_name, safe='')}/{action}"


def _shm_status_reply(call: RestCall, reply: Reply) -> list[dict[str, Any]]:
    result = _json.loads(reply.body, what="shared memory status") if reply.body else []
    if isinstance(result, dict):  # tolerate a single object
        result = [result]
    if not isinstance(result, list):
        raise errors.DecodeError(f"the shared memory status must be a JSON list, got {type(result).__name__}")
    return result


def _v1_as_v2_response(call: RestCall, reply: Reply) -> Any:
    name = call.model_name or ""
    return rest_v1.v1_body_to_v2_response(rest_v1.decode_predict_response(reply.body, model_name=name), name)


def _predict_reply(call: RestCall, reply: Reply) -> Any:
    return rest_v1.decode_predict_response(reply.body, model_name=call.model_name or "")


def _explain_reply(call: RestCall, reply: Reply) -> Any:
    return rest_v1.decode_explain_response(reply.body, model_name=call.model_name or "")
