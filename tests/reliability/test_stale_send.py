"""A pooled connection the server closed while it was idle, found dead only when the request is written on it
(the close arrived after urllib3's liveness check at checkout: the test makes that check miss), is resent at once
on a new connection: with ``retries=0``, for every method, sequence requests included (the request was never
received), with one INFO line in the verbose log. A raw server on 127.0.0.1 resets idle connections."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pytest
import urllib3.connectionpool

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy
from inferkit._retry import Budget, RetryState, closed_kind
from inferkit.config import Timeout
from inferkit.errors import ConnectError
from inferkit.rest_client import InferenceRESTClient
from tests.reliability.idleserver import IdleServer
from tests.reliability.rawserver import RawHTTPServer
from tests.transport.test_keepalive_expiry import RAW, request


@pytest.fixture
def blind_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib3's liveness check at checkout sees nothing (the race where the close arrives just after it)."""
    monkeypatch.setattr(urllib3.connectionpool, "is_connection_dropped", lambda conn: False)


def config(**kwargs: Any) -> RESTConfig:
    return RESTConfig(binary_data=False, retry=RetryPolicy.none(), timeout=5, keepalive_expiry=None, **kwargs)


def sequence_request() -> InferRequest:
    x = InferInput("INPUT0", [1], "INT32")
    x.set_data_from_numpy(np.array([1], dtype=np.int32))
    return InferRequest("m", [x], sequence_id=7, sequence_start=True)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.infer(request()), id="infer"),
        pytest.param(lambda c: c.infer(sequence_request()), id="sequence"),
        pytest.param(lambda c: c.get_model_metadata("m"), id="get"),
    ],
)
def test_resent_at_once_with_no_retries(blind_checkout: None, call: Any, caplog: pytest.LogCaptureFixture) -> None:
    with IdleServer(RAW, idle_after=0.2, mode="reset") as server:
        with InferenceRESTClient(server.url, config(verbose=True)) as c:
            assert c._transport.direct
            call(c)
            time.sleep(0.5)  # the server resets the idle connection
            assert server.idled == 1
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="inferkit"):
                t0 = time.monotonic()
                call(c)
                assert time.monotonic() - t0 < 1.0  # at once: no backoff
        assert server.requests == 2  # the dead connection never delivered the request
        assert server.connections == 2
    lines = [r.getMessage() for r in caplog.records if "closed by the server while idle" in r.getMessage()]
    assert len(lines) == 1 and "resending it at once on a new connection" in lines[0]


def test_not_verbose_is_silent_and_still_resends(blind_checkout: None, caplog: pytest.LogCaptureFixture) -> None:
    with IdleServer(RAW, idle_after=0.2, mode="reset") as server:
        with InferenceRESTClient(server.url, config()) as c:
            c.infer(request())
            time.sleep(0.5)
            with caplog.at_level(logging.INFO, logger="inferkit"):
                c.infer(request())
        assert (server.requests, server.connections) == (2, 2)
    assert not [r for r in caplog.records if r.name == "inferkit"]


def test_the_decision() -> None:
    assert closed_kind(reused=True, got_status=False, tls_without_client_cert=False, sending=True) == "stale_send"
    assert closed_kind(reused=True, got_status=False, tls_without_client_cert=False) == "stale"
    assert closed_kind(reused=False, got_status=False, tls_without_client_cert=False, sending=True) == "dropped"
    budget = Budget(Timeout(5), None)
    state = RetryState(RetryPolicy.none(), retryable=False)
    state.begin(Timeout(5))
    assert state.on_failure("stale_send", budget).action == "resend"
    assert state.on_failure("stale_send", budget).action == "raise"  # once only
    state = RetryState(RetryPolicy.none(), retryable=False)
    state.begin(Timeout(5))
    assert state.on_failure("stale", budget).action == "raise"  # it may have been received: not resent


def test_a_reset_after_the_request_was_written_is_not_resent_for_a_sequence(blind_checkout: None) -> None:
    # The contrast: the server drops the connection right after reading the request ("stale": it may have been
    # received), so a sequence request, never retried, fails.
    with RawHTTPServer(lambda conn, i, req: RAW if i == 0 else None) as server:
        with InferenceRESTClient(server.url, config()) as c:
            c.infer(sequence_request())
            with pytest.raises(ConnectError):
                c.infer(sequence_request())
