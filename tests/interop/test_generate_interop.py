"""The generate extension against real servers: all four clients on Triton 2.51 (python-backend decoupled ``llm``,
tests/interop/triton_models/llm), the reference server's events next to Triton's, and what KServe and MLServer
answer on these routes.

Run: ``python -m pytest tests/interop -m interop -k generate``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inferkit import InferenceGRPCClient, InferenceRESTClient, RESTConfig, RetryPolicy, Timeout, errors
from inferkit.testing import ReferenceServer
from tests.interop import harness

pytestmark = pytest.mark.interop

aio = pytest.importorskip("inferkit.aio")
models = pytest.importorskip("inferkit.testing.models")

TEXT = "the quick brown fox jumps"
WORDS = ["the ", "quick ", "brown ", "fox ", "jumps"]
KINDS = ("rest", "aio_rest", "grpc", "aio_grpc")


def _run(kind: str, server: harness.Server, action: Any) -> Any:
    """``action(client)`` (a coroutine function for the aio kinds) on a fresh client of ``kind``."""
    if kind == "rest":
        with InferenceRESTClient(server.http_url) as client:
            return action(client)
    if kind == "grpc":
        with InferenceGRPCClient(server.grpc_address) as client:
            return action(client)

    async def main() -> Any:
        cls = aio.InferenceRESTClient if kind == "aio_rest" else aio.InferenceGRPCClient
        async with cls(server.http_url if kind == "aio_rest" else server.grpc_address) as client:
            return await action(client)

    return asyncio.run(main())


def _events(kind: str, server: harness.Server, model: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    if kind.startswith("aio"):

        async def collect(c: Any) -> list[dict[str, Any]]:
            return [e async for e in c.generate_stream(model, payload)]

        return _run(kind, server, collect)  # type: ignore[no-any-return]
    return _run(kind, server, lambda c: list(c.generate_stream(model, payload)))  # type: ignore[no-any-return]


def _answer(kind: str, server: harness.Server, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    if kind.startswith("aio"):

        async def call(c: Any) -> dict[str, Any]:
            return await c.generate(model, payload)  # type: ignore[no-any-return]

        return _run(kind, server, call)  # type: ignore[no-any-return]
    return _run(kind, server, lambda c: c.generate(model, payload))  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", KINDS)
def test_generate_stream_on_triton(triton: harness.Server, kind: str) -> None:
    events = _events(kind, triton, "llm", {"text_input": TEXT})
    assert events == [{"model_name": "llm", "model_version": "1", "text_output": w} for w in WORDS]
    assert [e["text_output"] for e in _events(kind, triton, "llm", {"text_input": TEXT, "max_tokens": 2})] == WORDS[:2]
    # Numbers: repeat_int32 (IN INT32 [-1]); one event per element, scalars out.
    got = _events(kind, triton, "repeat_int32", {"IN": [7, 8]})
    assert [(e["OUT"], e["IDX"]) for e in got] == [(7, 0), (8, 1)]


@pytest.mark.parametrize("kind", KINDS)
def test_generate_on_triton(triton: harness.Server, kind: str) -> None:
    answer = _answer(kind, triton, "llm", {"text_input": TEXT, "max_tokens": 1})
    assert answer == {"model_name": "llm", "model_version": "1", "text_output": "the "}
    with pytest.raises(errors.InvalidInputError, match="'llm'") as info:
        _answer(kind, triton, "llm", {"text_input": TEXT})
    assert info.value.model_name == "llm"


@pytest.mark.parametrize("kind", KINDS)
def test_generate_errors_on_triton(triton: harness.Server, kind: str) -> None:
    got: list[str] = []

    def consume(c: Any) -> None:
        for event in c.generate_stream("llm", {"text_input": TEXT, "fail_after": 2}):
            got.append(event["text_output"])

    async def aconsume(c: Any) -> None:
        async for event in c.generate_stream("llm", {"text_input": TEXT, "fail_after": 2}):
            got.append(event["text_output"])

    with pytest.raises(errors.ServerError, match="planned failure after 2 tokens") as info:
        _run(kind, triton, aconsume if kind.startswith("aio") else consume)
    assert got == WORDS[:2] and info.value.model_name == "llm"
    # Before inference begins: an error status (REST) or code (gRPC), or our own check of the payload.
    with pytest.raises((errors.InvalidInputError, errors.EncodeError)):
        _events(kind, triton, "llm", {"prompt": TEXT})
    with pytest.raises(
        errors.NotFoundError if kind.endswith("rest") else (errors.NotFoundError, errors.InvalidInputError)
    ):
        _answer(kind, triton, "no_such_model", {"text_input": TEXT})


@pytest.mark.parametrize("kind", ("rest", "grpc"))
def test_leaving_early_cancels_generation_on_triton(triton: harness.Server, kind: str) -> None:
    # The model has one instance: if the abandoned request went on generating (60 words, 0.1 s each) the next one
    # would wait behind it for its first event longer than its read timeout.
    long = {"text_input": " ".join(["w"] * 60), "delay": 0.1}
    config = RESTConfig(timeout=Timeout(read=3.0), retry=RetryPolicy(max_retries=0))
    client: Any = (
        InferenceRESTClient(triton.http_url, config=config)
        if kind == "rest"
        else InferenceGRPCClient(triton.grpc_address, timeout=30)
    )
    with client:
        with client.generate_stream("llm", long) as stream:
            next(stream)
        events = list(client.generate_stream("llm", {"text_input": TEXT, "delay": 0.01}))
        assert [e["text_output"] for e in events] == WORDS


def test_rest_and_grpc_give_equal_events_on_triton(triton: harness.Server) -> None:
    for model, payload in (("llm", {"text_input": TEXT}), ("repeat_int32", {"IN": [1, 2, 3]})):
        assert _events("rest", triton, model, payload) == _events("grpc", triton, model, payload)


def test_reference_server_streams_what_triton_streams(triton: harness.Server) -> None:
    """Differential: the same generate payloads to Triton and to the reference server (its llm model)."""
    cases = [
        ("llm", {"text_input": TEXT}),
        ("llm", {"text_input": TEXT, "max_tokens": 3}),
        ("llm", {"text_input": "one"}),
    ]
    with ReferenceServer([models.llm_model()]) as ref:
        for model, payload in cases:
            assert _events("rest", ref, model, payload) == _events("rest", triton, model, payload)  # type: ignore[arg-type]
            assert _answer("rest", ref, model, {**payload, "max_tokens": 1}) == _answer(
                "rest", triton, model, {**payload, "max_tokens": 1}
            )  # type: ignore[arg-type]
        for server in (ref, triton):
            with pytest.raises(errors.InvalidInputError, match="exactly 1 response"):
                _answer("rest", server, "llm", {"text_input": TEXT})  # type: ignore[arg-type]
            with pytest.raises(errors.ServerError, match="planned failure after 1 tokens"):
                _events("rest", server, "llm", {"text_input": TEXT, "fail_after": 1})  # type: ignore[arg-type]


# Neither KServe 0.21 nor MLServer serves Triton's generate schema. KServe has no such route (404); MLServer's
# /generate route is its own and wants a v2 inference request ("inputs": 422). Over gRPC their models' metadata
# declares no inputs, which generate needs to type the payload: an EncodeError saying so, before any inference.
# The exact classes are asserted so that a change on their side is noticed.
ADD_SUB = {"INPUT0": list(range(16)), "INPUT1": [1] * 16}
OTHER_SERVERS = {
    ("kserve", "rest"): errors.NotFoundError,
    ("mlserver", "rest"): errors.UnprocessableEntityError,
    ("kserve", "grpc"): errors.EncodeError,
    ("mlserver", "grpc"): errors.EncodeError,
}


@pytest.mark.parametrize("kind", KINDS)
def test_kserve_generate_is_a_typed_error(kserve: harness.Server, kind: str) -> None:
    expected = OTHER_SERVERS[("kserve", kind.replace("aio_", ""))]
    with pytest.raises(expected):
        _answer(kind, kserve, "add_sub", ADD_SUB)
    with pytest.raises(expected):
        _events(kind, kserve, "add_sub", ADD_SUB)


@pytest.mark.parametrize("kind", KINDS)
def test_mlserver_generate_is_a_typed_error(mlserver: harness.Server, kind: str) -> None:
    expected = OTHER_SERVERS[("mlserver", kind.replace("aio_", ""))]
    with pytest.raises(expected):
        _answer(kind, mlserver, "add_sub", ADD_SUB)
    with pytest.raises(expected):
        _events(kind, mlserver, "add_sub", ADD_SUB)
