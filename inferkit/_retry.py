"""The retry state machine of one logical request, shared by every transport (REST and gRPC, sync and async).

Owns: the per-attempt time budget under an overall deadline (:class:`Budget`), the decisions taken after a failed
attempt or an error status (:class:`RetryState`: resend at once on a fresh connection, sleep and retry, or give
up), and the typed errors a REST transport raises for a failure kind (:func:`failure_error`,
:func:`too_large_error`, :func:`deadline_error`). Transports only classify what happened and do the I/O and the
sleeping (``time.sleep`` or ``asyncio.sleep``); they never decide.
Must not import: requests, urllib3, aiohttp, grpc.

Failure kinds a REST transport reports for an attempt that got no complete reply:
``connect`` (refused, DNS, proxy), ``connect_timeout``, ``tls``, ``pool`` (no free connection in time),
``stale_send`` (writing the request on a reused keep-alive connection failed: the server had closed it while it
was idle, so the request was never received), ``stale`` (a reused keep-alive connection was closed after the
request was written, before any byte of the reply), ``tls_closed`` (a new TLS
connection made without a client certificate was closed before any byte of the reply: how a TLS 1.3 server that
requires one rejects it), ``dropped`` (closed or reset after sending, or mid-reply), ``write_timeout``,
``read_timeout``. :func:`closed_kind` picks among ``stale_send``, ``stale``, ``tls_closed`` and ``dropped`` for both
transports.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Generator, NamedTuple, Sized

from inferkit import errors
from inferkit.codec.http_wire import BodyTooLarge, log_line
from inferkit.codec.rest_calls import Reply, reply_error
from inferkit.config import RetryPolicy, Timeout, parse_retry_after

__all__ = [
    "Budget",
    "Step",
    "RetryState",
    "Attempt",
    "AttemptFailed",
    "rest_exchange",
    "attempt_logger",
    "failure_error",
    "too_large_error",
    "deadline_error",
    "redirect_error",
    "describe",
    "closed_kind",
    "CLIENT_CERT_HINT",
]

_logger = logging.getLogger("inferkit")

_USERINFO = re.compile(r"//[^/?#]*@")

#: Added to the error of a TLS connection closed during set-up when no client certificate was configured.
CLIENT_CERT_HINT = "the server may require a client certificate (mTLS): set RESTConfig.cert"


def closed_kind(*, reused: bool, got_status: bool, tls_without_client_cert: bool, sending: bool = False) -> str:
    """The failure kind of a connection the peer closed or reset (the same rule for the sync and async transports).

    Args:
        reused: The attempt ran on a pooled keep-alive connection (not one opened for it).
        got_status: The reply's status line had arrived.
        tls_without_client_cert: The connection is TLS and the client has no client certificate configured.
        sending: It failed while the request was being written (a transport that cannot tell passes False).
    """
    if got_status:
        return "dropped"
    if reused:
        return "stale_send" if sending else "stale"
    return "tls_closed" if tls_without_client_cert else "dropped"


class Budget:
    """The timeouts of one attempt, capped by what is left of the overall deadline."""

    __slots__ = ("connect", "read", "write", "pool", "capped", "remaining")

    def __init__(self, timeout: Timeout, remaining: float | None) -> None:
        self.capped = False
        self.remaining = remaining
        if remaining is None:
            self.connect, self.read, self.write, self.pool = timeout.connect, timeout.read, timeout.write, timeout.pool
            return
        values = []
        for value in (timeout.connect, timeout.read, timeout.write, timeout.pool):
            if value is None or value > remaining:
                values.append(max(remaining, 0.001))
                self.capped = True
            else:
                values.append(value)
        self.connect, self.read, self.write, self.pool = values


class Step(NamedTuple):
    """What to do after a failed attempt: ``action`` is "resend" (now, on a fresh connection), "sleep" (``wait``
    seconds, then retry), "raise" (the mapped error of this failure) or "deadline" (DeadlineExceeded)."""

    action: str
    wait: float = 0.0


_RESEND = Step("resend")
_RAISE = Step("raise")
_DEADLINE = Step("deadline")


class RetryState:
    """One logical request's progress through its attempts.

    Args:
        policy: The retry policy.
        retryable: Whether a request that may have reached the server may be sent again (False for sequence
            requests). Failures before anything was sent are retried regardless.
        retry_statuses: Whether retryable statuses / server codes are retried (False for health probes, where
            the status is the answer).
        clock: Monotonic clock (tests pass their own).
    """

    __slots__ = (
        "policy",
        "deadline",
        "policy_deadline",
        "retryable",
        "retry_statuses",
        "attempt",
        "start",
        "_stale_used",
        "_out_of_time",
        "_clock",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        retryable: bool = True,
        retry_statuses: bool = True,
        clock: Callable[[], float] = time.monotonic,
        total: float | None = None,
    ) -> None:
        self.policy = policy
        #: The call's deadline across attempts: the policy's, or the call's ``Timeout.total`` when sooner.
        deadline = policy.deadline
        #: Whether the deadline is the policy's (a timeout cut short by it is DeadlineExceeded) rather than the
        #: call's ``Timeout.total`` (the timeout of the phase it ran out in, as on gRPC, unless after a retry).
        self.policy_deadline = True
        if total is not None and (deadline is None or total < deadline):
            deadline = total
            self.policy_deadline = False
        self.deadline = deadline
        self.retryable = retryable
        self.retry_statuses = retry_statuses
        self.attempt = 0
        self._stale_used = False
        self._out_of_time = False  # on_error gave up because the next attempt would start past the deadline
        self._clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self._clock() - self.start

    def begin(self, timeout: Timeout, default: Budget | None = None) -> Budget:
        """Start the next attempt; its budget (``default`` when no deadline applies, to save an allocation)."""
        self.attempt += 1
        if self.deadline is None:
            return default if default is not None else Budget(timeout, None)
        return Budget(timeout, max(0.0, self.deadline - self.elapsed()))

    def _delay(self, retry_after: float | None = None) -> float | None:
        """The policy's backoff before the next retry, or None: none may start before the deadline."""
        elapsed = self.elapsed()
        wait = self.policy.delay(self.attempt, retry_after=retry_after, elapsed=elapsed)
        if wait is not None and self.deadline is not None and elapsed + wait >= self.deadline:
            return None
        return wait

    def on_failure(self, kind: str, budget: Budget) -> Step:
        """The step after an attempt failed with a failure ``kind`` (module docstring) under ``budget``."""
        policy = self.policy
        if not self._stale_used and (kind == "stale_send" or (kind == "stale" and self.retryable)):
            # The server closed an idle keep-alive connection: resend once at once on a new connection; it is not a
            # failure of the server, so it costs no retry from the policy. Failing while the request was being
            # written, the request never reached the server: resent whatever the policy, sequence requests too.
            # Failing after it was written, the server might have received it: resent only when retryable.
            self._stale_used = True
            self.attempt -= 1
            return _RESEND
        if kind in ("tls", "tls_closed", "pool"):
            may_retry = False
        elif kind in ("connect", "connect_timeout"):
            may_retry = True  # nothing reached the server
        elif kind in ("read_timeout", "write_timeout"):
            may_retry = self.retryable and policy.retry_on_timeout
        else:  # dropped, stale / stale_send (second time)
            may_retry = self.retryable
        if kind.endswith("timeout") and (
            budget.capped or (self.deadline is not None and self.elapsed() >= self.deadline)
        ):
            return _DEADLINE if self.policy_deadline or self.attempt > 1 else _RAISE
        wait = self._delay() if may_retry else None
        return _RAISE if wait is None else Step("sleep", wait)

    def on_status(self, status: int, retry_after: float | None) -> float | None:
        """Seconds to sleep before retrying an error status, or None: the reply is final."""
        if not (self.retry_statuses and self.retryable and self.policy.is_retryable_status(status)):
            return None
        return self._delay(retry_after)

    def on_error(self, err: errors.InferkitError, total: float | None) -> float | None:
        """Seconds to sleep before retrying after a typed error (the gRPC transports), or None: give up.

        ``total`` is the call's deadline across attempts (None: none).
        """
        if not (self.retryable and _is_retryable(err, self.policy)):
            return None
        if isinstance(err, errors.ServerError) and not self.retry_statuses:
            return None
        elapsed = self.elapsed()
        retry_after = err.retry_after if isinstance(err, errors.ServerError) else None
        wait = self.policy.delay(self.attempt, retry_after=retry_after, elapsed=elapsed)
        if total is not None and (elapsed >= total or (wait is not None and elapsed + wait >= total)):
            self._out_of_time = True
            return None
        return wait

    def final_error(self, err: errors.InferkitError, where: str, total: float | None) -> errors.InferkitError:
        """The error to raise when :meth:`on_error` gave up.

        A timeout after several attempts becomes DeadlineExceeded only when the call gave up because the deadline
        ran out (no time left for the next attempt); retries exhausted well within it keep the last error.
        """
        timed_out = isinstance(err, (errors.ReadTimeout, errors.ConnectTimeout))
        if timed_out and self.attempt > 1 and total is not None and self._out_of_time:
            return errors.DeadlineExceeded(
                f"{where}: the {total:g} s deadline ran out after {self.attempt} attempts: {err.message}",
                model_name=err.model_name,
                request_id=err.request_id,
                attempts=self.attempt,
                grpc_code=err.grpc_code,
            )
        return err


def _is_retryable(err: errors.InferkitError, policy: RetryPolicy) -> bool:
    if isinstance(err, (errors.PayloadTooLargeError, errors.ResponseTooLargeError)):
        return False
    if isinstance(err, errors.ConnectError):
        return not isinstance(err, errors.TLSError)
    if isinstance(err, errors.ConnectTimeout):
        return True  # nothing reached the server (as on REST); the deadline still bounds the retries
    if isinstance(err, errors.ReadTimeout):
        return policy.retry_on_timeout
    return err.grpc_code is not None and policy.is_retryable_grpc_code(err.grpc_code)


def describe(exc: BaseException) -> str:
    """A short ``Type: message`` of the interesting exception inside library wrappers."""
    seen = exc
    # HTTP libraries wrap the interesting OS / SSL error a few levels down (``reason``, ``os_error``, args).
    for _ in range(4):
        inner = (
            getattr(seen, "reason", None) or getattr(seen, "os_error", None) or (seen.args[0] if seen.args else None)
        )
        if isinstance(inner, BaseException) and inner is not seen:
            seen = inner
        else:
            break
    text = str(seen) or type(seen).__name__
    return f"{type(seen).__name__}: {text}"[:500]


def failure_error(
    kind: str, where: str, exc: BaseException, *, timeout: float | None, max_connections: int, **ctx: Any
) -> errors.InferkitError:
    """The typed error of a REST attempt that failed with ``kind`` (``ctx``: model_name, request_id, attempts)."""
    if kind == "pool":
        return errors.PoolTimeout(
            f"{where}: no pooled connection became free within {timeout} s (Timeout.pool): all "
            f"{max_connections} connections (RESTConfig.max_connections, formerly pool_maxsize) are busy; raise "
            "RESTConfig.max_connections or Timeout.pool, or lower the concurrency",
            **ctx,
        )
    if kind == "connect_timeout":
        return errors.ConnectTimeout(
            f"{where}: could not connect within {timeout} s (Timeout.connect); is the server reachable from here?",
            **ctx,
        )
    if kind == "read_timeout":
        return errors.ReadTimeout(
            f"{where}: no reply within the read timeout of {timeout} s (the model may need longer: raise Timeout.read)",
            **ctx,
        )
    if kind == "write_timeout":
        return errors.WriteTimeout(f"{where}: sending the request body timed out (Timeout.write)", **ctx)
    if kind == "tls":
        return errors.TLSError(
            f"{where}: TLS failed: {describe(exc)} (check RESTConfig.verify (CA bundle) and, for mTLS, "
            "RESTConfig.cert)",
            **ctx,
        )
    if kind == "tls_closed":
        return errors.TLSError(
            f"{where}: the server closed the new TLS connection before any reply ({describe(exc)}); {CLIENT_CERT_HINT}",
            **ctx,
        )
    if kind == "connect":
        return errors.ConnectError(f"{where}: could not connect: {describe(exc)}", **ctx)
    return errors.ConnectError(
        f"{where}: the connection was closed before the reply was complete: {describe(exc)}", **ctx
    )


def deadline_error(where: str, deadline: float | None, **ctx: Any) -> errors.DeadlineExceeded:
    """The overall deadline ran out during an attempt (``ctx`` includes ``attempts``)."""
    return errors.DeadlineExceeded(
        f"{where}: the overall deadline of {deadline} s ran out during attempt {ctx.get('attempts')}", **ctx
    )


def redirect_error(where: str, status: int, location: str | None, **ctx: Any) -> errors.DecodeError:
    """A 3xx reply: inferkit follows no redirect (an ``Authorization`` header must never reach another host), so
    the error names the target to configure instead (its ``user:password@``, if any, left out)."""
    target = "no Location header" if not location else f"Location: {_USERINFO.sub('//***@', location)[:300]}"
    return errors.DecodeError(
        f"{where}: the server answered with a redirect (HTTP {status}, {target}); inferkit does not follow "
        "redirects: point the client at the final URL",
        **ctx,
    )


def too_large_error(where: str, limit: int, compressed: bool, **ctx: Any) -> errors.ResponseTooLargeError:
    """A reply passed ``RESTConfig.max_response_size`` (reading stopped there)."""
    return errors.ResponseTooLargeError(
        f"{where}: the reply is larger than max_response_size={limit} bytes"
        + (" after decompression" if compressed else "")
        + "; reading stopped at the limit (raise RESTConfig.max_response_size if this is expected)",
        **ctx,
    )


class AttemptFailed(Exception):
    """One REST attempt failed before a complete reply; ``kind`` (module docstring) drives retry and mapping."""

    def __init__(self, kind: str, exc: BaseException, *, timeout: float | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.exc = exc
        self.timeout = timeout


class Attempt(NamedTuple):
    """What the transport must do next: send once with this ``budget`` (``fresh``: on a new connection)."""

    budget: Budget
    fresh: bool


def attempt_logger(method: str, url: str, items: Any, body: Sized | None) -> Callable[[Any, int], None]:
    """The ``log`` callback of :func:`rest_exchange` for verbose clients: one INFO line per attempt, with the
    reply's status, sizes and time, or the failure (credentials in ``items`` redacted by ``log_line``)."""
    sent = len(body) if body is not None else 0
    t0 = time.perf_counter()

    def log(outcome: Any, attempt: int) -> None:
        nonlocal t0
        if isinstance(outcome, AttemptFailed) and outcome.kind == "stale_send":
            _logger.info(
                "%s %s: the pooled connection had been closed by the server while idle (%s: %s); the request was "
                "not sent, resending it at once on a new connection",
                method,
                url,
                type(outcome.exc).__name__,
                outcome.exc,
            )
        elif isinstance(outcome, AttemptFailed):
            _logger.info("%s %s failed (%s: %s)", method, url, outcome.kind, outcome.exc)
        elif isinstance(outcome, Reply):
            ms = (time.perf_counter() - t0) * 1000.0
            _logger.info("%s", log_line(method, url, outcome.status, sent, len(outcome.body), ms, attempt, items))
        t0 = time.perf_counter()

    return log


def rest_exchange(
    prep: Any,
    first: Any,
    *,
    base_url: str,
    max_connections: int,
    log: Callable[[Any, int], None] | None = None,
) -> Generator[Attempt | float, Any, Any]:
    """The retry loop of one REST request after its first attempt, as a generator the driver runs (sync or async).

    ``prep`` is the request a transport prepared: its ``call`` (a :class:`~inferkit.codec.rest_calls.RestCall`),
    split ``timeout``, ``default`` budget (that of the config's timeout, used when no deadline applies), retry
    ``state`` (first attempt begun) and the first attempt's ``budget``; ``first`` is that attempt's outcome.
    The generator yields an :class:`Attempt` (the transport sends once and the driver ``send()``\\ s back the
    :class:`Reply`-like result, or the :class:`AttemptFailed` / ``BodyTooLarge`` it caught), or a float (the
    driver sleeps that many seconds and sends back None). It returns the final reply (``StopIteration.value``) or
    raises the typed error. ``base_url`` and ``max_connections`` are for error messages; ``log`` is called with each
    reply or failure and the attempt number (verbose mode).
    """
    call, state, timeout, default, budget = prep.call, prep.state, prep.timeout, prep.default, prep.budget
    where = f"{call.method} {base_url}{call.path}"
    raise_for_status = call.raise_for_status
    model_name, request_id = call.model_name, call.request_id
    ctx: dict[str, Any] = {"model_name": model_name, "request_id": request_id}
    outcome = first
    while True:
        if log is not None:
            log(outcome, state.attempt)
        fresh = False
        if isinstance(outcome, AttemptFailed):
            step = state.on_failure(outcome.kind, budget)
            if step.action == "resend":
                fresh = True
            elif step.action == "sleep":
                yield step.wait
            elif step.action == "deadline":
                raise deadline_error(where, state.deadline, attempts=state.attempt, **ctx) from outcome.exc
            else:
                raise failure_error(
                    outcome.kind,
                    where,
                    outcome.exc,
                    timeout=state.deadline if budget.capped else outcome.timeout,
                    max_connections=max_connections,
                    attempts=state.attempt,
                    **ctx,
                ) from outcome.exc
        elif isinstance(outcome, BodyTooLarge):
            raise too_large_error(where, outcome.limit, outcome.compressed, attempts=state.attempt, **ctx) from None
        elif isinstance(outcome, BaseException):  # a driver bug, never swallowed
            raise outcome
        else:
            outcome.attempts = state.attempt
            if outcome.status < 300 or (outcome.status < 400 and not raise_for_status):
                return outcome
            if outcome.status < 400:
                location = outcome.headers.get("Location")
                raise redirect_error(where, outcome.status, location, attempts=state.attempt, **ctx)
            wait = state.on_status(outcome.status, parse_retry_after(outcome.headers))
            if wait is None:
                if not raise_for_status:
                    return outcome
                raise reply_error(outcome, **ctx)
            yield wait
        budget = state.begin(timeout, default)
        outcome = yield Attempt(budget, fresh)
