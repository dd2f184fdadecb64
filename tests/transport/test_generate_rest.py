"""generate / generate_stream on the sync and aio REST clients, against the reference server (and a raw server for
bytes the reference server never sends): answers, both error forms after a 200, malformed events, timeouts per
event and deadline per stream, retries only before the first event, leaving early, descriptors, threads."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

import inferkit.aio as aio
from inferkit import InferenceRESTClient, RESTConfig, RetryPolicy, Timeout, errors
from inferkit.testing import Fault, ReferenceServer
from tests.reliability.rawserver import RawHTTPServer, http_reply

TEXT = "the quick brown fox jumps"
WORDS = ["the ", "quick ", "brown ", "fox ", "jumps"]


def _texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["text_output"] for e in events]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_for(predicate: Any, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- sync -------------------------------------------------------------------------------------------------------------
@pytest.fixture
def client(reference_server: ReferenceServer) -> Any:
    with InferenceRESTClient(reference_server.http_url) as c:
        yield c


def test_generate_answers_one_dict(client: InferenceRESTClient) -> None:
    answer = client.generate("llm_once", {"text_input": TEXT, "max_tokens": 2})
    assert answer == {"model_name": "llm_once", "model_version": "1", "text_output": "the quick "}
    assert client.generate("llm_once", {"text_input": "hi"}, model_version="1")["text_output"] == "hi"


def test_generate_on_a_streaming_model_is_the_200_error_form(client: InferenceRESTClient) -> None:
    with pytest.raises(errors.InvalidInputError, match="exactly 1 response") as info:
        client.generate("llm", {"text_input": TEXT})
    assert info.value.model_name == "llm" and "'llm'" in str(info.value) and "generate_stream" in str(info.value)


def test_generate_errors_before_inference_are_statuses(client: InferenceRESTClient) -> None:
    with pytest.raises(errors.NotFoundError):
        client.generate("nope", {"text_input": "x"})
    with pytest.raises(errors.InvalidInputError, match="text_input"):
        client.generate("llm_once", {"prompt": "x"})
    with pytest.raises(errors.EncodeError, match="'llm_once'.*mapping"):
        client.generate("llm_once", ["text_input"])  # type: ignore[arg-type]
    with pytest.raises(errors.EncodeError, match="'llm_once'.*JSON"):
        client.generate("llm_once", {"text_input": object()})


def test_generate_stream_yields_each_event(client: InferenceRESTClient) -> None:
    events = list(client.generate_stream("llm", {"text_input": TEXT}))
    assert _texts(events) == WORDS
    assert events[0] == {"model_name": "llm", "model_version": "1", "text_output": "the "}
    with client.generate_stream("llm", {"text_input": TEXT, "max_tokens": 2}) as stream:
        assert _texts(list(stream)) == WORDS[:2]


def test_generate_stream_error_event_after_a_200(client: InferenceRESTClient) -> None:
    got: list[str] = []
    with pytest.raises(errors.InternalServerError, match="planned failure after 2 tokens") as info:
        for event in client.generate_stream("llm", {"text_input": TEXT, "fail_after": 2}):
            got.append(event["text_output"])
    assert got == WORDS[:2]
    assert info.value.model_name == "llm" and "generate_stream on model 'llm'" in str(info.value)


def test_generate_stream_error_before_the_first_event_is_a_status(client: InferenceRESTClient) -> None:
    with pytest.raises(errors.InvalidInputError, match="text_input"):
        client.generate_stream("llm", {"prompt": TEXT})


def test_read_timeout_bounds_each_event_not_the_stream(reference_server: ReferenceServer) -> None:
    config = RESTConfig(timeout=Timeout(read=2.0), retry=RetryPolicy(max_retries=0))
    with InferenceRESTClient(reference_server.http_url, config=config) as c:
        # 5 events 0.5 s apart: longer than the read timeout in all, each one well within it.
        assert _texts(list(c.generate_stream("llm", {"text_input": TEXT, "delay": 0.5}))) == WORDS
        stream = c.generate_stream("llm", {"text_input": TEXT, "delay": 0.5})
        next(stream)
    config = RESTConfig(timeout=Timeout(read=0.3), retry=RetryPolicy(max_retries=0))
    with InferenceRESTClient(reference_server.http_url, config=config) as c:
        with c.generate_stream("llm", {"text_input": "a", "delay": 0.0}) as s:
            assert _texts(list(s)) == ["a"]
        with pytest.raises(errors.ReadTimeout, match="'llm'"):
            list(c.generate_stream("llm", {"text_input": TEXT, "delay": 1.0}))


def test_deadline_bounds_the_whole_stream(reference_server: ReferenceServer) -> None:
    config = RESTConfig(timeout=Timeout(read=5.0), retry=RetryPolicy(max_retries=0, deadline=1.0))
    got: list[str] = []
    with InferenceRESTClient(reference_server.http_url, config=config) as c:
        with pytest.raises(errors.DeadlineExceeded, match="'llm'"):
            for event in c.generate_stream("llm", {"text_input": " ".join(["w"] * 50), "delay": 0.1}):
                got.append(event["text_output"])
    assert 1 <= len(got) < 50


def test_retries_before_the_first_event_only(reference_server: ReferenceServer) -> None:
    config = RESTConfig(retry=RetryPolicy(max_retries=2, backoff_initial=0.01))
    with InferenceRESTClient(reference_server.http_url, config=config) as c:
        reference_server.inject(Fault(route="generate_stream", action="status", status=503, times=1))
        assert _texts(list(c.generate_stream("llm", {"text_input": TEXT}))) == WORDS
        assert reference_server.count("generate_stream") == 2
        reference_server.inject(Fault(route="generate", action="drop_before", times=1))
        assert c.generate("llm_once", {"text_input": "x"})["text_output"] == "x"


def test_a_stream_cut_after_its_first_event_is_not_retried() -> None:
    body = b'data: {"text_output": "a"}\n\ndata: {"text_out'

    def respond(conn: int, index: int, request: bytes) -> bytes:
        return http_reply(body, headers={"Content-Type": "text/event-stream"}, content_length=len(body) + 50)

    config = RESTConfig(retry=RetryPolicy(max_retries=3, backoff_initial=0.01))
    with RawHTTPServer(respond) as server, InferenceRESTClient(server.url, config=config) as c:
        stream = c.generate_stream("m", {"text_input": "x"})
        assert next(stream) == {"text_output": "a"}
        with pytest.raises(errors.ConnectError, match="after 1 events of model 'm'"):
            next(stream)
        assert server.requests == 1


def test_failures_before_the_first_event_are_retried_and_give_each_connection_back_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inferkit._transport import pool as pools

    moves: list[str] = []
    checkout, checkin = pools.checkout, pools.checkin
    monkeypatch.setattr(pools, "checkout", lambda *a, **k: moves.append("out") or checkout(*a, **k))
    monkeypatch.setattr(pools, "checkin", lambda *a, **k: moves.append("in") or checkin(*a, **k))

    def respond(conn: int, index: int, request: bytes) -> bytes:  # the head of a stream, then the connection closes
        return http_reply(b": hello\n", headers={"Content-Type": "text/event-stream"}, content_length=100)

    config = RESTConfig(retry=RetryPolicy(max_retries=2, backoff_initial=0.01))
    with RawHTTPServer(respond) as server, InferenceRESTClient(server.url, config=config) as c:
        with pytest.raises(errors.ConnectError):
            c.generate_stream("m", {"text_input": "x"})
        assert server.requests == 3
    assert moves.count("out") == moves.count("in") == 3


def test_a_malformed_event_is_a_decode_error_with_its_first_bytes() -> None:
    body = b'data: {"text_output": "a"}\n\ndata: not json at all\n\n'

    def respond(conn: int, index: int, request: bytes) -> bytes:
        return http_reply(body, headers={"Content-Type": "text/event-stream; charset=utf-8"})

    with RawHTTPServer(respond) as server, InferenceRESTClient(server.url) as c:
        stream = c.generate_stream("m", {"text_input": "x"})
        assert next(stream)["text_output"] == "a"
        with pytest.raises(errors.DecodeError, match=r"model 'm'.*not json at all.*\(event 2\)") as info:
            next(stream)
        assert info.value.model_name == "m"

        async def aio_stream() -> None:  # the same error, worded the same, from the async stream
            async with aio.InferenceRESTClient(server.url) as ac:
                async with ac.generate_stream("m", {"text_input": "x"}) as astream:
                    assert (await astream.__anext__())["text_output"] == "a"
                    with pytest.raises(errors.DecodeError, match=r"model 'm'.*not json at all.*\(event 2\)"):
                        await astream.__anext__()

        asyncio.run(aio_stream())
        # A final event without its blank line is still delivered; a JSON answer to generate_stream is one event.
    for body2, ctype in ((b'data: {"x": 1}', "text/event-stream"), (b'{"x": 2}', "application/json")):

        def respond2(conn: int, index: int, request: bytes, body2: bytes = body2, ctype: str = ctype) -> bytes:
            return http_reply(body2, headers={"Content-Type": ctype})

        with RawHTTPServer(respond2) as server, InferenceRESTClient(server.url) as c:
            assert len(list(c.generate_stream("m", {}))) == 1


def test_leaving_early_closes_the_connection_and_stops_generation(reference_server: ReferenceServer) -> None:
    with InferenceRESTClient(reference_server.http_url) as c:
        with c.generate_stream("llm", {"text_input": " ".join(["w"] * 100), "delay": 0.05}) as stream:
            next(stream)
        assert _wait_for(lambda: reference_server.abandoned("generate_stream") == ["rest"])
        for _event in c.generate_stream("llm", {"text_input": " ".join(["w"] * 100), "delay": 0.05}):
            break
        assert _wait_for(lambda: reference_server.abandoned("generate_stream") == ["rest", "rest"])
        # The pool is intact: the next calls work on fresh or clean connections.
        assert c.generate("llm_once", {"text_input": "ok"})["text_output"] == "ok"


def test_descriptors_back_to_baseline_after_1000_early_exits(reference_server: ReferenceServer) -> None:
    payload = {"text_input": " ".join(["w"] * 40)}
    with InferenceRESTClient(reference_server.http_url) as c:
        with c.generate_stream("llm", payload) as s:  # warm up: pool, threads
            next(s)
        baseline = _fds()
        for _ in range(1000):
            with c.generate_stream("llm", payload) as s:
                next(s)
        assert _wait_for(lambda: _fds() <= baseline + 2), (baseline, _fds())


def test_many_threads_stream_on_one_client(reference_server: ReferenceServer) -> None:
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(10):
                assert (
                    _texts(list(client.generate_stream("llm", {"text_input": f"t{i} " + TEXT}))) == [f"t{i} "] + WORDS
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    with InferenceRESTClient(reference_server.http_url) as client:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not failures, failures[0]


# -- aio ---------------------------------------------------------------------------------------------------------
def test_aio_generate_and_stream(reference_server: ReferenceServer) -> None:
    async def main() -> None:
        async with aio.InferenceRESTClient(reference_server.http_url) as c:
            assert (await c.generate("llm_once", {"text_input": "hi"}))["text_output"] == "hi"
            with pytest.raises(errors.InvalidInputError, match="exactly 1 response"):
                await c.generate("llm", {"text_input": TEXT})
            stream = c.generate_stream("llm", {"text_input": TEXT})  # not awaited
            assert _texts([e async for e in stream]) == WORDS
            async with c.generate_stream("llm", {"text_input": TEXT}) as s:
                assert (await s.__anext__())["text_output"] == "the "
            got: list[str] = []
            with pytest.raises(errors.InternalServerError, match="planned failure"):
                async for e in c.generate_stream("llm", {"text_input": TEXT, "fail_after": 1}):
                    got.append(e["text_output"])
            assert got == WORDS[:1]
            with pytest.raises(errors.InvalidInputError):
                async for _ in c.generate_stream("llm", {"prompt": "x"}):
                    pass

    asyncio.run(main())


def test_aio_timeouts_deadline_and_retries(reference_server: ReferenceServer) -> None:
    async def main() -> None:
        config = RESTConfig(timeout=Timeout(read=0.3), retry=RetryPolicy(max_retries=0))
        async with aio.InferenceRESTClient(reference_server.http_url, config=config) as c:
            with pytest.raises(errors.ReadTimeout):
                async for _ in c.generate_stream("llm", {"text_input": TEXT, "delay": 1.0}):
                    pass
        config = RESTConfig(timeout=Timeout(read=5.0), retry=RetryPolicy(max_retries=0, deadline=1.0))
        async with aio.InferenceRESTClient(reference_server.http_url, config=config) as c:
            n = 0
            with pytest.raises(errors.DeadlineExceeded):
                async for _ in c.generate_stream("llm", {"text_input": " ".join(["w"] * 50), "delay": 0.1}):
                    n += 1
            assert 1 <= n < 50
        config = RESTConfig(retry=RetryPolicy(max_retries=2, backoff_initial=0.01))
        async with aio.InferenceRESTClient(reference_server.http_url, config=config) as c:
            reference_server.inject(Fault(route="generate_stream", action="status", status=503, times=1))
            assert _texts([e async for e in c.generate_stream("llm", {"text_input": TEXT})]) == WORDS

    asyncio.run(main())


def test_aio_cancel_and_early_exit_close_the_connection(reference_server: ReferenceServer) -> None:
    payload = {"text_input": " ".join(["w"] * 100), "delay": 0.05}

    async def main() -> None:
        async with aio.InferenceRESTClient(reference_server.http_url) as c:

            async def reader() -> None:
                async for _ in c.generate_stream("llm", payload):
                    pass

            task = asyncio.ensure_future(reader())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert c._transport.connector_stats()["acquired"] == 0
            async with c.generate_stream("llm", payload) as s:
                await s.__anext__()
            for _ in range(100):
                if len(reference_server.abandoned("generate_stream")) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert reference_server.abandoned("generate_stream") == ["rest", "rest"]
            fast = {"text_input": " ".join(["w"] * 40)}
            baseline = _fds()
            for _ in range(1000):
                async with c.generate_stream("llm", fast) as s:
                    await s.__anext__()
            for _ in range(100):
                if _fds() <= baseline + 2:
                    break
                await asyncio.sleep(0.05)
            assert _fds() <= baseline + 2

    asyncio.run(main())


def test_aio_many_streams_at_once(reference_server: ReferenceServer) -> None:
    async def main() -> None:
        async with aio.InferenceRESTClient(reference_server.http_url) as c:

            async def one(i: int) -> list[str]:
                return _texts([e async for e in c.generate_stream("llm", {"text_input": f"t{i} " + TEXT})])

            results = await asyncio.gather(*(one(i) for i in range(50)))
            assert results == [[f"t{i} "] + WORDS for i in range(50)]

    asyncio.run(main())


def test_session_path_and_verbose_stream_too(reference_server: ReferenceServer) -> None:
    import requests

    session = requests.Session()
    seen: list[int] = []
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))  # requests' own path
    with InferenceRESTClient(reference_server.http_url, config=RESTConfig(verbose=True), session=session) as c:
        assert c._transport.direct is False
        assert _texts(list(c.generate_stream("llm", {"text_input": TEXT}))) == WORDS
        with c.generate_stream("llm", {"text_input": " ".join(["w"] * 100), "delay": 0.05}) as s:
            next(s)
        with pytest.raises(errors.InternalServerError, match="planned failure"):
            list(c.generate_stream("llm", {"text_input": TEXT, "fail_after": 1}))
        assert c.generate("llm_once", {"text_input": "x"})["text_output"] == "x"
    assert seen and set(seen) == {200}
    session.close()
