"""The RPC table of the Open Inference Protocol v2 gRPC service, ``inference.GRPCInferenceService``.

Owns: for every RPC, its wire path, its request and response message classes and its streaming kind.
The sync (grpcio) and async (grpc.aio) clients build their callables from this table, for example::

    m = GRPC_METHODS["ModelInfer"]
    call = channel.unary_unary(
        m.path,
        request_serializer=m.request_type.SerializeToString,
        response_deserializer=m.response_type.FromString,
    )

and the reference server builds its generic handlers from it, with ``SERVICE_NAME`` as the service. inferkit
never uses generated ``_pb2_grpc`` stubs: our messages live in the proto package ``inferkit.v2`` (so they can
share protobuf's default pool with ``tritonclient.grpc`` and ``kserve``), but the wire path of every call stays
the protocol's, ``/inference.GRPCInferenceService/<Rpc>``, and only this module spells it.

The table is built on first use of :data:`GRPC_METHODS` (a module ``__getattr__``), so importing this module loads
no protobuf: ``SERVICE_NAME`` and :func:`method_path` cost nothing.
Must not import: anything but the standard library at module level (no grpc, requests, urllib3, aiohttp, protobuf,
no other inferkit module); ``inferkit._proto`` only inside the function that builds the table, and
``google.protobuf`` for type checking only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from google.protobuf.message import Message

    GRPC_METHODS: Mapping[str, GRPCMethod]  # built on first use: see __getattr__

__all__ = [
    "GRPC_METHODS",
    "SERVICE_NAME",
    "STREAM_STREAM",
    "UNARY_UNARY",
    "GRPCMethod",
    "MethodKind",
    "method_path",
]

SERVICE_NAME: Final = "inference.GRPCInferenceService"
"""The protocol's fully qualified service name; the same for Triton, KServe and MLServer."""

MethodKind = Literal["unary_unary", "stream_stream"]
UNARY_UNARY: Final = "unary_unary"
STREAM_STREAM: Final = "stream_stream"


def method_path(name: str) -> str:
    """Return the wire path of the RPC ``name``, e.g. ``/inference.GRPCInferenceService/ModelInfer``."""
    return f"/{SERVICE_NAME}/{name}"


@dataclasses.dataclass(frozen=True)
class GRPCMethod:
    """One RPC of ``GRPCInferenceService``.

    Attributes:
        name: The RPC name, e.g. ``"ModelInfer"``.
        path: The wire path, ``/inference.GRPCInferenceService/<name>``.
        request_type: Message class sent by the client (``SerializeToString`` encodes it).
        response_type: Message class sent by the server (``FromString`` decodes it).
        kind: ``"unary_unary"`` or ``"stream_stream"``: the grpcio channel/handler factory to use.
    """

    name: str
    path: str
    request_type: type[Message]
    response_type: type[Message]
    kind: MethodKind

    @property
    def is_stream(self) -> bool:
        """True for a bidirectional streaming RPC."""
        return self.kind == STREAM_STREAM


def _unary(name: str, request_type: type[Message], response_type: type[Message]) -> GRPCMethod:
    return GRPCMethod(name, method_path(name), request_type, response_type, UNARY_UNARY)


def _build_methods() -> Mapping[str, GRPCMethod]:
    from inferkit._proto import service_pb2 as _s  # noqa: PLC0415 - protobuf is optional (the grpc extra)

    return MappingProxyType(
        {
            m.name: m
            for m in (
                # Core protocol: every v2 server (Triton, KServe, MLServer).
                _unary("ServerLive", _s.ServerLiveRequest, _s.ServerLiveResponse),
                _unary("ServerReady", _s.ServerReadyRequest, _s.ServerReadyResponse),
                _unary("ModelReady", _s.ModelReadyRequest, _s.ModelReadyResponse),
                _unary("ServerMetadata", _s.ServerMetadataRequest, _s.ServerMetadataResponse),
                _unary("ModelMetadata", _s.ModelMetadataRequest, _s.ModelMetadataResponse),
                _unary("ModelInfer", _s.ModelInferRequest, _s.ModelInferResponse),
                # Triton extensions.
                GRPCMethod(
                    "ModelStreamInfer",
                    method_path("ModelStreamInfer"),
                    _s.ModelInferRequest,
                    _s.ModelStreamInferResponse,
                    STREAM_STREAM,
                ),
                _unary("ModelConfig", _s.ModelConfigRequest, _s.ModelConfigResponse),
                _unary("ModelStatistics", _s.ModelStatisticsRequest, _s.ModelStatisticsResponse),
                _unary("RepositoryIndex", _s.RepositoryIndexRequest, _s.RepositoryIndexResponse),
                _unary("RepositoryModelLoad", _s.RepositoryModelLoadRequest, _s.RepositoryModelLoadResponse),
                _unary("RepositoryModelUnload", _s.RepositoryModelUnloadRequest, _s.RepositoryModelUnloadResponse),
                _unary(
                    "SystemSharedMemoryStatus",
                    _s.SystemSharedMemoryStatusRequest,
                    _s.SystemSharedMemoryStatusResponse,
                ),
                _unary(
                    "SystemSharedMemoryRegister",
                    _s.SystemSharedMemoryRegisterRequest,
                    _s.SystemSharedMemoryRegisterResponse,
                ),
                _unary(
                    "SystemSharedMemoryUnregister",
                    _s.SystemSharedMemoryUnregisterRequest,
                    _s.SystemSharedMemoryUnregisterResponse,
                ),
                _unary(
                    "CudaSharedMemoryStatus",
                    _s.CudaSharedMemoryStatusRequest,
                    _s.CudaSharedMemoryStatusResponse,
                ),
                _unary(
                    "CudaSharedMemoryRegister",
                    _s.CudaSharedMemoryRegisterRequest,
                    _s.CudaSharedMemoryRegisterResponse,
                ),
                _unary(
                    "CudaSharedMemoryUnregister",
                    _s.CudaSharedMemoryUnregisterRequest,
                    _s.CudaSharedMemoryUnregisterResponse,
                ),
                _unary("TraceSetting", _s.TraceSettingRequest, _s.TraceSettingResponse),
                _unary("LogSettings", _s.LogSettingsRequest, _s.LogSettingsResponse),
            )
        }
    )


def __getattr__(name: str) -> Any:
    """``GRPC_METHODS``: every RPC of ``GRPCInferenceService``, keyed by RPC name. Read-only; built on first use."""
    if name == "GRPC_METHODS":
        # Later reads find the global and never come here; setdefault keeps one table if two threads both build one.
        methods: Mapping[str, GRPCMethod] = globals().setdefault("GRPC_METHODS", _build_methods())
        return methods
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
