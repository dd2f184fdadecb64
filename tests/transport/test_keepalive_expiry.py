"""``RESTConfig.keepalive_expiry``: a pooled connection idle for longer is closed and replaced, never reused, on every
REST path (sync direct, sync session path, aio). Connections are counted by a raw server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
import requests
import requests.auth

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy
from inferkit.rest_client import InferenceRESTClient
from tests.reliability.rawserver import RawHTTPServer

REPLY = json.dumps(
    {"model_name": "m", "outputs": [{"name": "OUTPUT0", "datatype": "INT32", "shape": [1], "data": [7]}]}
).encode()
RAW = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(REPLY) + REPLY


def request() -> InferRequest:
    x = InferInput("INPUT0", [1], "INT32").set_data_from_numpy(np.array([1], dtype=np.int32))
    return InferRequest("m", [x])


class HeaderAuth(requests.auth.AuthBase):
    """A requests auth object: the client then sends every request through requests' own path."""

    def __call__(self, r: Any) -> Any:
        r.headers["X-Token"] = "t"
        return r


def config(expiry: float | None, **kwargs: Any) -> RESTConfig:
    return RESTConfig(binary_data=False, retry=RetryPolicy.none(), timeout=5, keepalive_expiry=expiry, **kwargs)


def calls_spaced(call: Any) -> None:
    call()
    call()  # at once: the pooled connection is reused
    time.sleep(0.3)
    call()  # idle for longer than the expiry (0.1 s), shorter than None


@pytest.mark.parametrize("path", ["direct", "session"])
@pytest.mark.parametrize(("expiry", "connections"), [(0.1, 2), (None, 1)])
def test_sync(path: str, expiry: float | None, connections: int) -> None:
    with RawHTTPServer(lambda *_: RAW) as server:
        extra = {"auth": HeaderAuth()} if path == "session" else {}
        with InferenceRESTClient(server.url, config(expiry, **extra)) as c:
            assert c._transport.direct == (path == "direct")
            calls_spaced(lambda: c.infer(request()))
        assert server.requests == 3
        assert server.connections == connections


@pytest.mark.parametrize(("expiry", "connections"), [(0.1, 2), (None, 1)])
def test_aio(expiry: float | None, connections: int) -> None:
    from inferkit.aio import InferenceRESTClient as AioClient

    async def main(url: str) -> None:
        async with AioClient(url, config(expiry)) as c:
            await c.infer(request())
            await c.infer(request())
            await asyncio.sleep(0.3)
            await c.infer(request())

    with RawHTTPServer(lambda *_: RAW) as server:
        asyncio.run(main(server.url))
        assert server.requests == 3
        assert server.connections == connections


def test_the_default_is_below_common_balancer_idle_timeouts() -> None:
    assert RESTConfig().keepalive_expiry == 30.0
    with pytest.raises(ValueError):
        RESTConfig(keepalive_expiry=-1)
