"""Async batch jobs (``inferkit.aio.batching``) against the reference server over 127.0.0.1.

Runs against every async client ``inferkit.aio`` has (REST; gRPC once it exists), adding
``AsyncBatchMixin`` to a client class that does not inherit it yet. Every test body runs under
``asyncio.wait_for``, and no task may outlive it.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import sys
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import numpy as np
import pytest

from inferkit import InferRequest, InferResponse, RESTConfig
from inferkit.aio.batching import AsyncBatchMixin
from inferkit.batching import BatchMixin, ItemError
from inferkit.errors import EncodeError, InvalidInputError
from tests.transport._batch_support import BatchServer, CountingSource, probe_request, value_of

aiohttp = pytest.importorskip("aiohttp")

LIMIT = 20.0  # seconds any test body may take before it fails


def _real_async_clients() -> list[tuple[str, Callable[[BatchServer], Any]]]:
    found = []
    for module_name, class_name, kind in (
        ("inferkit.aio.rest_client", "InferenceRESTClient", "rest"),
        ("inferkit.aio.grpc_client", "InferenceGRPCClient", "grpc"),
    ):
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if not issubclass(cls, AsyncBatchMixin):
            cls = type(f"Batch{cls.__name__}", (AsyncBatchMixin, cls), {})
        if kind == "rest":
            found.append(("aio-rest", lambda s, c=cls: c(s.server.http_url, RESTConfig(retries=0, timeout=10))))
        else:
            found.append(("aio-grpc", lambda s, c=cls: c(s.server.grpc_url, retries=0, timeout=10)))
    return found


CLIENTS = _real_async_clients()
if not CLIENTS:
    pytest.skip("inferkit.aio has no client yet", allow_module_level=True)


@pytest.fixture(params=[make for _, make in CLIENTS], ids=[name for name, _ in CLIENTS])
def run(request: pytest.FixtureRequest, bs: BatchServer) -> Callable[[Callable[[Any], Awaitable[Any]]], Any]:
    """``run(body)``: ``await body(client)`` on a fresh loop with a fresh client, bounded by LIMIT."""
    make = request.param

    def runner(body: Callable[[Any], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            async with make(bs) as client:
                result = await asyncio.wait_for(body(client), LIMIT)
            leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert leftover == [], f"tasks outlived the iterator: {leftover}"
            return result

        return asyncio.run(main())

    return runner


async def _collect(results: Any) -> list[Any]:
    return [item async for item in results]


def test_parity_with_the_sync_mixin() -> None:
    import inspect

    for name in ("infer_many", "infer_batched"):
        sync = inspect.signature(getattr(BatchMixin, name))
        aio = inspect.signature(getattr(AsyncBatchMixin, name))
        assert list(sync.parameters.values()) == list(aio.parameters.values()), name


def test_ordered_and_unordered(run: Any, bs: BatchServer) -> None:
    async def body(client: Any) -> None:
        requests = [probe_request(i, jitter=0.002) for i in range(40)]
        ordered = await _collect(client.infer_many(requests, concurrency=8))
        assert [value_of(r) for r in ordered] == [2 * i for i in range(40)]
        pairs = await _collect(client.infer_many(iter(requests), concurrency=8, ordered=False))
        assert sorted(i for i, _ in pairs) == list(range(40))
        assert all(value_of(r) == 2 * i for i, r in pairs)

    run(body)


def test_async_iterable_source(run: Any, bs: BatchServer) -> None:
    async def source() -> AsyncIterator[InferRequest]:
        for i in range(10):
            await asyncio.sleep(0)
            yield probe_request(i)

    async def body(client: Any) -> None:
        assert [value_of(r) for r in await _collect(client.infer_many(source(), concurrency=3))] == [
            2 * i for i in range(10)
        ]

    run(body)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_in_flight_count_is_bounded_server_side(run: Any, bs: BatchServer, concurrency: int) -> None:
    async def body(client: Any) -> None:
        requests = (probe_request(i, delay=0.01) for i in range(6 * concurrency))
        assert len(await _collect(client.infer_many(requests, concurrency=concurrency))) == 6 * concurrency

    run(body)
    assert bs.probe.max_seen <= concurrency
    if concurrency > 1:
        assert bs.probe.max_seen >= 2
    assert bs.probe.calls == 6 * concurrency


def test_an_endless_generator_is_pulled_lazily_and_closing_cancels(run: Any, bs: BatchServer) -> None:
    source = CountingSource(delay=0.002)

    async def body(client: Any) -> int:
        async with client.infer_many(source, concurrency=4) as results:
            first = [value_of(r) async for r in _take(results, 25)]
        assert first == [2 * i for i in range(25)]
        return source.pulled

    pulled = run(body)  # run() also asserts that no task outlived the iterator
    assert pulled <= 25 + 2 * 4
    assert source.pulled == pulled
    assert bs.server.count(route="infer", model="probe") <= pulled


async def _take(results: Any, n: int) -> AsyncIterator[Any]:
    async for item in results:
        yield item
        n -= 1
        if n == 0:
            return


def test_progress_bar(run: Any, bs: BatchServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)

    async def body(client: Any) -> None:
        assert len(await _collect(client.infer_many([probe_request(i) for i in range(4)], progress=True))) == 4

    run(body)
    assert "4/4" in err.getvalue()


def test_return_exceptions(run: Any, bs: BatchServer) -> None:
    values = [3, -1, 4, -1, 5]

    async def body(client: Any) -> None:
        results = await _collect(client.infer_many([probe_request(v) for v in values], return_exceptions=True))
        for index, (value, result) in enumerate(zip(values, results)):
            if value < 0:
                assert isinstance(result, ItemError) and result.index == index
                assert isinstance(result.exception, InvalidInputError)
            else:
                assert value_of(result) == 2 * value

    run(body)


def test_first_failure_is_raised_with_its_index_and_cancels_the_rest(run: Any, bs: BatchServer) -> None:
    def requests() -> Iterator[InferRequest]:
        for i in itertools.count():
            yield probe_request(-1 if i == 7 else i, delay=0.002)

    async def body(client: Any) -> list[int]:
        received = []
        with pytest.raises(InvalidInputError) as info:
            async for response in client.infer_many(requests(), concurrency=4):
                received.append(value_of(response))
        assert info.value.index == 7
        if sys.version_info >= (3, 11):
            assert any("#7" in note for note in info.value.__notes__)
        return received

    received = run(body)
    assert received == [2 * i for i in range(len(received))] and len(received) <= 7
    assert bs.server.count(route="infer", model="probe") <= 8 + 2 * 4


def test_hedged_copy_wins_and_the_loser_is_cancelled(run: Any, bs: BatchServer) -> None:
    def request(value: int) -> InferRequest:
        r = probe_request(value)
        r.model_name = "hedge"
        return r

    async def body(client: Any) -> InferResponse:
        results = await _collect(client.infer_many([request(9)], hedge_after=0.05, hedge_budget=1.0))
        return results[0]  # returned before the slow first copy was released: it was cancelled, not awaited

    response = run(body)
    bs.hedge.release.set()
    assert int(response.as_numpy("ATTEMPT")[0]) == 2
    assert bs.server.count(route="infer", model="hedge") == 2


def test_infer_batched(run: Any, bs: BatchServer) -> None:
    a = np.arange(50 * 16, dtype=np.int32).reshape(50, 16)

    async def body(client: Any) -> None:
        out = await client.infer_batched("add_sub", {"INPUT0": a, "INPUT1": a}, batch_size=8, concurrency=3)
        np.testing.assert_array_equal(out["OUTPUT0"], 2 * a)
        np.testing.assert_array_equal(out["OUTPUT1"], 0 * a)
        with pytest.raises(EncodeError, match="not aligned"):
            await client.infer_batched("add_sub", {"INPUT0": a, "INPUT1": a[:3]}, batch_size=8)
        x = np.arange(40, dtype=np.int64)
        x[12] = -1
        with pytest.raises(InvalidInputError) as info:
            await client.infer_batched("probe", {"INPUT0": x}, batch_size=10)
        assert info.value.index == 1

    run(body)
    assert bs.server.count(route="infer", model="add_sub") == 7
