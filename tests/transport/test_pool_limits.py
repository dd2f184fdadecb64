"""``RESTConfig.max_connections`` / ``max_keepalive``: the pool's hard limit (waiting past it is bounded by
``Timeout.pool`` and fails with ``PoolTimeout`` naming the setting) and the most idle connections kept, on the sync
direct path (inferkit's adapter and a caller's own), the sync session path and aio. A raw server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import requests.adapters

from inferkit import RESTConfig, RetryPolicy, Timeout
from inferkit._transport import pool as pools
from inferkit.errors import PoolTimeout
from inferkit.rest_client import InferenceRESTClient
from tests.reliability.rawserver import RawHTTPServer
from tests.transport.test_keepalive_expiry import RAW, HeaderAuth, request


def slow(delay: float) -> Any:
    def respond(*_: Any) -> bytes:
        time.sleep(delay)
        return RAW

    return respond


def config(**kwargs: Any) -> RESTConfig:
    kwargs.setdefault("timeout", Timeout(5, pool=0.2))
    return RESTConfig(binary_data=False, retry=RetryPolicy.none(), **kwargs)


# -- the settings ---------------------------------------------------------------------------------------------------
def test_defaults_follow_the_seed() -> None:
    c = RESTConfig()
    assert (c.max_connections, c.max_keepalive, c.pool_maxsize) == (256, 128, 256)


def test_pool_maxsize_is_an_alias() -> None:
    assert RESTConfig(pool_maxsize=8).max_connections == 8
    assert RESTConfig(max_connections=8).pool_maxsize == 8
    assert RESTConfig(max_connections=8, pool_maxsize=8).max_connections == 8
    with pytest.raises(ValueError, match="max_connections=8 and pool_maxsize=9"):
        RESTConfig(max_connections=8, pool_maxsize=9)
    moved = RESTConfig(pool_maxsize=8).replace(max_connections=32)
    assert (moved.max_connections, moved.pool_maxsize) == (32, 32)
    moved = RESTConfig(max_connections=8).replace(pool_maxsize=4)
    assert (moved.max_connections, moved.pool_maxsize) == (4, 4)
    assert pickle.loads(pickle.dumps(RESTConfig(max_connections=8))) == RESTConfig(max_connections=8)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"max_keepalive": -1}, "max_keepalive"),
        ({"max_keepalive": 1.5}, "max_keepalive"),
    ],
)
def test_bad_limits(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RESTConfig(**kwargs)


def test_idle_limit_is_at_most_max_connections() -> None:
    assert RESTConfig().idle_limit == 128
    assert RESTConfig(max_connections=4).idle_limit is None  # 128 idle of 4: no limit of its own
    assert RESTConfig(max_keepalive=None).idle_limit is None
    assert RESTConfig(max_keepalive=0).idle_limit == 0


# -- max_connections: a hard limit, the wait for it bounded ---------------------------------------------------------
def _hold_one_connection(call: Any) -> threading.Thread:
    holder = threading.Thread(target=call)
    holder.start()
    time.sleep(0.2)  # the holder's request is on the server
    return holder


@pytest.mark.parametrize("path", ["direct", "session"])
def test_waiting_past_max_connections_is_a_pool_timeout(path: str) -> None:
    extra = {"auth": HeaderAuth()} if path == "session" else {}
    with RawHTTPServer(slow(1.0)) as server, InferenceRESTClient(server.url, config(max_connections=1, **extra)) as c:
        holder = _hold_one_connection(lambda: c.infer(request()))
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            c.infer(request())
        assert time.monotonic() - t0 < 0.8
        holder.join()
        assert server.connections == 1
    message = str(info.value)
    assert "RESTConfig.max_connections" in message and "all 1 connections" in message and "Timeout.pool" in message
    assert isinstance(info.value, TimeoutError)


def test_aio_waiting_past_max_connections_is_a_pool_timeout() -> None:
    from inferkit.aio import InferenceRESTClient as AioClient

    async def main(url: str) -> BaseException:
        async with AioClient(url, config(max_connections=1)) as c:
            holder = asyncio.ensure_future(c.infer(request()))
            await asyncio.sleep(0.2)
            with pytest.raises(PoolTimeout) as info:
                await c.infer(request())
            await holder
            return info.value

    with RawHTTPServer(slow(1.0)) as server:
        err = asyncio.run(main(server.url))
        assert server.connections == 1
    assert "RESTConfig.max_connections" in str(err)


# -- max_keepalive: idle connections beyond it are closed when given back --------------------------------------------
def _burst(c: InferenceRESTClient, n: int) -> None:
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(lambda _: c.infer(request()), range(n)))


@pytest.mark.parametrize("path", ["direct", "session", "own-adapter"])
def test_max_keepalive_closes_idle_connections_beyond_it(path: str) -> None:
    extra: dict[str, Any] = {"auth": HeaderAuth()} if path == "session" else {}
    session = None
    if path == "own-adapter":  # the caller's plain HTTPAdapter: the direct path applies the limit at checkin
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8, pool_block=True))
    with RawHTTPServer(slow(0.3)) as server:
        with InferenceRESTClient(server.url, config(max_connections=8, max_keepalive=2, **extra), session) as c:
            _burst(c, 6)
            assert server.connections == 6  # all six were open at once
            pool = c._transport._resolve_pool()
            assert pools.idle_open(pool) == 2
            _burst(c, 2)  # the two kept are reused
            assert server.connections == 6
        if session is not None:
            session.close()


def test_without_max_keepalive_every_connection_stays_open() -> None:
    with RawHTTPServer(slow(0.3)) as server:
        with InferenceRESTClient(server.url, config(max_connections=8, max_keepalive=None)) as c:
            _burst(c, 6)
            assert pools.idle_open(c._transport._resolve_pool()) == 6
