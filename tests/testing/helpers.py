"""Raw HTTP (http.client) and raw gRPC (grpcio channel on the method table's paths) calls for the server tests."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any, Mapping

import numpy as np

from inferkit.codec.grpc_methods import GRPC_METHODS
from inferkit.codec.grpc_wire import pb
from inferkit.testing import ReferenceServer

HEADER_LENGTH = "Inference-Header-Content-Length"


class Reply:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:200]!r})"


def connection(server: ReferenceServer, context: ssl.SSLContext | None = None, timeout: float = 10):
    if server.tls is not None:
        return http.client.HTTPSConnection(server.host, server.http_port, timeout=timeout, context=context)
    return http.client.HTTPConnection(server.host, server.http_port, timeout=timeout)


def call(
    server: ReferenceServer,
    method: str,
    path: str,
    body: bytes | str | dict | None = None,
    headers: Mapping[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10,
) -> Reply:
    """One request on a fresh connection; returns status, headers and the raw body."""
    if isinstance(body, dict):
        body = json.dumps(body)
    conn = connection(server, context, timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def add_sub_body(a: np.ndarray, b: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "INPUT0", "shape": list(a.shape), "datatype": "INT32", "data": a.reshape(-1).tolist()},
            {"name": "INPUT1", "shape": list(b.shape), "datatype": "INT32", "data": b.reshape(-1).tolist()},
        ],
        **extra,
    }


def binary_body(header: dict[str, Any], *buffers: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(buffers), {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


def split_binary(reply: Reply) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header and each binary output's bytes of a binary infer reply."""
    length = int(reply.headers[HEADER_LENGTH.lower()])
    header = json.loads(reply.body[:length])
    out, offset = {}, length
    for entry in header["outputs"]:
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            out[entry["name"]] = reply.body[offset : offset + size]
            offset += size
    assert offset == len(reply.body)
    return header, out


def grpc_stub(channel: Any, rpc: str) -> Any:
    """A callable for ``rpc`` on ``channel`` built from the method table (no generated stubs)."""
    m = GRPC_METHODS[rpc]
    factory = channel.stream_stream if m.is_stream else channel.unary_unary
    return factory(
        m.path, request_serializer=m.request_type.SerializeToString, response_deserializer=m.response_type.FromString
    )


def infer_message(model: str, arrays: Mapping[str, np.ndarray], **kwargs: Any) -> Any:
    """A ModelInferRequest with raw contents, built by hand (not with the codec) to test the server's parsing."""
    msg = pb.ModelInferRequest(model_name=model, **kwargs)
    for name, arr in arrays.items():
        datatype = {"int32": "INT32", "float32": "FP32", "int64": "INT64"}[arr.dtype.name]
        msg.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        msg.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    return msg
