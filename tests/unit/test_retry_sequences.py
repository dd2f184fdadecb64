"""Exact HTTP sequences of the REST client's retry loop, with ``responses`` (sleeps recorded, not slept).

``responses`` patches ``HTTPAdapter.send``, which the client detects: it then sends through requests, so the
same retry loop and error mapping run against scripted replies.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
import requests

responses = pytest.importorskip("responses")

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy, errors  # noqa: E402
from inferkit.rest_client import InferenceRESTClient  # noqa: E402

URL = "http://model.test:8000"
INFER = URL + "/v2/models/m/infer"
OK_BODY = {"model_name": "m", "outputs": [{"name": "y", "shape": [1], "datatype": "INT32", "data": [3]}]}


class FakeClock:
    """Stands in for the ``time`` module inside inferkit._transport.driver: sleeping advances the clock instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    import inferkit._transport.driver

    clock = FakeClock()
    monkeypatch.setattr(inferkit._transport.driver, "time", clock)
    return clock.sleeps


@pytest.fixture
def mocked() -> Iterator[Any]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def client(**policy: Any) -> InferenceRESTClient:
    retry = RetryPolicy(**{"jitter": 0.0, **policy})
    return InferenceRESTClient(URL, RESTConfig(retry=retry, binary_data=False))


def request(**kwargs: Any) -> InferRequest:
    x = InferInput("x", [1], "INT32").set_data_from_numpy(np.array([3], dtype=np.int32))
    return InferRequest("m", [x], **kwargs)


def test_client_uses_requests_when_send_is_patched(mocked: Any) -> None:
    assert not client()._transport.direct


def test_backoff_sequence_then_success(mocked: Any, sleeps: list[float]) -> None:
    for status in (503, 502, 500):
        mocked.add(responses.POST, INFER, json={"error": "busy"}, status=status)
    mocked.add(responses.POST, INFER, json=OK_BODY)
    response = client(max_retries=3, backoff_initial=0.5, backoff_multiplier=2.0).infer(request())
    assert response.as_numpy("y").tolist() == [3]
    assert [c.response.status_code for c in mocked.calls] == [503, 502, 500, 200]
    assert sleeps == [0.5, 1.0, 2.0]


def test_backoff_is_capped_and_jittered(mocked: Any, sleeps: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    kwdefaults = {**RetryPolicy.delay.__kwdefaults__, "rand": lambda: 1.0}
    monkeypatch.setattr(RetryPolicy.delay, "__kwdefaults__", kwdefaults)
    for _ in range(4):
        mocked.add(responses.POST, INFER, json={"error": "busy"}, status=503)
    with pytest.raises(errors.ServiceUnavailableError) as info:
        client(max_retries=3, backoff_initial=1.0, backoff_max=1.5, jitter=0.5).infer(request())
    assert info.value.attempts == 4
    assert sleeps == [0.5, 0.75, 0.75]  # min(1.5, 1 * 2**k) * (1 - 0.5 * 1.0)


def test_retry_after_seconds_and_ms(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(responses.POST, INFER, json={"error": "slow down"}, status=429, headers={"Retry-After": "2"})
    mocked.add(responses.POST, INFER, json={"error": "slow down"}, status=429, headers={"retry-after-ms": "150"})
    mocked.add(responses.POST, INFER, json=OK_BODY)
    client(max_retries=2).infer(request())
    assert sleeps == [2.0, 0.15]


def test_retry_after_capped_by_policy(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(responses.POST, INFER, json={"error": "later"}, status=503, headers={"Retry-After": "86400"})
    mocked.add(responses.POST, INFER, json=OK_BODY)
    client(max_retries=1, retry_after_max=5.0).infer(request())
    assert sleeps == [5.0]


def test_retry_after_ignored_when_not_respected(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(responses.POST, INFER, json={"error": "later"}, status=503, headers={"Retry-After": "30"})
    mocked.add(responses.POST, INFER, json=OK_BODY)
    client(max_retries=1, respect_retry_after=False, backoff_initial=0.25).infer(request())
    assert sleeps == [0.25]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_never_retried_statuses(mocked: Any, sleeps: list[float], status: int) -> None:
    mocked.add(responses.POST, INFER, json={"error": "no"}, status=status)
    mocked.add(responses.POST, INFER, json=OK_BODY)
    with pytest.raises(errors.ServerError) as info:
        client(max_retries=5).infer(request())
    assert info.value.status_code == status and info.value.attempts == 1
    assert len(mocked.calls) == 1 and sleeps == []


def test_custom_retry_statuses(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(responses.POST, INFER, json={"error": "busy"}, status=503)
    with pytest.raises(errors.ServiceUnavailableError):
        client(max_retries=3, retry_statuses={429}).infer(request())
    assert len(mocked.calls) == 1


def test_sequence_request_is_sent_once(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(responses.POST, INFER, json={"error": "busy"}, status=503)
    mocked.add(responses.POST, INFER, json=OK_BODY)
    with pytest.raises(errors.ServiceUnavailableError):
        client(max_retries=3).infer(request(sequence_id=7))
    assert len(mocked.calls) == 1


def test_connection_errors_retried_and_mapped(mocked: Any, sleeps: list[float]) -> None:
    failure = requests.exceptions.ConnectionError("connection refused")
    for _ in range(3):
        mocked.add(responses.POST, INFER, body=failure)
    with pytest.raises(errors.ConnectError) as info:
        client(max_retries=2, backoff_initial=0.1).infer(request())
    assert info.value.attempts == 3 and sleeps == [0.1, 0.2]
    assert isinstance(info.value.__cause__, requests.exceptions.ConnectionError)


def test_read_timeout_retry_then_success(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(responses.POST, INFER, body=requests.exceptions.ReadTimeout("slow"))
    mocked.add(responses.POST, INFER, json=OK_BODY)
    client(max_retries=1).infer(request())
    assert len(mocked.calls) == 2


def test_deadline_stops_retries_before_sleeping_past_it(mocked: Any, sleeps: list[float]) -> None:
    for _ in range(5):
        mocked.add(responses.POST, INFER, json={"error": "busy"}, status=503)
    with pytest.raises(errors.ServiceUnavailableError) as info:
        client(max_retries=10, backoff_initial=1.0, deadline=2.5).infer(request())
    # slept 1.0 s; the next backoff (2.0 s) would end past the 2.5 s deadline: stop after the second attempt.
    assert sleeps == [1.0]
    assert info.value.attempts == 2


def test_retries_resend_the_same_body(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(responses.POST, INFER, json={"error": "busy"}, status=503)
    mocked.add(responses.POST, INFER, json=OK_BODY)
    client(max_retries=1).infer(request())
    bodies = [c.request.body for c in mocked.calls]
    assert bodies[0] is bodies[1]  # the very same bytes object: built once, never re-encoded


def test_final_error_carries_server_message_and_context(mocked: Any, sleeps: list[float]) -> None:
    mocked.add(
        responses.POST, INFER, json={"detail": [{"loc": ["body", "inputs"], "msg": "field required"}]}, status=422
    )
    with pytest.raises(errors.UnprocessableEntityError) as info:
        client().infer(request(request_id="abc"))
    err = info.value
    assert "body.inputs: field required" in str(err)
    assert err.model_name == "m" and err.request_id == "abc"
