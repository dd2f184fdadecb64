"""The gRPC front end of the reference server (grpc.aio): every RPC of ``inference.GRPCInferenceService``.

Owns: generic method handlers built from ``inferkit.codec.grpc_methods.GRPC_METHODS`` (no generated stubs),
the RPC implementations, auth checks and the gRPC form of every fault. Infer messages are built and parsed only
with the codec's ``grpc_*`` modules (wire bytes in, wire bytes out: pass-through (de)serializers, no extra copies).
Model configurations and statistics, which the server keeps as Triton's JSON, become messages with protobuf's
``json_format``. Must not import: aiohttp.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import json_format

from inferkit.codec.grpc_infer_decode import decode_infer_request
from inferkit.codec.grpc_infer_encode import encode_infer_response, serialize_infer_response
from inferkit.codec.grpc_methods import GRPC_METHODS, SERVICE_NAME, STREAM_STREAM
from inferkit.codec.grpc_stream import serialize_stream_response
from inferkit.codec.grpc_wire import pb
from inferkit.codec.tensors import InferResponse
from inferkit.errors import DecodeError, EncodeError, grpc_code_for_http_status
from inferkit.testing._engine import Engine
from inferkit.testing._faults import Fault, FaultBook
from inferkit.testing._model import ModelError
from inferkit.testing._shm import ALREADY_REGISTERED

__all__ = ["start_grpc_server", "RPC_ROUTES"]

#: RPC name -> the route name used by faults and counters (shared with REST).
RPC_ROUTES = {
    "ServerLive": "live",
    "ServerReady": "ready",
    "ServerMetadata": "server_metadata",
    "ModelMetadata": "model_metadata",
    "ModelReady": "model_ready",
    "ModelInfer": "infer",
    "ModelStreamInfer": "stream_infer",
    "ModelConfig": "model_config",
    "ModelStatistics": "model_statistics",
    "RepositoryIndex": "repository_index",
    "RepositoryModelLoad": "repository_load",
    "RepositoryModelUnload": "repository_unload",
    "SystemSharedMemoryStatus": "shm_status",
    "SystemSharedMemoryRegister": "shm_register",
    "SystemSharedMemoryUnregister": "shm_unregister",
    "CudaSharedMemoryStatus": "shared_memory",
    "CudaSharedMemoryRegister": "shared_memory",
    "CudaSharedMemoryUnregister": "shared_memory",
    "TraceSetting": "trace_setting",
    "LogSettings": "log_settings",
}

_RAW_RPCS = ("ModelInfer", "ModelStreamInfer")  # bytes in, bytes out: the codec does the framing
_MALFORMED = b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field whose length runs past the end
_DROPPED = "Socket closed"  # what a gRPC client reports when the connection goes away mid-call
_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.so_reuseport", 0),
]


class _Abort(Exception):
    """Raised by an RPC implementation to end the call with a status."""

    def __init__(self, code: str, message: str, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing = trailing


def _serialize(reply: Any) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


def _code_for(error: ModelError) -> str:
    return grpc_code_for_http_status(error.status)


def _model_of(rpc: str, request: Any) -> str | None:
    if rpc in ("ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"):
        return request.name or None
    if rpc in ("RepositoryModelLoad", "RepositoryModelUnload", "TraceSetting"):
        return request.model_name or None
    return None


def _fault_abort(fault: Fault) -> _Abort | None:
    """The status a fault ends a call with before it runs (None: the call proceeds)."""
    if fault.action in ("drop_before", "drop_during", "truncate"):
        return _Abort("UNAVAILABLE", _DROPPED)
    if fault.action == "status":
        trailing: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            trailing = (
                ("retry-after", f"{fault.retry_after:g}"),
                ("grpc-retry-pushback-ms", str(int(fault.retry_after * 1000))),
            )
        return _Abort(grpc_code_for_http_status(fault.status), fault.error_message(), trailing)
    if fault.action == "grpc_status":
        return _Abort(fault.code, fault.error_message())
    return None


class _Service:
    """RPC implementations: ``(request, fault) -> reply`` (a message, or wire bytes)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def ServerLive(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802 - RPC names
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        # As Triton: an unknown model (or version) is simply not ready over gRPC (REST answers 404).
        try:
            ready = self.engine.is_ready(request.name, request.version or None)
        except ModelError:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        meta = self.engine.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    async def ModelMetadata(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        model, _ = self.engine.get(request.name, request.version or None)
        reply = pb.ModelMetadataResponse(name=model.name, versions=list(model.versions), platform=model.platform)
        for specs, target in ((model.inputs, reply.inputs), (model.outputs, reply.outputs)):
            for spec in specs:
                target.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        return reply

    async def ModelConfig(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        model, _ = self.engine.get(request.name, request.version or None)
        reply = pb.ModelConfigResponse()
        json_format.ParseDict(self.engine.model_config(model), reply.config, ignore_unknown_fields=True)
        return reply

    async def ModelStatistics(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        stats = self.engine.statistics(request.name or None, request.version or None)
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def RepositoryIndex(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        reply = pb.RepositoryIndexResponse()
        for entry in self.engine.repository_index(request.ready):
            reply.models.add(**entry)
        return reply

    async def RepositoryModelLoad(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        params = {}
        for key, entry in request.parameters.items():
            choice = entry.WhichOneof("parameter_choice")
            params[key] = getattr(entry, choice) if choice else None
        self.engine.load(request.model_name, params)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        self.engine.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def SystemSharedMemoryStatus(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        reply = pb.SystemSharedMemoryStatusResponse()
        for entry in self.engine.shm.status(request.name or None):
            reply.regions[entry["name"]].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(**entry))
        return reply

    async def CudaSharedMemoryStatus(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        return pb.CudaSharedMemoryStatusResponse()

    async def SystemSharedMemoryRegister(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        try:
            self.engine.shm.register(request.name, request.key, request.offset, request.byte_size)
        except ModelError as exc:
            if ALREADY_REGISTERED in exc.message:  # Triton: 400 over REST, but ALREADY_EXISTS over gRPC
                raise _Abort("ALREADY_EXISTS", exc.message) from exc
            raise
        return pb.SystemSharedMemoryRegisterResponse()

    async def CudaSharedMemoryRegister(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        raise _Abort("UNIMPLEMENTED", "CUDA shared memory is not supported by the inferkit reference server")

    async def SystemSharedMemoryUnregister(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        self.engine.shm.unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryUnregister(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        return pb.CudaSharedMemoryUnregisterResponse()

    async def TraceSetting(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        model = request.model_name or None
        if model is not None and not self.engine.loaded.get(model, False):
            raise ModelError(400, f"Request for unknown model : {model}")
        update: dict[str, Any] = {}
        for key, entry in request.settings.items():  # an empty value clears; trace_level is the only list
            values = list(entry.value)
            update[key] = None if not values else values if key == "trace_level" else values[0]
        current = self.engine.settings.update_trace(model, update) if update else self.engine.settings.get_trace(model)
        reply = pb.TraceSettingResponse()
        for key, value in current.items():
            reply.settings[key].value.extend(value if isinstance(value, list) else [value])
        return reply

    async def LogSettings(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        update: dict[str, Any] = {}
        for key, entry in request.settings.items():
            choice = entry.WhichOneof("parameter_choice")
            update[key] = getattr(entry, choice) if choice else None
        current = self.engine.settings.update_log(update)
        reply = pb.LogSettingsResponse()
        for key, value in current.items():
            field = (
                "bool_param"
                if isinstance(value, bool)
                else "uint32_param"
                if isinstance(value, int)
                else "string_param"
            )
            setattr(reply.settings[key], field, value)
        return reply

    async def ModelInfer(self, request: Any, fault: Fault | None) -> Any:  # noqa: N802
        response = await self.engine.infer(request)
        if fault is not None and fault.action == "lie_binary_size" and response.outputs:
            message = encode_infer_response(response)
            extra = fault.value if fault.value is not None else 4
            first = message.raw_output_contents[0]
            message.raw_output_contents[0] = first + b"\0" * extra if extra > 0 else first[:extra]
            return message
        return serialize_infer_response(response)


def _unary_handler(
    rpc: str,
    impl: Callable[[Any, Fault | None], Awaitable[Any]],
    engine: Engine,
    book: FaultBook,
    auth: tuple[str, str] | None,
) -> Callable[[Any, Any], Awaitable[Any]]:
    route = RPC_ROUTES[rpc]

    async def handle(request: Any, context: Any) -> Any:
        engine.last_headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        abort: _Abort | None = None
        reply: Any = None
        model = None
        if rpc == "ModelInfer":
            try:
                request = decode_infer_request(request)
                model = request.model_name
            except (DecodeError, EncodeError) as exc:
                abort = _Abort("INVALID_ARGUMENT", str(exc))
        else:
            model = _model_of(rpc, request)
        fault = book.arrive(route, model, "grpc")
        if fault is not None:
            if fault.action in ("delay", "trickle"):
                await asyncio.sleep(fault.seconds)
            abort = _fault_abort(fault) or abort
        if abort is None and not _authorized(context, auth):
            abort = _Abort("UNAUTHENTICATED", f"missing or wrong '{auth[0]}' metadata: authentication required")  # type: ignore[index]
        if abort is None:
            try:
                reply = await impl(request, fault)
            except asyncio.CancelledError:  # the client cancelled the call (or its deadline ran out)
                engine.abandoned.append((route, "grpc"))
                raise
            except _Abort as exc:
                abort = exc
            except ModelError as exc:
                abort = _Abort(_code_for(exc), exc.message)
            except (DecodeError, EncodeError) as exc:
                abort = _Abort("INVALID_ARGUMENT", str(exc))
            except Exception as exc:  # a bug here or in a model: answer like a server would, with the reason
                abort = _Abort("INTERNAL", f"reference server error: {type(exc).__name__}: {exc}")
        if abort is not None:
            await context.abort(grpc.StatusCode[abort.code], abort.message, trailing_metadata=abort.trailing)
        if fault is not None and fault.action == "malformed_json":
            return _MALFORMED
        return reply

    return handle


def _authorized(context: Any, auth: tuple[str, str] | None) -> bool:
    if auth is None:
        return True
    key = auth[0].lower()
    return any(k == key and v == auth[1] for k, v in (context.invocation_metadata() or ()))


def _stream_handler(
    engine: Engine, book: FaultBook, auth: tuple[str, str] | None
) -> Callable[[AsyncIterator[bytes], Any], AsyncIterator[bytes]]:
    async def handle(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        engine.last_headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        if not _authorized(context, auth):
            assert auth is not None
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong '{auth[0]}' metadata: authentication required"
            )
        async for raw in requests:
            try:
                request = decode_infer_request(raw)
            except (DecodeError, EncodeError) as exc:
                book.arrive("stream_infer", None, "grpc")
                yield serialize_stream_response(error=str(exc))
                continue
            fault = book.arrive("stream_infer", request.model_name, "grpc")
            if fault is not None:
                if fault.action in ("delay", "trickle"):
                    await asyncio.sleep(fault.seconds)
                elif fault.action == "status":
                    yield _stream_error(request, fault.error_message())
                    continue
                elif fault.action == "malformed_json":
                    yield _MALFORMED
                    continue
                else:
                    abort = _fault_abort(fault)
                    if abort is not None:
                        await context.abort(grpc.StatusCode[abort.code], abort.message)
            final_flag = bool(request.parameters.get("triton_enable_empty_final_response", False))
            try:
                async for response in engine.stream(request):
                    if final_flag:
                        response.parameters["triton_final_response"] = False
                    yield serialize_stream_response(response)
            except ModelError as exc:
                yield _stream_error(request, exc.message)
                continue
            except (DecodeError, EncodeError) as exc:
                yield _stream_error(request, str(exc))
                continue
            except (asyncio.CancelledError, GeneratorExit):  # the client cancelled the stream mid-request
                engine.abandoned.append(("stream_infer", "grpc"))
                raise
            if final_flag:
                final = InferResponse(
                    request.model_name,
                    [],
                    model_version=request.model_version or engine.models[request.model_name].latest_version,
                    id=request.request_id,
                    parameters={"triton_final_response": True},
                )
                yield serialize_stream_response(final)

    return handle


def _stream_error(request: Any, message: str) -> bytes:
    """A stream reply carrying ``error_message`` and the request's id (so the client can match it)."""
    header = InferResponse(request.model_name, [], id=request.request_id)
    return serialize_stream_response(header, error=message)


async def start_grpc_server(
    engine: Engine,
    book: FaultBook,
    auth: tuple[str, str] | None,
    tls: Any,
    host: str,
    port: int,
) -> tuple[Any, int]:
    """Create, bind and start the grpc.aio server on the running loop; returns (server, bound port)."""
    server = grpc.aio.server(options=_OPTIONS)
    service = _Service(engine)
    handlers = {}
    for name, method in GRPC_METHODS.items():
        if method.kind == STREAM_STREAM:
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                _stream_handler(engine, book, auth), request_deserializer=None, response_serializer=_serialize
            )
            continue
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _unary_handler(name, getattr(service, name), engine, book, auth),
            request_deserializer=None if name in _RAW_RPCS else method.request_type.FromString,
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    address = f"{host}:{port}"
    if tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(tls.key_pem, tls.cert_pem)],
            root_certificates=tls.client_ca_pem,
            require_client_auth=tls.client_ca_pem is not None,
        )
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"gRPC could not bind {address}")
    await server.start()
    return server, bound
