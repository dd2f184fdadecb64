"""Keep-alive expiry against a path that blackholes idle connections (a NAT or firewall that forgot the flow: after
1 s idle the server stops reading and answering a connection but never closes it, so nothing tells the client).

With ``keepalive_expiry=0.5``, calls spaced 1.3 s apart each answer at once on a new connection, with no retry, on
sync ``infer``, sync ``infer_many`` and aio; without expiry the second call waits out its whole read timeout (the
failure this guards against). The process's file descriptors return to their count once clients and server are
closed. About 13 s in all."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

import pytest

from inferkit import RESTConfig, RetryPolicy, Timeout
from inferkit.errors import ReadTimeout
from inferkit.rest_client import InferenceRESTClient
from tests.reliability.idleserver import IdleServer
from tests.transport.test_keepalive_expiry import RAW, request

IDLE = 1.0  # the server blackholes a connection idle for longer
GAP = 1.3  # between calls
CALLS = 3


def config(expiry: float | None) -> RESTConfig:
    return RESTConfig(binary_data=False, retry=RetryPolicy.none(), timeout=Timeout(read=3), keepalive_expiry=expiry)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def spaced(call: Callable[[], Any]) -> list[float]:
    """Per-call elapsed seconds of CALLS calls, GAP seconds apart."""
    elapsed = []
    for i in range(CALLS):
        if i:
            time.sleep(GAP)
        t0 = time.monotonic()
        call()
        elapsed.append(time.monotonic() - t0)
    return elapsed


def check(server: IdleServer, elapsed: list[float]) -> None:
    assert max(elapsed) < 1.0, elapsed  # well under the 3 s read timeout: no call met a blackholed connection
    assert server.requests == CALLS  # one request per call: nothing was retried
    assert server.connections == CALLS  # each call after a gap on a new connection


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")


def test_sync_infer() -> None:
    before = open_fds()
    with IdleServer(RAW, idle_after=IDLE, mode="blackhole") as server:
        with InferenceRESTClient(server.url, config(0.5)) as c:
            elapsed = spaced(lambda: c.infer(request()))
        check(server, elapsed)
    assert open_fds() == before


def test_sync_infer_many() -> None:
    before = open_fds()
    with IdleServer(RAW, idle_after=IDLE, mode="blackhole") as server:
        with InferenceRESTClient(server.url, config(0.5)) as c:
            elapsed = spaced(lambda: list(c.infer_many([request()], concurrency=1)))
        check(server, elapsed)
    assert open_fds() == before


def test_aio() -> None:
    from inferkit.aio import InferenceRESTClient as AioClient

    async def main(url: str) -> list[float]:
        elapsed = []
        async with AioClient(url, config(0.5)) as c:
            for i in range(CALLS):
                if i:
                    await asyncio.sleep(GAP)
                t0 = time.monotonic()
                await c.infer(request())
                elapsed.append(time.monotonic() - t0)
        return elapsed

    before = open_fds()
    with IdleServer(RAW, idle_after=IDLE, mode="blackhole") as server:
        check(server, asyncio.run(main(server.url)))
    assert open_fds() == before


def test_without_expiry_the_second_call_hangs_for_the_read_timeout() -> None:
    with IdleServer(RAW, idle_after=IDLE, mode="blackhole") as server:
        with InferenceRESTClient(server.url, config(None)) as c:
            c.infer(request())
            time.sleep(GAP)
            t0 = time.monotonic()
            with pytest.raises(ReadTimeout):
                c.infer(request())
            assert time.monotonic() - t0 > 2.5
        assert (server.requests, server.connections, server.idled) == (1, 1, 1)
