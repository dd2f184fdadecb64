"""The gRPC method table: complete, on the protocol's wire paths, and usable by grpcio as it stands."""

from __future__ import annotations

import ast
import dataclasses
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from inferkit._proto import service_pb2
from inferkit.codec import grpc_methods
from inferkit.codec.grpc_methods import (
    GRPC_METHODS,
    SERVICE_NAME,
    STREAM_STREAM,
    UNARY_UNARY,
    GRPCMethod,
    method_path,
)

MODULE_PATH = Path(grpc_methods.__file__)


def _streaming(rpc: Any) -> tuple[bool, bool]:
    """(client_streaming, server_streaming); older upb runtimes only expose them on the descriptor proto."""
    proto = descriptor_pb2.MethodDescriptorProto()
    rpc.CopyToProto(proto)
    return proto.client_streaming, proto.server_streaming


def _unqualified(full_name: str) -> str:
    for package in ("inference.", "inferkit.v2."):
        if full_name.startswith(package):
            return full_name[len(package) :]
    return full_name


def _layout(message: Any) -> dict[int, tuple[str, int, bool, str | None]]:
    """Field number -> (name, type, repeated, referenced type name without package) of a message descriptor."""
    layout = {}
    for field in message.fields:
        repeated = getattr(field, "is_repeated", None)  # `label` is deprecated on newer runtimes
        if not isinstance(repeated, bool):
            repeated = field.label == field.LABEL_REPEATED
        referenced = field.message_type or field.enum_type
        layout[field.number] = (
            field.name,
            field.type,
            repeated,
            _unqualified(referenced.full_name) if referenced else None,
        )
    return layout


def test_keys_are_names_and_paths_are_the_protocols() -> None:
    assert SERVICE_NAME == "inference.GRPCInferenceService"
    for name, method in GRPC_METHODS.items():
        assert method.name == name
        assert method.path == f"/inference.GRPCInferenceService/{name}" == method_path(name)
        assert method.kind in (UNARY_UNARY, STREAM_STREAM)
        assert method.is_stream == (method.kind == STREAM_STREAM)


def test_only_model_stream_infer_streams() -> None:
    assert [m.name for m in GRPC_METHODS.values() if m.is_stream] == ["ModelStreamInfer"]
    stream = GRPC_METHODS["ModelStreamInfer"]
    assert stream.request_type is service_pb2.ModelInferRequest
    assert stream.response_type is service_pb2.ModelStreamInferResponse


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        GRPC_METHODS["Extra"] = GRPC_METHODS["ModelInfer"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        GRPC_METHODS["ModelInfer"].path = "/x"  # type: ignore[misc]


def test_matches_our_declared_service() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert sorted(m.name for m in service.methods) == sorted(GRPC_METHODS)
    for rpc in service.methods:
        method = GRPC_METHODS[rpc.name]
        assert method.request_type.DESCRIPTOR is rpc.input_type
        assert method.response_type.DESCRIPTOR is rpc.output_type
        assert _streaming(rpc) == (method.is_stream, method.is_stream)


def test_module_imports_only_proto_and_stdlib() -> None:
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:
        pytest.skip("sys.stdlib_module_names needs Python 3.10+")
    tree = ast.parse(MODULE_PATH.read_text(encoding="utf-8"))
    type_checking_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            type_checking_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in type_checking_only:
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            assert name.startswith("inferkit._proto") or top in stdlib or top == "__future__", (
                f"grpc_methods imports {name}"
            )


# ----------------------------------------------------------------------------------------------------------
# Against tritonclient's service descriptor
# ----------------------------------------------------------------------------------------------------------


def _triton_service_descriptor() -> Any:
    """tritonclient's service descriptor, or None where tritonclient (or its protobuf runtime check) fails."""
    try:
        from tritonclient.grpc import service_pb2 as their_service
    except Exception:  # ImportError, or protobuf's VersionError on runtimes older than its generated code
        return None
    return their_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]


TRITON_SERVICE = _triton_service_descriptor()
needs_tritonclient = pytest.mark.skipif(TRITON_SERVICE is None, reason="tritonclient.grpc cannot be imported")


@pytest.fixture
def triton_service() -> Any:
    if TRITON_SERVICE is None:
        pytest.skip("tritonclient.grpc cannot be imported")
    return TRITON_SERVICE


def test_covers_every_triton_rpc(triton_service: Any) -> None:
    assert sorted(GRPC_METHODS) == sorted(m.name for m in triton_service.methods)


@pytest.mark.parametrize("rpc_name", [m.name for m in TRITON_SERVICE.methods] if TRITON_SERVICE else [])
def test_entry_matches_triton_rpc(triton_service: Any, rpc_name: str) -> None:
    rpc = triton_service.methods_by_name[rpc_name]
    method = GRPC_METHODS[rpc_name]
    # grpcio's generated stubs use exactly this path.
    assert method.path == f"/{triton_service.full_name}/{rpc.name}"
    client_streaming, server_streaming = _streaming(rpc)
    assert client_streaming == server_streaming  # the protocol has no half-streaming RPC
    expected_kind = STREAM_STREAM if client_streaming else UNARY_UNARY
    assert method.kind == expected_kind
    assert method.request_type.DESCRIPTOR.name == rpc.input_type.name
    assert method.response_type.DESCRIPTOR.name == rpc.output_type.name
    assert _layout(method.request_type.DESCRIPTOR) == _layout(rpc.input_type)
    assert _layout(method.response_type.DESCRIPTOR) == _layout(rpc.output_type)


# ----------------------------------------------------------------------------------------------------------
# End to end over a real channel: our table on one side, tritonclient's generated stub on the other
# ----------------------------------------------------------------------------------------------------------


def _handlers(grpc: Any) -> Any:
    """A tiny server built only from the table, as inferkit.testing will build its handlers."""

    def model_infer(request: Any, context: Any) -> Any:
        out = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        out.outputs.add(name="OUT", datatype="BYTES", shape=[1])
        out.raw_output_contents.extend(request.raw_input_contents)
        return out

    def model_stream_infer(requests: Iterator[Any], context: Any) -> Iterator[Any]:
        for request in requests:
            if request.id == "bad":
                yield service_pb2.ModelStreamInferResponse(error_message="bad request")
            else:
                yield service_pb2.ModelStreamInferResponse(infer_response=model_infer(request, context))

    behaviours = {
        "ServerLive": lambda request, context: service_pb2.ServerLiveResponse(live=True),
        "ModelInfer": model_infer,
        "ModelStreamInfer": model_stream_infer,
    }
    handlers = {}
    for name, fn in behaviours.items():
        method = GRPC_METHODS[name]
        factory = grpc.stream_stream_rpc_method_handler if method.is_stream else grpc.unary_unary_rpc_method_handler
        handlers[name] = factory(
            fn,
            request_deserializer=method.request_type.FromString,
            response_serializer=method.response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


@pytest.fixture(scope="module")
def server_address() -> Iterator[str]:
    grpc = pytest.importorskip("grpc")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((_handlers(grpc),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _callable(channel: Any, method: GRPCMethod) -> Any:
    factory = channel.stream_stream if method.is_stream else channel.unary_unary
    return factory(
        method.path,
        request_serializer=method.request_type.SerializeToString,
        response_deserializer=method.response_type.FromString,
    )


def test_table_client_against_table_server(server_address: str) -> None:
    import grpc

    with grpc.insecure_channel(server_address) as channel:
        live = _callable(channel, GRPC_METHODS["ServerLive"])(service_pb2.ServerLiveRequest(), timeout=10)
        assert live.live is True
        request = service_pb2.ModelInferRequest(model_name="m", id="1", raw_input_contents=[b"\x01\x02"])
        reply = _callable(channel, GRPC_METHODS["ModelInfer"])(request, timeout=10)
        assert (reply.model_name, reply.id, list(reply.raw_output_contents)) == ("m", "1", [b"\x01\x02"])
        stream = _callable(channel, GRPC_METHODS["ModelStreamInfer"])
        replies = list(stream(iter([request, service_pb2.ModelInferRequest(id="bad")]), timeout=10))
        assert [r.error_message for r in replies] == ["", "bad request"]
        assert replies[0].infer_response.id == "1"


@needs_tritonclient
def test_tritonclient_stub_against_table_server(server_address: str) -> None:
    """tritonclient's generated stub reaches the handlers we registered from the table: the paths agree."""
    import grpc
    from tritonclient.grpc import service_pb2 as their_service
    from tritonclient.grpc import service_pb2_grpc as their_stubs

    with grpc.insecure_channel(server_address) as channel:
        stub = their_stubs.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(their_service.ServerLiveRequest(), timeout=10).live is True
        request = their_service.ModelInferRequest(model_name="m", id="7", raw_input_contents=[b"abc"])
        reply = stub.ModelInfer(request, timeout=10)
        assert (reply.id, list(reply.raw_output_contents)) == ("7", [b"abc"])
        assert reply.outputs[0].name == "OUT"
        replies = list(stub.ModelStreamInfer(iter([request, their_service.ModelInferRequest(id="bad")]), timeout=10))
        assert [r.error_message for r in replies] == ["", "bad request"]
        assert replies[0].infer_response.id == "7"
