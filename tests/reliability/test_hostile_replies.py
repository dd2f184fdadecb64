"""Hostile or broken server replies: a typed, clear error and bounded memory, never IndexError, struct.error,
RecursionError or MemoryError.

REST replies come from a raw-socket server that sends exactly the bytes of each case (sync REST through `infer` and
through `infer_many`, on its worker threads, and aio REST);
gRPC replies from a tiny grpcio server built from ``GRPC_METHODS`` whose ModelInfer returns hand-made
``ModelInferResponse`` bytes (sync and aio gRPC clients). Memory is measured with tracemalloc around the call.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from concurrent import futures
from typing import Any, Callable, Iterator, Optional

import pytest

from inferkit import RetryPolicy, errors

from .drivers import Driver, add_sub_request
from .rawserver import RawHTTPServer, http_reply

pytestmark = pytest.mark.timeout(30)

MEMORY_BOUND = 32 * 1024 * 1024  # peak Python allocations while handling one hostile reply

_HL = "Inference-Header-Content-Length"


def _out(name: str = "OUTPUT0", datatype: str = "INT32", shape: Any = (1, 16), **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(shape)}
    if params:
        out["parameters"] = params
    return out


def binary(outputs: list[dict[str, Any]], blobs: bytes, *, hcl: Any = None, **kw: Any) -> bytes:
    head = json.dumps({"model_name": "add_sub", "outputs": outputs}).encode()
    headers = {"Content-Type": "application/octet-stream", _HL: str(len(head) if hcl is None else hcl)}
    return http_reply(head + blobs, headers=headers, **kw)


def plain_json(body: bytes, **kw: Any) -> bytes:
    return http_reply(body, headers={"Content-Type": "application/json"}, **kw)


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` zero bytes (about 1000x smaller), built without holding the inflated data."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [comp.compress(zeros) for _ in range(inflated >> 20)]
    parts.append(comp.flush())
    return b"".join(parts)


def _nested(depth: int) -> bytes:
    return b'{"model_name": "add_sub", "outputs": ' + b"[" * depth + b"]" * depth + b"}"


_B64 = bytes(64)

# id -> (reply bytes, expected error class, words the message must contain, RESTConfig overrides)
REST_CASES: dict[str, tuple[Callable[[], bytes], type, tuple[str, ...], dict[str, Any]]] = {
    "header_length_past_body": (
        lambda: binary([_out(binary_data_size=64)], _B64, hcl=10_000),
        errors.DecodeError,
        ("Inference-Header-Content-Length",),
        {},
    ),
    "header_length_absurd": (
        lambda: binary([_out(binary_data_size=64)], _B64, hcl=10**18),
        errors.DecodeError,
        ("Inference-Header-Content-Length",),
        {},
    ),
    "header_length_negative": (
        lambda: binary([_out(binary_data_size=64)], _B64, hcl=-5),
        errors.DecodeError,
        ("Inference-Header-Content-Length",),
        {},
    ),
    "header_length_not_a_number": (
        lambda: binary([_out(binary_data_size=64)], _B64, hcl="12abc"),
        errors.DecodeError,
        ("Inference-Header-Content-Length",),
        {},
    ),
    "binary_size_past_the_end": (
        lambda: binary([_out(binary_data_size=64)], bytes(32)),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "binary_size_absurd": (
        lambda: binary([_out(binary_data_size=10**15)], _B64),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "binary_size_negative": (
        lambda: binary([_out(binary_data_size=-64)], _B64),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "binary_size_not_matching_shape": (
        lambda: binary([_out(binary_data_size=60)], bytes(60)),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "binary_sizes_leave_bytes_unclaimed": (
        lambda: binary([_out(binary_data_size=64)], _B64 + bytes(100)),
        errors.DecodeError,
        (),
        {},
    ),
    "two_outputs_share_one_blob": (
        lambda: binary([_out(binary_data_size=64), _out("OUTPUT1", binary_data_size=64)], _B64),
        errors.DecodeError,
        ("OUTPUT1",),
        {},
    ),
    "shape_negative_dim": (
        lambda: binary([_out(shape=(-1, 16), binary_data_size=64)], _B64),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "shape_absurd_json": (
        lambda: plain_json(json.dumps({"outputs": [_out(shape=(10**12, 10**12)) | {"data": [1]}]}).encode()),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "shape_absurd_binary": (
        lambda: binary([_out(shape=(2**62, 2**62), binary_data_size=64)], _B64),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "json_data_not_matching_shape": (
        lambda: plain_json(json.dumps({"outputs": [_out() | {"data": [1, 2, 3]}]}).encode()),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "json_data_wrong_type": (
        lambda: plain_json(json.dumps({"outputs": [_out(shape=(2,)) | {"data": ["a", "b"]}]}).encode()),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "unknown_datatype": (
        lambda: binary([_out(datatype="INT33", binary_data_size=64)], _B64),
        errors.DecodeError,
        ("INT33",),
        {},
    ),
    "bytes_length_past_the_end": (
        lambda: binary([_out(datatype="BYTES", shape=(1,), binary_data_size=7)], struct.pack("<I", 1000) + b"abc"),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "bytes_length_prefix_cut": (
        lambda: binary([_out(datatype="BYTES", shape=(2,), binary_data_size=7)], struct.pack("<I", 1) + b"a\x01\x00"),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "bytes_fewer_elements_than_shape": (
        lambda: binary([_out(datatype="BYTES", shape=(3,), binary_data_size=5)], struct.pack("<I", 1) + b"a"),
        errors.DecodeError,
        ("OUTPUT0",),
        {},
    ),
    "invalid_utf8_json": (
        lambda: plain_json(b'{"model_name": "add\xff\xfe", "outputs": []}'),
        errors.DecodeError,
        (),
        {},
    ),
    "deeply_nested_json": (lambda: plain_json(_nested(100_000)), errors.DecodeError, (), {}),
    "json_not_an_object": (lambda: plain_json(b"[1, 2, 3]"), errors.DecodeError, (), {}),
    "outputs_not_a_list": (lambda: plain_json(b'{"outputs": 5}'), errors.DecodeError, ("outputs",), {}),
    "output_without_name": (
        lambda: plain_json(b'{"outputs": [{"datatype": "INT32", "shape": [1], "data": [1]}]}'),
        errors.DecodeError,
        (),
        {},
    ),
    "empty_200_body": (lambda: plain_json(b""), errors.DecodeError, (), {}),
    "gzip_bomb_256MiB": (
        lambda: http_reply(
            gzip_bomb(256 << 20), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        ),
        errors.ResponseTooLargeError,
        ("max_response_size",),
        {"max_response_size": 1 << 20},
    ),
    "content_length_over_the_limit": (
        lambda: plain_json(b"{}", content_length=1 << 40),
        errors.ResponseTooLargeError,
        ("max_response_size",),
        {},
    ),
    "content_length_huge_body_short": (
        lambda: plain_json(b'{"outputs": []}', content_length=1_500_000_000),
        errors.ConnectError,
        (),
        {},
    ),
    "error_body_50MiB": (
        lambda: http_reply(b'{"error": "' + b"x" * (50 << 20) + b'"}', status="500 Internal Server Error"),
        errors.InternalServerError,
        (),
        {},
    ),
    "error_body_gzip_bomb": (
        lambda: http_reply(
            gzip_bomb(256 << 20), status="500 Internal Server Error", headers={"Content-Encoding": "gzip"}
        ),
        errors.InternalServerError,
        (),
        {},
    ),
    "chunk_size_absurd": (
        lambda: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\n\r\nffffffffffffff\r\n{}"
        ),
        errors.InferkitError,
        (),
        {},
    ),
}

_FORBIDDEN = (IndexError, KeyError, struct.error, MemoryError, RecursionError, TypeError, AttributeError)


def _infer_and_decode(client: Any, request: Any) -> Any:
    """infer, then decode every output (decoding may be lazy: the error may surface at ``as_numpy``)."""

    def decode(response: Any) -> Any:
        return [output.as_numpy() for output in response.outputs]

    result = client.infer(request)
    if hasattr(result, "__await__"):

        async def go() -> Any:
            return decode(await result)

        return go()
    return decode(result)


def _measure(run: Callable[[], Any]) -> tuple[Optional[BaseException], int]:
    tracemalloc.start()
    try:
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - examined by the caller
            return exc, tracemalloc.get_traced_memory()[1]
        return None, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _check(exc: Optional[BaseException], peak: int, expected: type, words: tuple[str, ...]) -> None:
    assert exc is not None, "the hostile reply was accepted"
    assert not isinstance(exc, _FORBIDDEN) or isinstance(exc, errors.InferkitError), repr(exc)
    assert isinstance(exc, expected), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert len(message) < 2000, "error messages stay readable (no body dumps)"
    for word in words:
        assert word in message, message
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB while handling the reply"


_REST_XFAIL: dict[str, str] = {}


def _infer_many_and_decode(client: Any, request: Any) -> Any:
    """The same through the sync client's ``infer_many`` (its worker threads share the client's pool)."""
    [response] = list(client.infer_many([request], concurrency=1))
    return [output.as_numpy() for output in response.outputs]


def _rest_params() -> list[Any]:
    params = []
    for kind in ("sync_rest", "sync_rest_many", "aio_rest"):
        for case_id in REST_CASES:
            reason = _REST_XFAIL.get(f"{kind}-{case_id}") or _REST_XFAIL.get(case_id)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(kind, case_id, id=f"{kind}-{case_id}", marks=marks))
    return params


@pytest.mark.parametrize(("kind", "case_id"), _rest_params())
def test_hostile_rest_reply(kind: str, case_id: str) -> None:
    many = kind == "sync_rest_many"
    driver = Driver("sync_rest" if many else kind)
    driver.skip_if_missing()
    build, expected, words, overrides = REST_CASES[case_id]
    reply = build()
    op = _infer_many_and_decode if many else _infer_and_decode
    with RawHTTPServer(lambda *_: reply) as raw:
        request = add_sub_request()
        exc, peak = _measure(
            lambda: driver.run(
                raw.url,
                lambda c: op(c, request),
                policy=RetryPolicy(max_retries=1, backoff_initial=0.01),
                timeout=5.0,
                **overrides,
            )
        )
    _check(exc, peak, expected, words)
    if isinstance(exc, errors.DecodeError) and not isinstance(exc, errors.ResponseTooLargeError):
        assert raw.requests == 1, "a malformed reply is not retried"


# -- gRPC -------------------------------------------------------------------------------------------------------


def _grpc_reply(outputs: list[tuple[str, str, tuple[int, ...]]], raw: list[bytes]) -> bytes:
    from inferkit.codec.grpc_methods import GRPC_METHODS

    msg = GRPC_METHODS["ModelInfer"].response_type(model_name="add_sub")
    for name, datatype, shape in outputs:
        out = msg.outputs.add()
        out.name, out.datatype = name, datatype
        out.shape.extend(shape)
    msg.raw_output_contents.extend(raw)
    return msg.SerializeToString()


GRPC_CASES: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "fewer_raw_contents_than_outputs": (
        lambda: _grpc_reply([("OUTPUT0", "INT32", (1, 16)), ("OUTPUT1", "INT32", (1, 16))], [_B64]),
        (),
    ),
    "more_raw_contents_than_outputs": (lambda: _grpc_reply([("OUTPUT0", "INT32", (1, 16))], [_B64, _B64]), ()),
    "raw_size_not_matching_shape": (lambda: _grpc_reply([("OUTPUT0", "INT32", (1, 16))], [bytes(60)]), ("OUTPUT0",)),
    "shape_absurd": (lambda: _grpc_reply([("OUTPUT0", "INT32", (2**40, 2**40))], [_B64]), ("OUTPUT0",)),
    "shape_negative_dim": (lambda: _grpc_reply([("OUTPUT0", "INT32", (-1, 16))], [_B64]), ("OUTPUT0",)),
    "unknown_datatype": (lambda: _grpc_reply([("OUTPUT0", "INT33", (1, 16))], [_B64]), ("INT33",)),
    "bytes_length_past_the_end": (
        lambda: _grpc_reply([("OUTPUT0", "BYTES", (1,))], [struct.pack("<I", 1000) + b"abc"]),
        ("OUTPUT0",),
    ),
    "bytes_fewer_elements_than_shape": (
        lambda: _grpc_reply([("OUTPUT0", "BYTES", (3,))], [struct.pack("<I", 1) + b"a"]),
        ("OUTPUT0",),
    ),
    "not_a_protobuf_message": (lambda: b"\xff\xff\xff\xff\x0f garbage", ()),
}


class HostileGRPCServer:
    """A grpcio server whose ModelInfer answers with fixed bytes (every other RPC: UNIMPLEMENTED)."""

    def __init__(self, reply: bytes) -> None:
        import grpc

        from inferkit.codec.grpc_methods import GRPC_METHODS

        self.calls = 0

        def model_infer(request: bytes, context: Any) -> bytes:
            self.calls += 1
            return reply

        method = GRPC_METHODS["ModelInfer"]
        service, rpc = method.path.lstrip("/").split("/")
        handler = grpc.unary_unary_rpc_method_handler(model_infer, request_deserializer=None, response_serializer=None)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {rpc: handler}),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self) -> HostileGRPCServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None).wait(5)


@pytest.fixture
def grpc_hostile() -> Iterator[Callable[[bytes], HostileGRPCServer]]:
    servers: list[HostileGRPCServer] = []

    def make(reply: bytes) -> HostileGRPCServer:
        server = HostileGRPCServer(reply).__enter__()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.__exit__()


_GRPC_XFAIL: dict[str, str] = {}


def _grpc_params() -> list[Any]:
    params = []
    for kind in ("sync_grpc", "aio_grpc"):
        for case_id in GRPC_CASES:
            reason = _GRPC_XFAIL.get(f"{kind}-{case_id}") or _GRPC_XFAIL.get(case_id)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(kind, case_id, id=f"{kind}-{case_id}", marks=marks))
    return params


@pytest.mark.parametrize(("kind", "case_id"), _grpc_params())
def test_hostile_grpc_reply(kind: str, case_id: str, grpc_hostile: Callable[[bytes], HostileGRPCServer]) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    build, words = GRPC_CASES[case_id]
    server = grpc_hostile(build())
    request = add_sub_request()
    exc, peak = _measure(
        lambda: driver.run(
            server.address,
            lambda c: _infer_and_decode(c, request),
            policy=RetryPolicy(max_retries=2, backoff_initial=0.01),
            timeout=5.0,
        )
    )
    _check(exc, peak, errors.DecodeError, words)
    assert server.calls == 1, "a malformed reply is not retried"
