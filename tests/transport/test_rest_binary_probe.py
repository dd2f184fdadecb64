"""The REST clients' binary-tensor probe (``GET /v2``), the same table for the sync and the async client: a
transient failure (5xx, 429, a dropped connection) is retried under the policy and, if it persists, means JSON for
that call and another probe later (at most once per ``RestCalls.PROBE_RETRY_INTERVAL``); a 4xx means JSON for good.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterator

import numpy as np
import pytest

from inferkit import RESTConfig, RetryPolicy, Timeout
from inferkit.aio import InferenceRESTClient as AsyncRESTClient
from inferkit.codec.rest_calls import RestCalls
from inferkit.rest_client import InferenceRESTClient
from inferkit.testing import Fault, ReferenceServer
from inferkit.testing.models import standard_models
from tests.transport.cases import add_sub_request

FAST = {"backoff_initial": 0.01, "backoff_max": 0.02, "jitter": 0.0}
KINDS = ("sync", "aio")


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(standard_models(), grpc=False) as srv:
        yield srv


@pytest.fixture
def srv(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()
    yield server
    server.reset()


class Client:
    """A sync or async REST client behind one blocking facade that records each infer's framing."""

    def __init__(self, kind: str, url: str, max_retries: int) -> None:
        config = RESTConfig(retry=RetryPolicy(max_retries=max_retries, **FAST), timeout=Timeout(5))
        self.loop = asyncio.new_event_loop() if kind == "aio" else None
        self.client: Any = AsyncRESTClient(url, config) if kind == "aio" else InferenceRESTClient(url, config)
        self.framing: list[str] = []
        calls = self.client._calls
        build = calls.infer

        def spy(request: Any, binary: bool) -> Any:
            self.framing.append("binary" if binary else "json")
            return build(request, binary)

        calls.infer = spy

    def run(self, value: Any) -> Any:
        return value if self.loop is None else self.loop.run_until_complete(value)

    def infer(self, times: int = 1) -> None:
        for _ in range(times):
            request, a, b = add_sub_request()
            np.testing.assert_array_equal(self.run(self.client.infer(request)).as_numpy("OUTPUT0"), a + b)

    def close(self) -> None:
        self.run(self.client.close())
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, srv: ReferenceServer) -> Iterator[Any]:
    made: list[Client] = []

    def factory(max_retries: int = 3) -> Client:
        made.append(Client(str(request.param), srv.http_url, max_retries))
        return made[-1]

    yield factory
    for c in made:
        c.close()


@pytest.mark.parametrize(
    "fault",
    [
        Fault(route="server_metadata", action="status", status=503, times=1),
        Fault(route="server_metadata", action="status", status=429, times=1),
        Fault(route="server_metadata", action="status", status=500, times=2),
        Fault(route="server_metadata", action="drop_before", times=1),
    ],
    ids=["503", "429", "500-twice", "dropped"],
)
def test_a_transient_probe_failure_is_retried_and_binary_is_used(make: Any, srv: ReferenceServer, fault: Fault) -> None:
    srv.inject(fault)
    c = make()
    c.infer(3)
    assert c.framing == ["binary"] * 3
    assert srv.count(route="server_metadata") == (fault.times or 0) + 1


def test_a_probe_failing_after_the_retries_means_json_for_that_call_and_a_later_probe(
    make: Any, srv: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RestCalls, "PROBE_RETRY_INTERVAL", 0.5)
    srv.inject(Fault(route="server_metadata", action="status", status=503, times=2))
    c = make(max_retries=1)
    c.infer(3)  # the probe's two attempts fail: JSON, and not asked again within the interval
    assert c.framing == ["json"] * 3
    assert srv.count(route="server_metadata") == 2
    time.sleep(0.6)
    c.infer(2)  # asked again once the interval has passed: it answers now
    assert c.framing == ["json"] * 3 + ["binary"] * 2
    assert srv.count(route="server_metadata") == 3


def test_a_server_that_always_fails_the_probe_is_asked_at_most_once_per_interval(
    make: Any, srv: ReferenceServer
) -> None:
    srv.inject(Fault(route="server_metadata", action="status", status=503, times=None))
    c = make(max_retries=0)
    c.infer(5)
    assert c.framing == ["json"] * 5
    assert srv.count(route="server_metadata") == 1
    assert c.client._calls.binary is None  # still undecided


@pytest.mark.parametrize("status", [404, 400, 405])
def test_a_4xx_probe_answer_means_json_for_good(make: Any, srv: ReferenceServer, status: int) -> None:
    srv.inject(Fault(route="server_metadata", action="status", status=status, times=1))
    c = make()
    c.infer(3)
    assert c.framing == ["json"] * 3
    assert srv.count(route="server_metadata") == 1
    assert c.client._calls.binary is False
