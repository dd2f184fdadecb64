"""The fault matrix: every case of ``cases.CASES`` against every client kind, attempts counted by the server.

Each test injects the case's faults into the shared reference server, runs one ``infer`` (sync REST: also through
``infer_many``) with the case's
RetryPolicy and timeout, and checks the documented outcome: success (with correct outputs) or the typed error
(with ``attempts``), the number of requests the server received, and the retry sleeps (recorded, not timed).
"""

from __future__ import annotations

from typing import Any

import pytest

from inferkit import RetryPolicy, errors
from inferkit.testing import ReferenceServer

from .cases import CASES, NOT_APPLICABLE, FaultCase
from .drivers import FAST, KINDS, Driver, add_sub_request, check_add_sub, record_sleeps, sequence_request


def _params() -> list[Any]:
    params = []
    for kind in (*KINDS, "sync_rest_many"):  # sync REST through infer_many too: worker threads, the same rules
        for case in CASES:
            marks = [pytest.mark.xfail(strict=True, reason=reason) for k, reason in case.xfail if k == kind]
            params.append(pytest.param(kind, case, id=f"{kind}-{case.id}", marks=marks))
    return params


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("kind", "case"), _params())
def test_fault_matrix(
    kind: str, case: FaultCase, reference_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    outcome = case.outcome(driver.protocol)
    if outcome is NOT_APPLICABLE:
        pytest.skip(f"{case.id} cannot be expressed over {driver.protocol}")
    for fault in case.faults:
        reference_server.inject(fault)
    recorder = record_sleeps(monkeypatch, kind, real=case.real_sleeps)
    policy = RetryPolicy(**{**FAST, **case.policy})
    request = sequence_request() if case.request == "sequence" else add_sub_request()
    url = driver.target(reference_server)

    def op(client: Any) -> Any:
        if kind == "sync_rest_many":
            [response] = list(client.infer_many([request], concurrency=1))
            return response
        return client.infer(request)

    if outcome.error is None:
        response = driver.run(url, op, policy=policy, timeout=case.timeout)
        if case.request == "add_sub":
            check_add_sub(response)
    else:
        with pytest.raises(errors.InferkitError) as info:
            driver.run(url, op, policy=policy, timeout=case.timeout)
        err = info.value
        assert type(err) is outcome.error, f"{type(err).__name__}: {err}"
        assert err.attempts == outcome.attempts, str(err)
        assert err.model_name == case.model()
        assert str(err)  # a message, never empty
        if outcome.retry_after is not None:
            assert err.retry_after == pytest.approx(outcome.retry_after)
    assert reference_server.count(route="infer", model=case.model()) == outcome.attempts
    if recorder is not None and outcome.sleeps is not None:
        assert recorder.waits == pytest.approx(list(outcome.sleeps), abs=1e-6)
