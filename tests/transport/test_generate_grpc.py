"""generate / generate_stream on the gRPC clients (ModelInfer / ModelStreamInfer) give what REST gives, and
generate_many on all four clients, against the reference server."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

pytest.importorskip("grpc")

import inferkit.aio as aio  # noqa: E402
from inferkit import InferenceGRPCClient, InferenceRESTClient, errors  # noqa: E402
from inferkit.errors import ItemError  # noqa: E402
from inferkit.testing import ReferenceServer  # noqa: E402

TEXT = "the quick brown fox jumps"

#: (model, payload): streaming models (decoupled), a one-answer model, numbers and parameters.
STREAM_CASES = [
    ("llm", {"text_input": TEXT}),
    ("llm", {"text_input": TEXT, "max_tokens": 3, "parameters": {"delay": 0.0}}),
    ("llm_once", {"text_input": TEXT}),
    ("repeat", {"IN": [4, 5, 6], "repeat_count": 5}),
]
ANSWER_CASES = [
    ("llm_once", {"text_input": TEXT, "max_tokens": 2}),
    ("llm", {"text_input": "single"}),  # decoupled, exactly one response: an answer on both protocols
    ("identity_fp32", {"INPUT0": [1.5, 2.5]}),
    ("identity_bytes", {"INPUT0": "héllo"}),
]


@pytest.fixture
def clients(reference_server: ReferenceServer) -> Any:
    with (
        InferenceRESTClient(reference_server.http_url) as rest,
        InferenceGRPCClient(reference_server.grpc_address) as g,
    ):
        yield rest, g


@pytest.mark.parametrize(("model", "payload"), STREAM_CASES, ids=lambda v: str(v)[:30])
def test_rest_and_grpc_give_equal_events(clients: Any, model: str, payload: dict[str, Any]) -> None:
    rest, grpc = clients
    expected = list(rest.generate_stream(model, payload))
    assert expected
    assert list(grpc.generate_stream(model, payload)) == expected


@pytest.mark.parametrize(("model", "payload"), ANSWER_CASES, ids=lambda v: str(v)[:30])
def test_rest_and_grpc_give_equal_answers(clients: Any, model: str, payload: dict[str, Any]) -> None:
    rest, grpc = clients
    assert grpc.generate(model, payload) == rest.generate(model, payload)


def test_aio_rest_and_aio_grpc_give_the_sync_events(reference_server: ReferenceServer, clients: Any) -> None:
    rest = clients[0]

    async def main() -> None:
        async with (
            aio.InferenceRESTClient(reference_server.http_url) as r,
            aio.InferenceGRPCClient(reference_server.grpc_address) as g,
        ):
            for model, payload in STREAM_CASES:
                expected = list(rest.generate_stream(model, payload))
                assert [e async for e in r.generate_stream(model, payload)] == expected
                assert [e async for e in g.generate_stream(model, payload)] == expected
            for model, payload in ANSWER_CASES:
                assert await g.generate(model, payload) == await r.generate(model, payload)

    asyncio.run(main())


def test_grpc_errors_name_the_model(clients: Any) -> None:
    _, grpc = clients
    with pytest.raises(errors.InvalidInputError, match="exactly 1 response") as info:
        grpc.generate("llm", {"text_input": TEXT})
    assert info.value.model_name == "llm"
    got = []
    with pytest.raises(errors.ServerError, match="planned failure after 2 tokens") as err:
        for event in grpc.generate_stream("llm", {"text_input": TEXT, "fail_after": 2}):
            got.append(event["text_output"])
    assert got == ["the ", "quick "] and err.value.model_name == "llm"
    with pytest.raises(errors.EncodeError, match="'llm'.*none of the model's inputs"):
        grpc.generate_stream("llm", {"prompt": TEXT})
    with pytest.raises(errors.EncodeError, match="'llm'.*'text_input'.*BYTES|'llm'.*parameter"):
        grpc.generate("llm", {"text_input": TEXT, "extra": [object()]})
    with pytest.raises(errors.NotFoundError):
        grpc.generate("nope", {"text_input": TEXT})


def test_grpc_metadata_is_fetched_once_per_model(reference_server: ReferenceServer) -> None:
    with InferenceGRPCClient(reference_server.grpc_address) as grpc:
        for _ in range(3):
            grpc.generate("llm_once", {"text_input": "x"})
            list(grpc.generate_stream("llm", {"text_input": "x y"}))
        assert reference_server.count("model_metadata") == 2


def test_grpc_leaving_early_cancels_the_call(reference_server: ReferenceServer) -> None:
    payload = {"text_input": " ".join(["w"] * 200), "delay": 0.02}
    with InferenceGRPCClient(reference_server.grpc_address) as grpc:
        stream = grpc.generate_stream("llm", payload)
        inner = stream._stream
        with stream:
            next(stream)
        assert inner._cancelled and stream._stream is None
        deadline = time.monotonic() + 5
        while not reference_server.abandoned("stream_infer") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reference_server.abandoned("stream_infer") == ["grpc"]  # the server saw the call cancelled
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(200):
            for _event in grpc.generate_stream("llm", {"text_input": " ".join(["w"] * 40)}):
                break
        assert len(os.listdir("/proc/self/fd")) <= fds + 2
        assert grpc.generate("llm_once", {"text_input": "ok"})["text_output"] == "ok"


def test_grpc_many_threads_on_one_client(reference_server: ReferenceServer) -> None:
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                events = list(grpc.generate_stream("llm", {"text_input": f"t{i} {TEXT}"}))
                assert [e["text_output"] for e in events][0] == f"t{i} "
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    with InferenceGRPCClient(reference_server.grpc_address) as grpc:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not failures, failures[0]


def test_aio_grpc_cancel_closes_the_call(reference_server: ReferenceServer) -> None:
    async def main() -> None:
        async with aio.InferenceGRPCClient(reference_server.grpc_address) as g:

            async def reader() -> None:
                async for _ in g.generate_stream("llm", {"text_input": " ".join(["w"] * 200), "delay": 0.02}):
                    pass

            task = asyncio.ensure_future(reader())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with g.generate_stream("llm", {"text_input": "a b c"}) as s:
                assert (await s.__anext__())["text_output"] == "a "
            assert (await g.generate("llm_once", {"text_input": "ok"}))["text_output"] == "ok"

    asyncio.run(main())


# -- generate_many ------------------------------------------------------------------------------------------------
PAYLOADS = [{"text_input": f"item {i}"} for i in range(20)] + [{"prompt": "bad"}]


def _check_many(results: list[Any]) -> None:
    assert [r["text_output"] for r in results[:20]] == [f"item {i}" for i in range(20)]
    assert isinstance(results[20], ItemError) and results[20].index == 20
    assert isinstance(results[20].exception, (errors.InvalidInputError, errors.EncodeError))


def test_generate_many_on_the_sync_clients(clients: Any) -> None:
    for client in clients:
        _check_many(list(client.generate_many("llm_once", PAYLOADS, concurrency=4, return_exceptions=True)))
        unordered = dict(client.generate_many("llm_once", PAYLOADS[:20], concurrency=4, ordered=False))
        assert sorted(unordered) == list(range(20))
        with pytest.raises(errors.ServerError) as info:
            list(client.generate_many("llm", [{"text_input": "a"}, {"text_input": "a b"}], concurrency=2))
        assert getattr(info.value, "index", None) == 1


def test_generate_many_on_the_aio_clients(reference_server: ReferenceServer) -> None:
    async def main() -> None:
        async with (
            aio.InferenceRESTClient(reference_server.http_url) as r,
            aio.InferenceGRPCClient(reference_server.grpc_address) as g,
        ):
            for client in (r, g):
                results = [
                    x async for x in client.generate_many("llm_once", PAYLOADS, concurrency=4, return_exceptions=True)
                ]
                _check_many(results)

    asyncio.run(main())


def test_grpc_streams_are_retried_before_their_first_event_only(reference_server: ReferenceServer) -> None:
    from inferkit import RetryPolicy
    from inferkit.testing import Fault

    policy = RetryPolicy(max_retries=2, backoff_initial=0.01)
    with InferenceGRPCClient(reference_server.grpc_address, retry=policy) as grpc:
        grpc.generate_stream("llm", {"text_input": "warm"}).close()  # metadata cached: only streams count below
        reference_server.reset()
        reference_server.inject(Fault(route="stream_infer", action="grpc_status", code="UNAVAILABLE", times=1))
        assert [e["text_output"] for e in grpc.generate_stream("llm", {"text_input": TEXT})][-1] == "jumps"
        assert reference_server.count("stream_infer") == 2
        reference_server.inject(Fault(route="stream_infer", action="grpc_status", code="INVALID_ARGUMENT", times=1))
        with pytest.raises(errors.InvalidInputError):
            list(grpc.generate_stream("llm", {"text_input": TEXT}))
        reference_server.reset()
        reference_server.inject(Fault(route="stream_infer", action="grpc_status", code="UNAVAILABLE", times=5))
        with pytest.raises(errors.ServiceUnavailableError):
            list(grpc.generate_stream("llm", {"text_input": TEXT}))
        assert reference_server.count("stream_infer") == 3  # the first attempt and the policy's 2 retries
        reference_server.reset()  # the fault's 2 unused times

    async def main() -> None:
        async with aio.InferenceGRPCClient(reference_server.grpc_address, retry=policy) as g:
            reference_server.inject(Fault(route="stream_infer", action="grpc_status", code="UNAVAILABLE", times=1))
            assert [e["text_output"] async for e in g.generate_stream("llm", {"text_input": TEXT})][-1] == "jumps"

    asyncio.run(main())
