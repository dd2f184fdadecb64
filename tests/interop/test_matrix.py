"""The interop matrix: inferkit's clients (sync REST, sync gRPC, aio REST, aio gRPC) x real servers x calls.

A client kind whose module cannot be imported or constructed is skipped with "client not available yet", so the
matrix runs as the clients land. A call a server does not offer (Triton-only extensions on KServe or MLServer, v1 on
Triton) is tested for inferkit's *exact* error class (``lacks``: REST 404 -> ``NotFoundError``, gRPC UNIMPLEMENTED ->
``UnimplementedError``), never skipped; "n/a" skips are calls that do not exist over a protocol (JSON over gRPC).
Each test's (kind, server, call) cell is recorded by the conftest (see tests/interop/matrix.py) and written into
docs/compatibility.md with ``INFERKIT_WRITE_MATRIX=1``.

The aio clients are driven through a small synchronous adapter (one event loop per client), so every case below is
written once for the four kinds.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import time
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import pytest

from tests.interop import harness, matrix

pytestmark = pytest.mark.interop

KINDS = ("rest", "grpc", "aio_rest", "aio_grpc")
A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


# ---------------------------------------------------------------------------------------------------------------------
# client construction
# ---------------------------------------------------------------------------------------------------------------------


class _AsyncAdapter:
    """Calls an async client's methods synchronously on a private event loop (test convenience only)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = self._run(self._make(factory))

    @staticmethod
    async def _make(factory: Callable[[], Any]) -> Any:
        return factory()  # some async clients need a running loop at construction

    def _run(self, value: Any) -> Any:
        return self._loop.run_until_complete(value) if inspect.isawaitable(value) else value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._run(attr(*args, **kwargs))

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()


def _load(kind: str) -> tuple[Any, Any]:
    """(module, RESTConfig class) for a kind, or skip: the client has not landed yet."""
    module_name = {
        "rest": "inferkit.rest_client",
        "grpc": "inferkit.grpc_client",
        "aio_rest": "inferkit.aio",
        "aio_grpc": "inferkit.aio",
    }[kind]
    try:
        module = importlib.import_module(module_name)
        config = importlib.import_module("inferkit").RESTConfig
        cls_name = "InferenceRESTClient" if kind.endswith("rest") else "InferenceGRPCClient"
        getattr(module, cls_name)
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"client not available yet: {kind} ({exc})")
    return module, config


def make_client(kind: str, server: harness.Server, **options: Any) -> Any:
    """A client of ``kind`` for ``server``. REST options go to RESTConfig, gRPC options to the constructor."""
    module, rest_config = _load(kind)
    if kind.endswith("rest"):

        def factory() -> Any:
            return module.InferenceRESTClient(server.http_url, config=rest_config(**options))

    else:

        def factory() -> Any:
            return module.InferenceGRPCClient(server.grpc_address, **options)

    try:
        return _AsyncAdapter(factory) if kind.startswith("aio") else factory()
    except (TypeError, NotImplementedError) as exc:
        pytest.skip(f"client not available yet: {kind} cannot be constructed ({exc})")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(kind: str, server: harness.Server) -> Iterator[Any]:
    c = make_client(kind, server)
    yield c
    c.close()


def errors() -> Any:
    return importlib.import_module("inferkit.errors")


def tensors() -> Any:
    return importlib.import_module("inferkit")


def add_sub_request(request_id: str | None = None, parameters: dict[str, Any] | None = None, **kw: Any) -> Any:
    ik = tensors()
    a = ik.InferInput("INPUT0", [1, 16], "INT32")
    a.set_data_from_numpy(A)
    b = ik.InferInput("INPUT1", [1, 16], "INT32")
    b.set_data_from_numpy(B)
    return ik.InferRequest("add_sub", [a, b], request_id=request_id, parameters=parameters, **kw)


def check_add_sub(response: Any) -> None:
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), A - B)


def sample(datatype: str, json: bool = False) -> np.ndarray:
    """A 2x3 tensor of ``datatype`` with awkward values (NUL and non-UTF-8 bytes, extremes).

    ``json``: only values JSON can carry (BYTES elements must be UTF-8 there; NUL is fine).
    """
    if datatype == "BYTES" and json:
        return np.array([[b"a\x00b", "é".encode(), b""], [b"plain", b"\x00", b'"quoted"\\']], dtype=np.object_)
    if datatype == "BYTES":
        return np.array([[b"a\x00b", b"\xff\xfe\x00", b""], [b"plain", b"\x00", "é".encode()]], dtype=np.object_)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if datatype == "BF16":
        bits = (np.array([[1.0, -2.5, 0.0], [0.15625, 3.0e38, -1e-3]], np.float32).view(np.uint32) >> 16).astype(
            np.uint16
        )
        return bits
    dtype = {
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
    }[datatype]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, info.max], [1, 2, info.max - 1]], dtype=dtype)
    return np.array([[0.5, -1.25, 3.0], [np.finfo(dtype).max, 0.0, -0.0]], dtype=dtype)


def identity_request(server: harness.Server, datatype: str, array: np.ndarray, binary: bool = True, **kw: Any) -> Any:
    ik = tensors()
    model, in_name, _ = server.identity(datatype)
    tensor = ik.InferInput(in_name, list(array.shape), datatype)
    if datatype == "BF16":
        tensor.set_raw_data(array.astype("<u2").tobytes(), binary_data=binary)
    else:
        tensor.set_data_from_numpy(array, binary_data=binary)
    return ik.InferRequest(model, [tensor], **kw)


def output_equal(response: Any, datatype: str, expected: np.ndarray) -> None:
    out = response.get_output(f"OUTPUT_{datatype}")
    assert out is not None, f"no OUTPUT_{datatype} in the response: {[o.name for o in response.outputs]}"
    assert out.datatype == datatype, f"datatype {out.datatype} != {datatype}"
    got = out.as_numpy()
    if datatype == "BF16":
        got = np.asarray(got).view(np.uint16)
    if datatype == "BYTES":
        got = np.array([x if isinstance(x, bytes) else str(x).encode() for x in got.reshape(-1)], dtype=object)
        expected = expected.reshape(-1)
    np.testing.assert_array_equal(got, expected)


def skip_unless(server: harness.Server, capability: str, why: str) -> None:
    if not server.has(capability):
        pytest.skip(f"{server.name}: {why}")


def is_grpc(kind: str) -> bool:
    return kind.endswith("grpc")


def lacks(
    record_property: Callable[[str, object], None], expected: type, call: Callable[..., Any], *args: Any, **kw: Any
) -> None:
    """Assert that ``call`` raises exactly ``expected`` (not a subclass, not a raw library error), with a message,
    and record the class for the matrix cell: the server does not offer this call."""
    with pytest.raises(Exception) as info:
        call(*args, **kw)
    assert type(info.value) is expected, f"expected {expected.__name__}, got {type(info.value).__name__}: {info.value}"
    assert str(info.value).strip(), "the error carries no message"
    record_property(matrix.LACKING_PROPERTY, expected.__name__)


def missing_endpoint(kind: str) -> type:
    """The error class for an endpoint the server does not have: REST 404, gRPC UNIMPLEMENTED."""
    return errors().UnimplementedError if is_grpc(kind) else errors().NotFoundError


# ---------------------------------------------------------------------------------------------------------------------
# health and metadata
# ---------------------------------------------------------------------------------------------------------------------


def known_quirk(request: pytest.FixtureRequest, condition: bool, reason: str) -> None:
    """Mark a case as a known server bug (strict: a fixed server shows up as XPASS, which fails)."""
    if condition:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


def test_health(client: Any, server: harness.Server) -> None:
    # MLServer's gRPC ModelReady answers UNKNOWN for an unknown model: the client must still say False.
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("add_sub") is True
    assert client.is_model_ready("no_such_model") is False


def test_server_metadata(client: Any, server: harness.Server) -> None:
    meta = client.get_server_metadata()
    assert meta["name"]
    assert isinstance(meta.get("extensions", []), list)
    if server.name == "triton":
        assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_metadata(client: Any, server: harness.Server) -> None:
    meta = client.get_model_metadata("add_sub")
    assert meta["name"] == "add_sub"
    if server.name == "triton":
        assert meta["platform"] == "python" and meta["versions"] == ["1"]
        inputs = {t["name"]: t for t in meta["inputs"]}
        assert inputs["INPUT0"]["datatype"] == "INT32" and list(inputs["INPUT0"]["shape"]) == [-1, 16]


def test_model_metadata_unknown_model_is_not_found(client: Any, server: harness.Server) -> None:
    with pytest.raises(errors().NotFoundError):
        client.get_model_metadata("no_such_model")


# ---------------------------------------------------------------------------------------------------------------------
# Triton extensions: model config, statistics, repository
# ---------------------------------------------------------------------------------------------------------------------


def test_model_config(kind: str, client: Any, server: harness.Server, record_property: Any) -> None:
    if not server.has("model_config"):
        lacks(record_property, missing_endpoint(kind), client.get_model_config, "add_sub")
        return
    config = client.get_model_config("add_sub")
    config = config.get("config", config)  # gRPC wraps it in ModelConfigResponse.config
    assert config["name"] == "add_sub"
    assert config["backend"] == "python"
    inputs = {t["name"]: t for t in config["input"]}
    assert [int(d) for d in inputs["INPUT0"]["dims"]] == [-1, 16]
    assert inputs["INPUT0"]["data_type"] == "TYPE_INT32"


def test_model_config_unknown_model(client: Any, server: harness.Server) -> None:
    skip_unless(server, "model_config", "no model configuration endpoint")
    with pytest.raises(errors().ServerError) as info:
        client.get_model_config("no_such_model")
    assert isinstance(info.value, (errors().NotFoundError, errors().InvalidInputError)), type(info.value)


def test_statistics_with_access_token(kind: str, client: Any, server: harness.Server, record_property: Any) -> None:
    if not server.has("statistics"):
        lacks(record_property, missing_endpoint(kind), client.get_model_statistics, "add_sub")
        return
    key, value = server.info["grpc_access_header" if is_grpc(kind) else "access_header"]
    client.infer(add_sub_request())
    deadline = time.monotonic() + 10
    while True:  # Triton records statistics just after it sends the response: poll, bounded
        model_stats = client.get_model_statistics("add_sub", headers={key: value})["model_stats"]
        assert model_stats[0]["name"] == "add_sub"
        if int(model_stats[0]["inference_count"]) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert int(model_stats[0]["inference_count"]) >= 1


def test_statistics_without_access_token_is_denied(kind: str, client: Any, server: harness.Server) -> None:
    skip_unless(server, "access_token", "no restricted API")
    e = errors()
    with pytest.raises(e.ServerError) as info:
        client.get_model_statistics("add_sub")
    # Triton: HTTP 403, but gRPC UNAVAILABLE (the reference server says 401 / UNAUTHENTICATED).
    expected = (e.ServiceUnavailableError,) if is_grpc(kind) else (e.PermissionDeniedError,)
    assert isinstance(info.value, expected), type(info.value)
    assert "restricted" in str(info.value)


def test_repository_index(kind: str, client: Any, server: harness.Server, record_property: Any) -> None:
    if server.name == "kserve":  # load/unload only
        lacks(record_property, missing_endpoint(kind), client.get_model_repository_index)
        return
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert "add_sub" in index
    if server.name == "triton":
        assert server.info["loadable_model"] in index


def test_repository_load_infer_unload(kind: str, server: harness.Server, record_property: Any) -> None:
    skip_unless(server, "repository", "no repository API")
    c = make_client(kind, server, retries=0)
    try:
        if server.name == "triton":
            _load_infer_unload_triton(c, server)
        elif server.name == "mlserver":
            _unload_load_mlserver(c)
        else:
            _load_unload_kserve(kind, c, record_property)
    finally:
        c.close()


def _unload_load_mlserver(client: Any) -> None:
    # MLServer reloads a model from its repository directory: unload "fail", then load it back.
    try:
        client.unload_model("fail")
        assert client.is_model_ready("fail") is False
    finally:
        client.load_model("fail")
    assert client.is_model_ready("fail") is True
    with pytest.raises(errors().NotFoundError):
        client.load_model("no_such_model")


def _load_unload_kserve(kind: str, client: Any, record_property: Any) -> None:
    # KServe's models are Python objects registered in code: unload works, but "load" can only re-load a model from
    # a storage URI, which a code model has none of; it answers 503 "not ready" (REST) or, over gRPC, UNKNOWN from an
    # AttributeError inside KServe 0.21. Tested on an unknown model so the session's models stay loaded.
    with pytest.raises(errors().NotFoundError):
        client.unload_model("no_such_model")
    expected = errors().InternalServerError if is_grpc(kind) else errors().ServiceUnavailableError
    lacks(record_property, expected, client.load_model, "no_such_model")


def _load_infer_unload_triton(client: Any, server: harness.Server) -> None:
    ik = tensors()
    name = server.info["loadable_model"]
    x = np.ones((1, 4), np.float32)
    request = ik.InferRequest(name, [ik.InferInput("INPUT0", [1, 4], "FP32", data=x)])
    client.load_model(name)
    try:
        assert client.is_model_ready(name)
        np.testing.assert_array_equal(client.infer(request).as_numpy("OUTPUT0"), x)
    finally:
        client.unload_model(name)
    assert client.is_model_ready(name) is False
    with pytest.raises(errors().ServerError) as info:
        client.infer(request)
    # Triton: an unloaded model is "unavailable" (HTTP 400 / gRPC UNAVAILABLE); the reference server says 404.
    assert isinstance(
        info.value, (errors().NotFoundError, errors().InvalidInputError, errors().ServiceUnavailableError)
    ), type(info.value)


def test_trace_settings(kind: str, client: Any, server: harness.Server, record_property: Any) -> None:
    if server.name != "triton":  # Triton's trace extension
        lacks(record_property, missing_endpoint(kind), client.get_trace_settings)
        return
    settings = client.get_trace_settings("add_sub")
    assert settings["trace_level"] == ["OFF"] and isinstance(settings["trace_rate"], int)
    try:
        assert client.update_trace_settings("add_sub", {"trace_count": 5})["trace_count"] == 5
    finally:
        assert client.update_trace_settings("add_sub", {"trace_count": None}) == settings


def test_log_settings(kind: str, client: Any, server: harness.Server, record_property: Any) -> None:
    if server.name != "triton":  # Triton's logging extension
        lacks(record_property, missing_endpoint(kind), client.get_log_settings)
        return
    settings = client.get_log_settings()
    assert settings["log_info"] is True and isinstance(settings["log_verbose_level"], int)
    assert client.update_log_settings({"log_verbose_level": settings["log_verbose_level"]}) == settings


def test_load_with_config(kind: str, server: harness.Server) -> None:
    if server.name != "triton":
        pytest.skip(f"{server.name}: its load API takes no model configuration (Triton's model_repository extension)")
    c = make_client(kind, server, retries=0)
    name = server.info["loadable_model"]
    batched = {
        "backend": "python",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    }
    try:
        c.load_model(name, config=json.dumps(batched))
        assert c.get_model_config(name)["max_batch_size"] == 4
    finally:
        c.unload_model(name)
        c.close()


def test_request_controls(client: Any, server: harness.Server) -> None:
    ik = tensors()
    if server.name == "triton":  # Triton's own schedulers: a sequence batcher, a queue policy with priorities
        x = ik.InferInput("INPUT", [1], "INT32")
        x.set_data_from_numpy(np.array([4], np.int32))
        sequence = ik.InferRequest("sequence_sum", [x], sequence_id="matrix", sequence_start=True, sequence_end=True)
        assert int(client.infer(sequence).as_numpy("OUTPUT")[0]) == 4
        y = ik.InferInput("INPUT", [1, 1], "FP32")
        y.set_data_from_numpy(np.zeros((1, 1), np.float32))
        assert client.infer(ik.InferRequest("queue_sleep", [y], priority=1, timeout=10)).as_numpy("OUTPUT")[0] == 0
        return
    # Other servers take them as plain request parameters (passed to the model): accepted, answered as usual.
    x = sample("INT32")
    request = identity_request(server, "INT32", x, priority=1, timeout=10, sequence_id=9, sequence_start=True)
    output_equal(client.infer(request), "INT32", x)


# ---------------------------------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [None, False], ids=["auto", "json"])
def test_infer_add_sub(kind: str, server: harness.Server, binary: bool | None) -> None:
    if is_grpc(kind) and binary is False:
        pytest.skip("n/a: gRPC has no JSON mode")
    c = make_client(kind, server, **({} if is_grpc(kind) else {"binary_data": binary}))
    try:
        check_add_sub(c.infer(add_sub_request()))
        check_add_sub(c.infer(add_sub_request()))  # the binary decision is cached after the first call
    finally:
        c.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_identity_every_datatype(kind: str, server: harness.Server, binary: bool) -> None:
    """Every datatype the server's identity model accepts, round-tripped; failures collected per datatype."""
    if is_grpc(kind) and not binary:
        pytest.skip("n/a: gRPC has no JSON mode")
    if not is_grpc(kind) and binary and not server.has("binary_tensor_data"):
        pytest.skip(f"{server.name}: no binary tensor extension (the auto mode covers the fallback)")
    c = make_client(kind, server, **({} if is_grpc(kind) else {"binary_data": binary}))
    failures = {}
    try:
        for datatype in server.datatypes:
            if not binary and datatype in ("FP16", "BF16"):
                continue  # no JSON form (BF16) or none in practice (FP16): covered by test_json_fp16_bf16
            # KServe turns binary REST BYTES into JSON strings internally: non-UTF-8 elements fail there (500).
            utf8_only = not binary or (not is_grpc(kind) and not server.has("non_utf8_bytes_rest"))
            expected = sample(datatype, json=utf8_only)
            try:
                output_equal(c.infer(identity_request(server, datatype, expected, binary)), datatype, expected)
            except Exception as exc:  # collect every datatype's outcome, report them together
                failures[datatype] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        c.close()
    assert not failures, failures


def test_request_id_and_parameters(client: Any, server: harness.Server) -> None:
    x = sample("INT32")
    params = {"echo_int": 7, "echo_str": "hello", "echo_bool": True}
    response = client.infer(identity_request(server, "INT32", x, request_id="req-42", parameters=params))
    assert response.id == "req-42"
    output_equal(response, "INT32", x)
    if server.has("echo_parameters"):  # Triton 2.51's python backend cannot set response parameters
        assert {k: response.parameters.get(k) for k in params} == params


def test_requested_outputs_subset(client: Any, server: harness.Server) -> None:
    ik = tensors()
    request = add_sub_request(outputs=[ik.InferRequestedOutput("OUTPUT1")])
    response = client.infer(request)
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), A - B)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_request_compression(kind: str, server: harness.Server, algorithm: str) -> None:
    if is_grpc(kind):
        options: dict[str, Any] = {"compression": algorithm}
    else:
        options = {"compression": algorithm, "compression_threshold": 0}
    c = make_client(kind, server, **options)
    try:
        if is_grpc(kind) or server.has(f"request_{algorithm}"):
            check_add_sub(c.infer(add_sub_request()))
        else:
            # KServe cannot read compressed bodies (400), MLServer rejects deflate (422): a typed client error.
            with pytest.raises(errors().InvalidInputError):
                c.infer(add_sub_request())
    finally:
        c.close()


def test_accept_compression(kind: str, server: harness.Server) -> None:
    if is_grpc(kind):
        pytest.skip("n/a: gRPC response compression is negotiated by the channel")
    c = make_client(kind, server, accept_compression=True)
    try:
        check_add_sub(c.infer(add_sub_request()))
        assert c.get_model_metadata("add_sub")["name"] == "add_sub"
    finally:
        c.close()


def test_large_tensor_over_4mib(kind: str, server: harness.Server) -> None:
    """5 MiB in and out: gRPC's default 4 MiB receive limit must not bite (clients raise it)."""
    x = np.arange(5 * 1024 * 1024 // 4, dtype=np.float32).reshape(1, -1)
    c = make_client(kind, server)
    try:
        output_equal(c.infer(identity_request(server, "FP32", x)), "FP32", x)
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------------------------------
# typed errors
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: Any, server: harness.Server) -> None:
    ik = tensors()
    request = ik.InferRequest("no_such_model", add_sub_request().inputs)
    with pytest.raises(errors().NotFoundError) as info:
        client.infer(request)
    assert "no_such_model" in str(info.value)


def test_wrong_datatype_is_invalid_input(client: Any, server: harness.Server) -> None:
    ik = tensors()
    bad = ik.InferInput("INPUT0", [1, 16], "FP32", data=np.zeros((1, 16), np.float32))
    good = add_sub_request().inputs[1]
    with pytest.raises(errors().InvalidInputError) as info:
        client.infer(ik.InferRequest("add_sub", [bad, good]))
    assert "add_sub" in str(info.value)


def test_wrong_shape_is_invalid_input(client: Any, server: harness.Server) -> None:
    ik = tensors()
    x = np.zeros((1, 8), np.int32)
    inputs = [ik.InferInput("INPUT0", [1, 8], "INT32", data=x), ik.InferInput("INPUT1", [1, 8], "INT32", data=x)]
    with pytest.raises(errors().InvalidInputError):
        client.infer(ik.InferRequest("add_sub", inputs))


def test_model_error_is_a_server_error(client: Any, server: harness.Server) -> None:
    ik = tensors()
    x = np.ones(2, np.float32)
    with pytest.raises(errors().ServerError) as info:
        client.infer(ik.InferRequest(server.info["fail_model"], [ik.InferInput("INPUT0", [2], "FP32", data=x)]))
    assert "always fails" in str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# gRPC streaming (Triton decoupled model) and KServe v1
# ---------------------------------------------------------------------------------------------------------------------


def _stream_all(kind: str, client: Any, requests: list[Any]) -> list[Any]:
    """Every response of one ModelStreamInfer call carrying ``requests`` (sync, or aio driven on its loop)."""
    if not kind.startswith("aio"):
        with client.stream(timeout=30) as stream:
            for request in requests:
                stream.send(request)
            stream.close_send()
            return list(stream)

    async def run() -> list[Any]:
        async with client._client.stream(timeout=30) as stream:
            for request in requests:
                await stream.send(request)
            await stream.close_send()
            return [response async for response in stream]

    return client._run(run())  # type: ignore[no-any-return]


def test_stream_decoupled(kind: str, server: harness.Server, record_property: Any) -> None:
    if not is_grpc(kind):
        pytest.skip("n/a: streaming is gRPC only")
    c = make_client(kind, server, retries=0)
    try:
        if not server.has("stream"):
            # KServe has no ModelStreamInfer (UNIMPLEMENTED); MLServer's RPC of that name streams its own
            # generative-model API and fails a plain model's request with INTERNAL.
            expected = errors().UnimplementedError if server.name == "kserve" else errors().InternalServerError
            if server.name == "kserve":
                # KServe's grpc.aio server answers the unknown streaming method with UNIMPLEMENTED, or (seen in CI
                # on a loaded machine, up to four calls in a row) with INTERNAL "Internal error from Core" from
                # gRPC's C core rather than KServe's code. Both are the server's real answers; inferkit must map
                # either to its typed error with the message kept. Anything else fails.
                with pytest.raises(Exception) as info:
                    _stream_all(kind, c, [add_sub_request()])
                got = info.value
                core = isinstance(got, errors().InternalServerError) and str(got).startswith("Internal error from Core")
                assert type(got) is expected or core, f"unexpected {type(got).__name__}: {got}"
                record_property(matrix.LACKING_PROPERTY, type(got).__name__)
                return
            lacks(record_property, expected, _stream_all, kind, c, [add_sub_request()])
            return
        ik = tensors()
        values = np.array([7, 8, 9], np.int32)
        request = ik.InferRequest(server.info["decoupled_model"], [ik.InferInput("IN", [3], "INT32", data=values)])
        got = [int(r.as_numpy("OUT")[0]) for r in _stream_all(kind, c, [request, request])]
        assert got == [7, 8, 9, 7, 8, 9]
    finally:
        c.close()


def test_shared_memory_status(kind: str, client: Any, server: harness.Server, record_property: Any) -> None:
    """System shared memory status on every server (round trips on Triton: test_shm_interop.py)."""
    if server.name != "triton":
        lacks(record_property, missing_endpoint(kind), client.get_system_shared_memory_status)
        return
    assert isinstance(client.get_system_shared_memory_status(), list)


def test_v1_predict_explain(kind: str, server: harness.Server, record_property: Any) -> None:
    if is_grpc(kind):
        pytest.skip("n/a: KServe v1 is REST only")
    c = make_client(kind, server, protocol="v1")
    try:
        if not server.has("v1_rest"):  # Triton and MLServer: no /v1 routes at all
            assert c.is_model_ready("add_sub") is False
            lacks(record_property, errors().NotFoundError, c.predict, "add_sub", instances=[[1]])
            lacks(record_property, errors().NotFoundError, c.explain, "add_sub", instances=[[1]])
            return
        assert c.is_model_ready("add_sub") is True
        assert c.is_model_ready("no_such_model") is False
        instance = {"INPUT0": A[0].tolist(), "INPUT1": B[0].tolist()}
        reply = c.predict("add_sub", instances=[instance])
        assert reply["predictions"][0]["OUTPUT0"] == (A + B)[0].tolist()
        assert c.explain("identity", instances=[[1, 2]]) == {"explanations": [[1, 2]]}
        with pytest.raises(errors().NotFoundError):
            c.predict("no_such_model", instances=[[1]])
    finally:
        c.close()
