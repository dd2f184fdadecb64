"""Each gRPC client operation as a call description: which RPC, what to send, how to read the reply, when to retry.

Owns: :class:`GRPCCall` (one RPC ready to send) and :class:`GRPCCalls` (the call of each client operation, the same
for the sync and the async client, with the infer reply reader kept per model), the request size from which an infer
request is joined inside each attempt (:data:`LARGE_REQUEST_BYTES`), and :func:`grpc_codec`, the codec modules that
use protobuf, loaded on first use. Sans-IO: the clients' drivers send the calls and feed the replies back.
Must not import: requests, urllib3, aiohttp, grpc; nor protobuf, or a codec module that imports it, at module level
(``import inferkit`` must not load the grpc extra).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Mapping, NamedTuple

from inferkit.codec.repository import load_parameters
from inferkit.codec.tensors import InferRequest
from inferkit.config import RetryPolicy
from inferkit.errors import argument_type_error, infer_argument_error

__all__ = ["LARGE_REQUEST_BYTES", "GRPCCall", "GRPCCalls", "grpc_codec"]

#: Requests whose tensors total at least this many bytes are sent from a request iterator (see the sync client).
LARGE_REQUEST_BYTES = 16 * 1024 * 1024

#: Model names whose infer reply parser a client keeps (see ``GRPCCalls.infer``).
_PARSER_CACHE_SIZE = 256

_CODEC: Any = None


def grpc_codec() -> Any:
    """The codec modules that use protobuf as one namespace: the public names of each, imported on first use.

    What the gRPC clients build messages and read replies with: :mod:`~inferkit.codec.grpc_wire`,
    :mod:`~inferkit.codec.grpc_params`, :mod:`~inferkit.codec.grpc_infer_encode`,
    :mod:`~inferkit.codec.grpc_infer_decode`, :mod:`~inferkit.codec.grpc_reply_reader`,
    :mod:`~inferkit.codec.grpc_stream` and :mod:`~inferkit.codec.grpc_messages`. ImportError when protobuf is missing.
    """
    global _CODEC
    if _CODEC is None:
        from inferkit.codec import (  # noqa: PLC0415 - protobuf is optional (the grpc extra)
            grpc_infer_decode,
            grpc_infer_encode,
            grpc_messages,
            grpc_params,
            grpc_reply_reader,
            grpc_stream,
            grpc_wire,
        )

        names: dict[str, Any] = {}
        for module in (
            grpc_wire,
            grpc_params,
            grpc_infer_encode,
            grpc_infer_decode,
            grpc_reply_reader,
            grpc_stream,
            grpc_messages,
        ):
            names.update((name, getattr(module, name)) for name in module.__all__)
        _CODEC = SimpleNamespace(**names)
    return _CODEC


def _same(reply: Any) -> Any:
    return reply


class GRPCCall(NamedTuple):
    """One RPC ready to send: ``request`` is a message, bytes, or a zero-argument callable building the bytes
    (called once per attempt, for the large-request path); ``parse(reply)`` is the result."""

    rpc: str
    request: Any
    parse: Callable[[Any], Any] = _same
    model_name: str | None = None
    request_id: str | None = None
    retryable: bool = True
    retry_server_codes: bool = True
    probe: bool = False


_new_call = tuple.__new__
assert GRPCCall._fields[-3:] == ("retryable", "retry_server_codes", "probe")


class GRPCCalls:
    """Builds the :class:`GRPCCall` of each client operation (the same for the sync and the async client)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._retry_infer = policy.allows_request(is_infer=True, is_sequence=False)
        # model name -> the parser of its infer replies: made once, not per call (a closure per call is four
        # more objects for the garbage collector to track under many concurrent calls).
        self._infer_parsers: dict[str, Callable[[Any], Any]] = {}

    def probe(self, rpc: str, request: Any, field: str, model_name: str | None = None) -> GRPCCall:
        """A health probe: a server answer other than OK is False (not retried); auth errors and no answer raise."""
        return GRPCCall(
            rpc, request, lambda reply: bool(getattr(reply, field)), model_name, retry_server_codes=False, probe=True
        )

    def server_live(self) -> GRPCCall:
        return self.probe("ServerLive", grpc_codec().pb.ServerLiveRequest(), "live")

    def server_ready(self) -> GRPCCall:
        return self.probe("ServerReady", grpc_codec().pb.ServerReadyRequest(), "ready")

    def model_ready(self, model_name: str, model_version: str | None) -> GRPCCall:
        _model_name(model_name, "is_model_ready")
        return self.probe(
            "ModelReady", grpc_codec().model_ready_request(model_name, model_version), "ready", model_name
        )

    def server_metadata(self, as_message: bool) -> GRPCCall:
        c = grpc_codec()
        return GRPCCall(
            "ServerMetadata", c.pb.ServerMetadataRequest(), _same if as_message else c.server_metadata_to_dict
        )

    def model_metadata(self, model_name: str, model_version: str | None, as_message: bool) -> GRPCCall:
        _model_name(model_name, "get_model_metadata")
        c = grpc_codec()
        parse = _same if as_message else c.model_metadata_to_dict
        return GRPCCall("ModelMetadata", c.model_metadata_request(model_name, model_version), parse, model_name)

    def model_config(self, model_name: str, model_version: str | None, as_message: bool) -> GRPCCall:
        _model_name(model_name, "get_model_config")
        c = grpc_codec()
        parse = _same if as_message else c.model_config_to_dict
        return GRPCCall("ModelConfig", c.model_config_request(model_name, model_version), parse, model_name)

    def model_statistics(self, model_name: str | None, model_version: str | None, as_message: bool) -> GRPCCall:
        if model_name is not None:
            _model_name(model_name, "get_model_statistics")
        c = grpc_codec()
        parse = _same if as_message else c.model_statistics_to_dict
        return GRPCCall("ModelStatistics", c.model_statistics_request(model_name, model_version), parse, model_name)

    def repository_index(self, as_message: bool) -> GRPCCall:
        c = grpc_codec()
        return GRPCCall(
            "RepositoryIndex", c.repository_index_request(), _same if as_message else c.repository_index_to_list
        )

    def load_model(self, model_name: str, config: str | None, files: Mapping[str, bytes] | None) -> GRPCCall:
        _model_name(model_name, "load_model")
        params = load_parameters(model_name, config, files, base64_files=False)
        request = grpc_codec().repository_load_request(model_name, params)
        return GRPCCall("RepositoryModelLoad", request, _none, model_name, retryable=False)

    def unload_model(self, model_name: str, unload_dependents: bool) -> GRPCCall:
        _model_name(model_name, "unload_model")
        params = {"unload_dependents": True} if unload_dependents else None
        request = grpc_codec().repository_unload_request(model_name, params)
        return GRPCCall("RepositoryModelUnload", request, _none, model_name, retryable=False)

    def trace_settings(self, model_name: str | None, settings: Mapping[str, Any] | None) -> GRPCCall:
        """``TraceSetting``: read (``settings`` None) or update, globally or for one model."""
        if model_name is not None:
            _model_name(model_name, "get_trace_settings")
        c = grpc_codec()
        request = c.trace_setting_request(model_name, settings)
        return GRPCCall("TraceSetting", request, c.trace_settings_to_dict, model_name)

    def log_settings(self, settings: Mapping[str, Any] | None) -> GRPCCall:
        """``LogSettings``: read (``settings`` None) or update."""
        c = grpc_codec()
        return GRPCCall("LogSettings", c.log_settings_request(settings), c.log_settings_to_dict)

    def infer(self, request: InferRequest) -> GRPCCall:
        """``ModelInfer``: serialized once; from :data:`LARGE_REQUEST_BYTES` on, joined inside each attempt instead
        (no copy held while the reply arrives). A request with a ``sequence_id`` is never retried."""
        c = _CODEC or grpc_codec()
        if type(request) is not InferRequest and not isinstance(request, InferRequest):
            raise infer_argument_error(request)
        # policy.allows_request(is_infer=True, ...), inlined (the policy is immutable).
        retryable = self._retry_infer and not (request.parameters and request.is_sequence)
        wire, buffers = c.encode_request(request, LARGE_REQUEST_BYTES)
        name = request.model_name
        if buffers is None:
            rpc = "ModelInfer"
        else:
            header = wire
            rpc, wire = "ModelInfer/large", lambda: c.join_request_parts(header, buffers)
        parse = self._infer_parsers.get(name)
        if parse is None:
            if len(self._infer_parsers) >= _PARSER_CACHE_SIZE:
                self._infer_parsers.clear()
            parse = self._infer_parsers[name] = c.ReplyReader(name)
        # GRPCCall(rpc, wire, parse, name, request.request_id, retryable) without the Python-level __new__.
        return _new_call(GRPCCall, (rpc, wire, parse, name, request.request_id, retryable, True, False))


def _none(reply: Any) -> None:
    return None


def _model_name(value: Any, method: str) -> None:
    """A TypeError saying what to pass when a model name is not a str (an InferRequest, a dict...)."""
    if not isinstance(value, str):
        raise argument_type_error(
            f"{method}()", "a model name (a str) first", value, f"client.{method}('my_model', ...)"
        )
