"""The shared fault tables of the reliability suite: one table, four client kinds.

Each :class:`FaultCase` is the fault(s) the reference server injects on ``infer`` of one model, the
:class:`~inferkit.config.RetryPolicy` of the client, the per-call timeout, and the documented outcome for REST
and for gRPC: the error class (or success), the attempts the *server* counted, and the retry sleeps the client
took (recorded, not timed). ``docs/reliability.md`` renders the same table for users; ``test_fault_matrix.py``
runs it against every client kind. REST and gRPC differ where the protocols do (a 500 is ``INTERNAL`` on gRPC,
which is not retryable by default; a gRPC timeout is one deadline across all attempts).
Must not import: any transport.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from inferkit import errors
from inferkit.testing import Fault

ErrorType = Optional[type]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a client must do: raise ``error`` (None: succeed) after ``attempts`` requests reached the server,
    sleeping exactly ``sleeps`` between them (None: not checked)."""

    error: ErrorType
    attempts: int
    sleeps: Optional[tuple[float, ...]] = None
    retry_after: Optional[float] = None  # the error's retry_after, when checked


#: The case does not apply to this protocol (the server cannot express the fault there).
NOT_APPLICABLE = Outcome(None, -1)


@dataclasses.dataclass(frozen=True)
class FaultCase:
    """One row of the fault matrix."""

    id: str
    faults: tuple[Fault, ...]
    policy: dict[str, Any]
    rest: Outcome
    grpc: Optional[Outcome] = None  # None: the same as REST
    timeout: Optional[float] = 5.0  # REST: every Timeout phase; gRPC: the call's deadline
    request: str = "add_sub"  # "add_sub" or "sequence" (never retried)
    real_sleeps: bool = False  # deadline cases need the clock to move
    note: str = ""
    #: kind -> reason: known bugs, run as xfail(strict=True) so the suite stays green and the bug stays recorded.
    xfail: tuple[tuple[str, str], ...] = ()

    def outcome(self, protocol: str) -> Outcome:
        if protocol == "grpc" and self.grpc is not None:
            return self.grpc
        return self.rest

    def model(self) -> str:
        return "sequence" if self.request == "sequence" else "add_sub"


def _f(action: str, *, times: Optional[int] = 1, request: str = "add_sub", **kw: Any) -> Fault:
    model = "sequence" if request == "sequence" else "add_sub"
    return Fault(route="infer", model=model, action=action, times=times, **kw)


def _status(status: int, **kw: Any) -> Fault:
    return _f("status", status=status, **kw)


def _code(code: str, **kw: Any) -> Fault:
    return _f("grpc_status", code=code, **kw)


R3 = {"max_retries": 3}
R2 = {"max_retries": 2}
R1 = {"max_retries": 1}
R5 = {"max_retries": 5}

E = errors

CASES: tuple[FaultCase, ...] = (
    FaultCase("no_fault", (), R3, Outcome(None, 1, ())),
    # -- retryable statuses / codes -------------------------------------------------------------------------------
    FaultCase("503_twice_then_ok", (_status(503, times=2),), R3, Outcome(None, 3, (0.01, 0.02))),
    FaultCase(
        "503_always_exhausts_retries",
        (_status(503, times=None),),
        R2,
        Outcome(E.ServiceUnavailableError, 3, (0.01, 0.02)),
    ),
    FaultCase("429_without_retry_after", (_status(429, times=1),), R2, Outcome(None, 2, (0.01,))),
    FaultCase(
        "429_retry_after_honoured",
        (_status(429, times=2, retry_after=0.5),),
        R3,
        Outcome(None, 3, (0.5, 0.5)),
        note="Retry-After replaces the backoff",
    ),
    FaultCase(
        "429_retry_after_capped",
        (_status(429, times=1, retry_after=3600),),
        {"max_retries": 2, "retry_after_max": 0.2},
        Outcome(None, 2, (0.2,)),
        note="capped at RetryPolicy.retry_after_max",
    ),
    FaultCase(
        "429_retry_after_ignored_when_told",
        (_status(429, times=1, retry_after=3600),),
        {"max_retries": 2, "respect_retry_after": False},
        Outcome(None, 2, (0.01,)),
    ),
    FaultCase(
        "429_always_reports_retry_after",
        (_status(429, times=None, retry_after=0.25),),
        R1,
        Outcome(E.RateLimitedError, 2, (0.25,), retry_after=0.25),
    ),
    FaultCase(
        "500_once",
        (_status(500),),
        R2,
        Outcome(None, 2, (0.01,)),
        grpc=Outcome(E.InternalServerError, 1, ()),
        note="gRPC: INTERNAL is not in retry_grpc_codes",
    ),
    FaultCase(
        "502_once",
        (_status(502),),
        R2,
        Outcome(None, 2, (0.01,)),
        grpc=Outcome(E.InternalServerError, 1, ()),
        note="gRPC has no 502: the server answers INTERNAL",
    ),
    FaultCase(
        "504_once",
        (_status(504),),
        R2,
        Outcome(None, 2, (0.01,)),
        note="gRPC: DEADLINE_EXCEEDED (ReadTimeout), retried because retry_on_timeout",
    ),
    FaultCase(
        "504_always",
        (_status(504, times=None),),
        R1,
        Outcome(E.GatewayTimeoutError, 2, (0.01,)),
        grpc=Outcome(E.ReadTimeout, 2, (0.01,)),
        note="retries exhausted in milliseconds: the last error, not a deadline",
    ),
    FaultCase(
        "deadline_exceeded_always_without_client_timeout",
        (_code("DEADLINE_EXCEEDED", times=None),),
        R1,
        Outcome(E.GatewayTimeoutError, 2, (0.01,)),
        grpc=Outcome(E.ReadTimeout, 2, (0.01,)),
        timeout=None,
    ),
    FaultCase("unavailable_twice_then_ok", (_code("UNAVAILABLE", times=2),), R3, Outcome(None, 3, (0.01, 0.02))),
    FaultCase(
        "resource_exhausted_always",
        (_code("RESOURCE_EXHAUSTED", times=None),),
        R1,
        Outcome(E.RateLimitedError, 2, (0.01,)),
    ),
    FaultCase(
        "deadline_exceeded_once",
        (_code("DEADLINE_EXCEEDED"),),
        R1,
        Outcome(None, 2, (0.01,)),
        note="REST: 504",
    ),
    FaultCase(
        "deadline_exceeded_not_retried_without_retry_on_timeout",
        (_code("DEADLINE_EXCEEDED"),),
        {"max_retries": 2, "retry_on_timeout": False},
        Outcome(None, 2, (0.01,)),
        grpc=Outcome(E.ReadTimeout, 1, ()),
        note="REST 504 is a status (retried); gRPC DEADLINE_EXCEEDED is a timeout",
    ),
    # -- never retried --------------------------------------------------------------------------------------------
    *(
        FaultCase(f"{status}_never_retried", (_status(status, times=None),), R5, Outcome(cls, 1, ()), grpc=grpc)
        for status, cls, grpc in (
            (400, E.InvalidInputError, None),
            (401, E.UnauthenticatedError, None),
            (403, E.PermissionDeniedError, None),
            (404, E.NotFoundError, None),
            (409, E.ConflictError, None),
            (413, E.PayloadTooLargeError, Outcome(E.InvalidInputError, 1, ())),
            (422, E.UnprocessableEntityError, Outcome(E.InvalidInputError, 1, ())),
        )
    ),
    FaultCase("503_with_max_retries_0", (_status(503),), {"max_retries": 0}, Outcome(E.ServiceUnavailableError, 1, ())),
    FaultCase(
        "503_with_retry_infer_false",
        (_status(503),),
        {"max_retries": 3, "retry_infer": False},
        Outcome(E.ServiceUnavailableError, 1, ()),
    ),
    FaultCase(
        "sequence_request_503_not_retried",
        (_status(503, request="sequence"),),
        R3,
        Outcome(E.ServiceUnavailableError, 1, ()),
        request="sequence",
    ),
    FaultCase(
        "sequence_request_reset_not_retried",
        (_f("drop_before", request="sequence"),),
        R3,
        Outcome(E.ConnectError, 1, ()),
        request="sequence",
        note="it may have reached the model",
    ),
    # -- connection faults ----------------------------------------------------------------------------------------
    FaultCase("reset_before_reply_once", (_f("drop_before"),), R2, Outcome(None, 2, (0.01,))),
    FaultCase(
        "reset_before_reply_always", (_f("drop_before", times=None),), R2, Outcome(E.ConnectError, 3, (0.01, 0.02))
    ),
    FaultCase("reset_during_reply_once", (_f("drop_during"),), R2, Outcome(None, 2, (0.01,))),
    FaultCase("reset_during_reply_always", (_f("drop_during", times=None),), R1, Outcome(E.ConnectError, 2, (0.01,))),
    FaultCase("truncated_reply_once", (_f("truncate"),), R2, Outcome(None, 2, (0.01,))),
    FaultCase("truncated_reply_always", (_f("truncate", times=None),), R1, Outcome(E.ConnectError, 2, (0.01,))),
    # -- stalls, trickles, deadlines ------------------------------------------------------------------------------
    FaultCase(
        "stall_once_past_the_call_timeout",
        (_f("delay", seconds=1.5),),
        R1,
        Outcome(E.ReadTimeout, 1, ()),
        timeout=0.3,
        note="a plain timeout bounds the whole call on every transport: nothing is left for a retry",
    ),
    FaultCase(
        "stall_always_read_timeout",
        (_f("delay", seconds=1.5, times=None),),
        R1,
        Outcome(E.ReadTimeout, 1, ()),
        timeout=0.3,
    ),
    FaultCase(
        "stall_read_timeout_not_retried_without_retry_on_timeout",
        (_f("delay", seconds=1.5),),
        {"max_retries": 2, "retry_on_timeout": False},
        Outcome(E.ReadTimeout, 1, ()),
        timeout=0.3,
    ),
    FaultCase(
        "stall_past_the_overall_deadline",
        (_f("delay", seconds=1.5, times=None),),
        {"max_retries": 5, "deadline": 0.3},
        Outcome(E.DeadlineExceeded, 1, ()),
        grpc=Outcome(E.ReadTimeout, 1, ()),
        timeout=1.0,
        real_sleeps=True,
        note="gRPC: the policy deadline becomes the call deadline (DEADLINE_EXCEEDED -> ReadTimeout)",
    ),
    FaultCase(
        "retry_after_past_the_overall_deadline",
        (_status(503, times=None, retry_after=0.5),),
        {"max_retries": 10, "deadline": 0.9},
        Outcome(E.ServiceUnavailableError, 2, (0.5,)),
        real_sleeps=True,
        note="no retry starts that would sleep past the deadline",
    ),
    FaultCase(
        "trickle_within_read_timeout",
        (_f("trickle", chunk_size=64, seconds=0.02),),
        R1,
        Outcome(None, 1, ()),
        timeout=1.0,
        note="the read timeout bounds each wait for data, not the whole reply",
    ),
    FaultCase(
        "trickle_past_the_overall_deadline",
        (_f("trickle", chunk_size=8, seconds=0.05, times=None),),
        {"max_retries": 2, "deadline": 0.4},
        Outcome(E.DeadlineExceeded, 1, ()),
        grpc=NOT_APPLICABLE,
        timeout=1.0,
        real_sleeps=True,
        note="a slow-loris reply cannot outlive the deadline (gRPC: the server has no trickle)",
    ),
)

CASE_IDS = tuple(case.id for case in CASES)
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"
