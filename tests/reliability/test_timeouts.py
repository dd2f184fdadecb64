"""What ``timeout`` means, the same table for every client kind: a plain number bounds the whole call, retries and
backoff included (sync and aio, REST and gRPC); REST's per-attempt limits (``Timeout(connect=..., read=...)``) are
retried under the policy.

The server stalls every reply for longer than any timeout here; attempts are counted by the server. The elapsed
time is checked against a loose bound only where it tells the two meanings apart (four attempts of 0.3 s would take
at least 1.2 s; one call bounded by 0.3 s ends long before).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from inferkit import RetryPolicy, Timeout, errors
from inferkit.testing import Fault, ReferenceServer

from .drivers import FAST, KINDS, Driver, add_sub_request


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", [*KINDS, "sync_rest_many"])
def test_a_plain_number_bounds_the_whole_call_on_every_client(kind: str, reference_server: ReferenceServer) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    reference_server.inject(Fault(route="infer", action="delay", seconds=1.5, times=None))
    request = add_sub_request()

    def op(client: Any) -> Any:
        if kind == "sync_rest_many":
            return list(client.infer_many([request], concurrency=1))
        return client.infer(request)

    started = time.monotonic()
    with pytest.raises(errors.ReadTimeout) as info:
        driver.run(driver.target(reference_server), op, policy=RetryPolicy(max_retries=3, **FAST), timeout=0.3)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, TimeoutError) and info.value.attempts == 1
    assert reference_server.count(route="infer") == 1
    assert elapsed < 1.1, f"the call took {elapsed:.2f} s: the 0.3 s timeout did not bound the whole call"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync_rest", "aio_rest", "sync_rest_many"])
def test_per_attempt_limits_are_retried_under_the_policy(kind: str, reference_server: ReferenceServer) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    reference_server.inject(Fault(route="infer", action="delay", seconds=1.5, times=None))
    request = add_sub_request()

    def op(client: Any) -> Any:
        if kind == "sync_rest_many":
            return list(client.infer_many([request], concurrency=1))
        return client.infer(request)

    per_attempt = Timeout(connect=2, read=0.2)
    assert per_attempt.total is None
    with pytest.raises(errors.ReadTimeout) as info:
        driver.run(driver.target(reference_server), op, policy=RetryPolicy(max_retries=2, **FAST), timeout=per_attempt)
    assert info.value.attempts == 3
    assert reference_server.count(route="infer") == 3


def test_timeout_values() -> None:
    assert Timeout(5) == Timeout(connect=5, read=5, write=5, pool=5, total=5)
    assert Timeout.coerce(5) == Timeout(5)
    assert Timeout.coerce((3, 60)).total is None  # requests' (connect, read) form: per attempt
    assert Timeout(read=300).total is None and Timeout(read=300).connect == 10.0
    assert Timeout(None).total is None
    with pytest.raises(ValueError):
        Timeout(total=-1)
