"""Load: one client shared by many threads (sync) or tasks (aio) with zero errors, file descriptors back to the
baseline after close, and clients that keep working in forked children (REST and gRPC).

The default run is short (a few thousand calls); the full figures of the issue (64 threads x 20,000 infers,
1,000 concurrent tasks) are ``@pytest.mark.slow``. The RSS soak is ``benchmarks/soak.py``.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import pytest

from inferkit import InferInput, InferRequest, RetryPolicy
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model

from .drivers import Driver

pytestmark = pytest.mark.timeout(300)

POLICY = RetryPolicy(max_retries=2, backoff_initial=0.01, jitter=0.0)


@pytest.fixture(scope="module")
def load_server() -> Iterator[ReferenceServer]:
    with ReferenceServer([add_sub_model()], max_workers=8) as server:
        yield server


def request_for(seed: int) -> tuple[InferRequest, np.ndarray]:
    a = (np.arange(16, dtype=np.int32) + seed).reshape(1, 16)
    b = np.full((1, 16), seed % 7, dtype=np.int32)
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
    return InferRequest("add_sub", [x0, x1]), a + b


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for_fds(baseline: int, slack: int = 0, timeout: float = 10.0) -> int:
    """Server-side sockets close when the server notices EOF: poll (bounded) until the count is back."""
    deadline = time.monotonic() + timeout
    count = open_fds()
    while count > baseline + slack and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
        count = open_fds()
    return count


def _warm_up(driver: Driver, url: str) -> None:
    """Import and initialise the client's libraries once, so their process-wide fds count in the baseline."""
    request, _ = request_for(0)
    driver.run(url, lambda c: c.infer(request), policy=POLICY)


def run_threads(driver: Driver, url: str, threads: int, total: int) -> tuple[int, list[BaseException]]:
    client = driver.make(
        url, policy=POLICY, timeout=30.0, **({"pool_maxsize": threads} if driver.protocol == "rest" else {})
    )
    errors: list[BaseException] = []
    done = 0
    lock = threading.Lock()
    per_thread = total // threads

    def work(worker: int) -> None:
        nonlocal done
        for i in range(per_thread):
            request, expected = request_for(worker * 100_000 + i)
            try:
                response = client.infer(request)
                np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), expected)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted empty
                errors.append(exc)
                return
            with lock:
                done += 1

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
    finally:
        client.close()
    return done, errors


def run_tasks(driver: Driver, url: str, tasks: int, rounds: int) -> tuple[int, list[BaseException]]:
    errors: list[BaseException] = []

    async def main() -> int:
        kw = {"pool_maxsize": 256} if driver.protocol == "rest" else {}
        client = driver.make(url, policy=POLICY, timeout=60.0, **kw)
        done = 0

        async def one(seed: int) -> None:
            nonlocal done
            request, expected = request_for(seed)
            try:
                response = await client.infer(request)
                np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), expected)
                done += 1
            except BaseException as exc:  # noqa: BLE001 - collected and asserted empty
                errors.append(exc)

        try:
            for r in range(rounds):
                await asyncio.wait_for(asyncio.gather(*(one(r * tasks + t) for t in range(tasks))), 240)
        finally:
            await client.close()
        return done

    return asyncio.run(main()), errors


def _thread_case(kind: str, server: ReferenceServer, threads: int, total: int) -> None:
    driver = Driver(kind)
    url = driver.target(server)
    _warm_up(driver, url)
    baseline = wait_for_fds(open_fds())
    done, errors = run_threads(driver, url, threads, total)
    assert errors == [], f"{len(errors)} errors, first: {errors[0]!r}"
    assert done == (total // threads) * threads
    assert wait_for_fds(baseline) <= baseline, "file descriptors leaked"


def _task_case(kind: str, server: ReferenceServer, tasks: int, rounds: int) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    url = driver.target(server)
    _warm_up(driver, url)
    baseline = wait_for_fds(open_fds())
    done, errors = run_tasks(driver, url, tasks, rounds)
    assert errors == [], f"{len(errors)} errors, first: {errors[0]!r}"
    assert done == tasks * rounds
    assert wait_for_fds(baseline) <= baseline, "file descriptors leaked"


@pytest.mark.parametrize("kind", ["sync_rest", "sync_grpc"])
def test_shared_sync_client_16_threads_short(kind: str, load_server: ReferenceServer) -> None:
    _thread_case(kind, load_server, threads=16, total=1600)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync_rest", "sync_grpc"])
def test_shared_sync_client_64_threads_20000_infers(kind: str, load_server: ReferenceServer) -> None:
    _thread_case(kind, load_server, threads=64, total=20_000)


@pytest.mark.parametrize("kind", ["aio_rest", "aio_grpc"])
def test_aio_client_200_concurrent_tasks_short(kind: str, load_server: ReferenceServer) -> None:
    _task_case(kind, load_server, tasks=200, rounds=2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["aio_rest", "aio_grpc"])
def test_aio_client_1000_concurrent_tasks(kind: str, load_server: ReferenceServer) -> None:
    _task_case(kind, load_server, tasks=1000, rounds=5)


# -- fork ------------------------------------------------------------------------------------------------------------

_FORKED_CLIENT: Any = None  # the parent's client, inherited by forked children


def _child(seed: int, calls: int, out: Any) -> None:
    try:
        for i in range(calls):
            request, expected = request_for(seed + i)
            response = _FORKED_CLIENT.infer(request)
            if not np.array_equal(response.as_numpy("OUTPUT0"), expected):
                out.put(f"wrong answer in child {seed}: {response.as_numpy('OUTPUT0')} != {expected}")
                return
        out.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(f"{type(exc).__name__}: {exc}")


def _grpc_forks() -> bool:
    """grpcio 1.80 and later can open a new channel in a forked child whose parent had used gRPC."""
    try:
        import grpc  # noqa: PLC0415
    except ImportError:
        return False
    return tuple(int(part) for part in grpc.__version__.split(".")[:2]) >= (1, 80)


@pytest.mark.parametrize(
    "kind",
    [
        "sync_rest",
        pytest.param(
            "sync_grpc",
            marks=pytest.mark.skipif(not _grpc_forks(), reason="grpcio < 1.80 cannot open a channel in a forked child"),
        ),
    ],
)
def test_client_used_in_parent_keeps_working_in_forked_children(kind: str, load_server: ReferenceServer) -> None:
    """The parent's pooled connections (REST keep-alive sockets, the gRPC channel) must not be shared with the
    children: each child gets correct answers for its own inputs while the parent keeps calling too."""
    global _FORKED_CLIENT
    driver = Driver(kind)
    client = driver.make(driver.target(load_server), policy=POLICY, timeout=20.0)
    _FORKED_CLIENT = client
    try:
        for i in range(5):  # pooled connections exist before the fork
            request, expected = request_for(i)
            np.testing.assert_array_equal(client.infer(request).as_numpy("OUTPUT0"), expected)
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        children = [ctx.Process(target=_child, args=(1000 * (n + 1), 30, out), daemon=True) for n in range(3)]
        for child in children:
            child.start()
        for i in range(30):  # the parent keeps using the same client meanwhile
            request, expected = request_for(50_000 + i)
            np.testing.assert_array_equal(client.infer(request).as_numpy("OUTPUT0"), expected)
        results = [out.get(timeout=60) for _ in children]
        for child in children:
            child.join(30)
            assert child.exitcode == 0, f"child exit code {child.exitcode}"
        assert results == ["ok"] * len(children), results
    finally:
        _FORKED_CLIENT = None
        client.close()


def _child_one_call(out: Any) -> None:
    try:
        _FORKED_CLIENT.infer(request_for(0)[0])
        out.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(f"{type(exc).__name__}: {exc}")


def test_forked_child_never_reuses_the_parents_rest_connection() -> None:
    """Deterministic form of the fork test for REST: the child's request must arrive on a connection of its own."""
    global _FORKED_CLIENT
    from .rawserver import RawHTTPServer, http_reply
    from .test_connection_faults import _OK_BODY

    arrivals: list[int] = []

    def respond(conn: int, index: int, request: bytes) -> bytes:
        arrivals.append(conn)
        return http_reply(_OK_BODY, headers={"Content-Type": "application/json"}, close=False)

    with RawHTTPServer(respond) as raw:
        client = Driver("sync_rest").make(raw.url, policy=RetryPolicy.none(), timeout=10.0, binary_data=False)
        _FORKED_CLIENT = client
        try:
            client.infer(request_for(0)[0])  # connection 0 is now pooled in the parent
            ctx = multiprocessing.get_context("fork")
            out = ctx.Queue()
            child = ctx.Process(target=_child_one_call, args=(out,), daemon=True)
            child.start()
            assert out.get(timeout=30) == "ok"
            child.join(30)
            client.infer(request_for(0)[0])
        finally:
            _FORKED_CLIENT = None
            client.close()
    assert len(arrivals) == 3
    assert arrivals[1] != arrivals[0], "the child sent its request on the parent's pooled connection"
    assert arrivals[2] == arrivals[0], "the child's clean-up broke the parent's pooled connection"
