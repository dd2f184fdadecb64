"""Configuration values: Timeout, RetryPolicy, RESTConfig, and the auth helpers.

Owns: immutable, validated settings and the pure retry decisions (which status or error to retry, how long to
back off, what a ``Retry-After`` header means). Sync and async transports share these decisions and differ only
in how they sleep. Must not import: requests, urllib3, aiohttp, grpc (auth objects for ``requests`` are passed
through untouched).
"""

from __future__ import annotations

import base64
import email.utils
import math
import os
import random
import time
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping, Union
from urllib.parse import urlsplit

__all__ = [
    "Timeout",
    "RetryPolicy",
    "RESTConfig",
    "BearerToken",
    "APIKey",
    "BasicAuth",
    "parse_retry_after",
    "NEVER_RETRY_STATUSES",
]

#: ``RESTConfig.max_connections`` / ``max_keepalive`` defaults (the seed's recommendation for high concurrency).
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_KEEPALIVE = 128

#: Statuses that mean the request itself is wrong; retrying cannot help, so no policy may retry them.
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 422})

TimeoutLike = Union["Timeout", float, int, "tuple[float | None, float | None]", None]


def _check_seconds(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None:
        if not allow_none:
            raise ValueError(f"{name} must be a number of seconds, not None")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0 (or None for no limit), got {value!r}")


@dataclass(frozen=True)
class Timeout:
    """Timeouts in seconds; None means no limit.

    Args:
        timeout: One number for the whole call: it bounds every phase below AND the call as a whole, retries
            and backoff included (``total``). This is what a plain number means wherever inferkit takes a
            ``timeout``, on REST and gRPC alike.
        connect: Establishing the TCP (and TLS) connection, per attempt.
        read: Waiting for each chunk of the reply (the model's compute time goes here), per attempt.
        write: Sending the request body, per attempt.
        pool: Waiting for a free pooled connection when the pool is exhausted, per attempt.
        total: The whole call, every attempt and every backoff sleep included (None: only the per-phase
            limits and ``RetryPolicy.deadline`` apply). The call fails with ``DeadlineExceeded`` when it runs out.

    ``Timeout(5)`` sets all five; ``Timeout(read=300)`` only the read limit (the others keep their defaults, no
    total); ``Timeout.coerce((3, 60))`` is requests' (connect, read) form, with no total.
    """

    connect: float | None = 10.0
    read: float | None = 60.0
    write: float | None = 30.0
    pool: float | None = 10.0
    total: float | None = None

    def __init__(
        self,
        timeout: float | None | object = ...,
        *,
        connect: float | None | object = ...,
        read: float | None | object = ...,
        write: float | None | object = ...,
        pool: float | None | object = ...,
        total: float | None | object = ...,
    ) -> None:
        base: dict[str, Any] = {"connect": 10.0, "read": 60.0, "write": 30.0, "pool": 10.0, "total": None}
        if timeout is not ...:
            base = dict.fromkeys(base, timeout)
        for key, value in (("connect", connect), ("read", read), ("write", write), ("pool", pool), ("total", total)):
            if value is not ...:
                base[key] = value
        for key, value in base.items():
            _check_seconds(f"Timeout.{key}", value)
            object.__setattr__(self, key, float(value) if value is not None else None)

    @classmethod
    def coerce(cls, value: TimeoutLike) -> Timeout:
        """Accept a Timeout, a number (the whole call, and each phase), None (no limits) or a (connect, read)
        tuple (per attempt)."""
        if isinstance(value, Timeout):
            return value
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ValueError(f"a timeout tuple must be (connect, read), got {value!r}")
            return cls(connect=value[0], read=value[1])
        return cls(value)

    @property
    def total_hint(self) -> float | None:
        """connect + write + read: the longest one attempt can take when nothing else is set."""
        parts = (self.connect, self.write, self.read)
        return None if any(p is None for p in parts) else float(sum(p for p in parts if p is not None))


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date); None if absent/bad."""
    lowered = {k.lower(): v for k, v in headers.items()} if not hasattr(headers, "getall") else headers
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, parsed.timestamp() - current)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how to retry. Immutable; shared by REST, gRPC, sync and async clients.

    Connection errors (refused, reset, a stale keep-alive connection) are always retried within
    ``max_retries``: no server ever saw such a request. Statuses in ``retry_statuses``, gRPC codes in
    ``retry_grpc_codes`` and read timeouts (``retry_on_timeout``) are retried too. Infer requests are retried
    (``retry_infer``): inference on a stateless model is idempotent; a request with a ``sequence_id`` never is,
    because the model keeps state between its requests.

    Backoff: ``backoff_initial * backoff_multiplier ** (retry - 1)`` capped at ``backoff_max``, minus up to
    ``jitter`` of itself at random. A server's ``Retry-After`` (or ``retry-after-ms``) replaces the backoff
    when ``respect_retry_after``, capped at ``retry_after_max``. ``deadline`` bounds all attempts and sleeps
    together: no retry starts that would sleep past it.
    """

    max_retries: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.25
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    retry_grpc_codes: frozenset[str] = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})
    retry_on_timeout: bool = True
    retry_infer: bool = True
    respect_retry_after: bool = True
    retry_after_max: float = 120.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"RetryPolicy.max_retries must be an integer >= 0, got {self.max_retries!r}")
        for name in ("backoff_initial", "backoff_max", "retry_after_max"):
            _check_seconds(f"RetryPolicy.{name}", getattr(self, name), allow_none=False)
        _check_seconds("RetryPolicy.deadline", self.deadline)
        if self.backoff_multiplier < 1:
            raise ValueError(f"RetryPolicy.backoff_multiplier must be >= 1, got {self.backoff_multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}")
        statuses = frozenset(self.retry_statuses)
        bad = sorted(statuses & NEVER_RETRY_STATUSES)
        if bad:
            raise ValueError(
                f"RetryPolicy.retry_statuses contains {bad}: these mean the request itself is wrong, "
                "so retrying cannot succeed"
            )
        object.__setattr__(self, "retry_statuses", statuses)
        object.__setattr__(self, "retry_grpc_codes", frozenset(c.upper() for c in self.retry_grpc_codes))

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_retries=0)

    @property
    def total_attempts(self) -> int:
        return self.max_retries + 1

    def is_retryable_status(self, status: int) -> bool:
        return status in self.retry_statuses

    def is_retryable_grpc_code(self, code: str) -> bool:
        return code in self.retry_grpc_codes

    def allows_request(self, *, is_infer: bool, is_sequence: bool) -> bool:
        """Whether a request of this kind may be retried at all (a sequence request never is)."""
        if is_sequence:
            return False
        return self.retry_infer or not is_infer

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Backoff before retry number ``retry`` (1-based), with jitter."""
        base = min(self.backoff_max, self.backoff_initial * self.backoff_multiplier ** max(0, retry - 1))
        return base * (1.0 - self.jitter * rand())

    def delay(
        self,
        retry: int,
        *,
        retry_after: float | None = None,
        elapsed: float = 0.0,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to sleep before retry number ``retry`` (1-based), or None when no retry may happen.

        Args:
            retry: Which retry this would be (1 for the first).
            retry_after: The server's Retry-After in seconds, if it sent one.
            elapsed: Seconds since the first attempt started (for the deadline).
            rand: Random source in [0, 1) (tests pass a fixed one).
        """
        if retry > self.max_retries:
            return None
        if retry_after is not None and self.respect_retry_after:
            wait = min(max(0.0, retry_after), self.retry_after_max)
        else:
            wait = self.backoff(retry, rand)
        if self.deadline is not None and elapsed + wait >= self.deadline:
            return None
        return wait

    def remaining(self, elapsed: float) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - elapsed)

    def with_retries(self, max_retries: int) -> RetryPolicy:
        return replace(self, max_retries=max_retries)


class BearerToken:
    """``Authorization: Bearer <token>``."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("BearerToken needs a non-empty token")
        self._token = token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def __repr__(self) -> str:
        return "BearerToken(***)"


class APIKey:
    """An API key sent in a header (``X-API-Key`` by default; e.g. ``triton-access-token`` for PyTriton)."""

    __slots__ = ("_key", "header")

    def __init__(self, key: str, header: str = "X-API-Key") -> None:
        if not key or not header:
            raise ValueError("APIKey needs a non-empty key and header name")
        self._key = key
        self.header = header

    def headers(self) -> dict[str, str]:
        return {self.header: self._key}

    def __repr__(self) -> str:
        return f"APIKey(header={self.header!r}, key=***)"


class BasicAuth:
    """HTTP basic authentication."""

    __slots__ = ("username", "_password")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password

    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.username}:{self._password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def __repr__(self) -> str:
        return f"BasicAuth({self.username!r}, ***)"


StaticAuth = Union[BearerToken, APIKey, BasicAuth]

#: Headers whose values are never logged.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "triton-access-token", "cookie"})


def _tls_paths(cert: Any, verify: Any) -> list[tuple[str, str]]:
    paths: list[tuple[str, str]] = []
    if isinstance(cert, str):
        paths.append(("cert", cert))
    elif isinstance(cert, tuple):
        paths.extend((f"cert[{i}]", str(p)) for i, p in enumerate(cert))
    if isinstance(verify, (str, os.PathLike)):
        paths.append(("verify", os.fspath(verify)))
    return paths


def _frozen_mapping(value: Mapping[str, str] | None, name: str) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ValueError(f"RESTConfig.{name} must be a mapping of str to str, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"RESTConfig.{name} must map str to str; {k!r}: {v!r} is not")
    return MappingProxyType(dict(value))


def _hide_userinfo(url: str) -> str:
    """``scheme://***@host`` for a URL that carries ``user:password@`` (for reprs and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


@dataclass(frozen=True)
class RESTConfig:
    """Settings of a REST client (sync and async). Immutable; validated on construction.

    The first fields are the KServe SDK's ``RESTConfig`` (so existing code keeps working); the rest is what a
    production deployment needs.

    Args:
        transport: A custom transport: a ``requests`` adapter (sync) or an ``aiohttp`` connector (async).
        protocol: ``"v2"`` (Open Inference Protocol: Triton, KServe v2, MLServer) or ``"v1"`` (KServe v1).
        retries: Shorthand for ``RetryPolicy(max_retries=retries)``; ignored when ``retry`` is given.
        http2: HTTP/2 is not offered by the requests/aiohttp transports; True raises ValueError (use gRPC
            for multiplexed connections) instead of being silently ignored.
        timeout: A :class:`Timeout`, seconds for the whole call (retries and backoff included, and each phase
            of each attempt), a (connect, read) tuple (per attempt), or None for no limit.
        cert: Client certificate for mTLS: a PEM path holding cert and key, or a (cert, key) tuple of paths.
        verify: True (system CAs), False (no verification: unsafe), a CA bundle path, or an ``ssl.SSLContext``.
        auth: ``(user, password)`` for basic auth, :class:`BearerToken`, :class:`APIKey`, :class:`BasicAuth`,
            or (sync only) any ``requests.auth.AuthBase``.
        verbose: Log each request (method, URL, status, sizes, timing) at INFO on logger ``inferkit``;
            credentials are redacted.
        retry: The full retry policy (default: ``RetryPolicy(max_retries=retries)``).
        max_connections: The most connections open at once to one host, hence the most requests in flight to it
            (sync and aio). A request beyond it waits for a free connection up to ``Timeout.pool``, then fails
            with ``PoolTimeout``. 256 by default: a connection is only opened when a request needs one, so a high
            limit costs nothing until the concurrency is there, and 256 covers a web app's threads or a batch
            job's ``infer_many`` (128 in flight by default) without making them wait.
        max_keepalive: The most idle connections kept open per host (sync): a connection given back while that
            many are already idle is closed. 128 by default (at most ``max_connections``): after a burst, the
            client holds at most that many sockets on the server. aiohttp has no such limit: ``inferkit.aio``
            keeps up to ``max_connections`` idle, each closed after ``keepalive_expiry``.
        pool_maxsize: The former name of ``max_connections`` (kept as an alias: always equal to it). Giving both
            with different values is a ValueError.
        pool_connections: How many hosts get a pool.
        keepalive_expiry: Seconds a pooled connection may stay idle and still be reused; one idle for longer is
            closed and replaced (None: reuse forever). 30 s is below the idle timeouts of common servers and load
            balancers (60-350 s), which drop idle connections without a word. Sync and aio; with a ``session`` of
            your own it applies to the pools inferkit drives, not to those of your own adapters.
        headers: Headers sent with every request (per-call headers override them).
        proxies: ``{"http": url, "https": url}``; pooling keeps working through proxies.
        compression: ``"gzip"`` or ``"deflate"`` to compress request bodies of at least
            ``compression_threshold`` bytes; None sends them as they are.
        accept_compression: Ask for compressed replies (``Accept-Encoding: gzip, deflate``). Off by default:
            servers compress every reply when asked (Triton and the reference server even tiny ones), which costs
            CPU on both ends for little gain on binary tensors; compressed replies are decoded either way.
        binary_data: None: use the binary tensor extension when the server lists it (checked once per
            client); True: always; False: never (JSON only).
        max_response_size: Largest reply body accepted, checked while reading (also after decompression).
        propagate_trace: Send the current OpenTelemetry span's trace context (W3C ``traceparent``) with every
            call, when the application uses OpenTelemetry (the ``opentelemetry`` extra); False: never.
    """

    transport: Any = None
    protocol: str = "v2"
    retries: int = 3
    http2: bool = False
    timeout: TimeoutLike = field(default_factory=Timeout)
    cert: str | tuple[str, str] | None = None
    verify: Any = True
    auth: Any = None
    verbose: bool = False
    retry: RetryPolicy | None = None
    pool_maxsize: int | None = None  # alias of max_connections (set to it after validation)
    pool_connections: int = 10
    keepalive_expiry: float | None = 30.0
    headers: Mapping[str, str] | None = None
    proxies: Mapping[str, str] | None = None
    compression: str | None = None
    compression_threshold: int = 1024
    accept_compression: bool = False
    binary_data: bool | None = None
    max_response_size: int = 2**31
    max_connections: int | None = None  # None: DEFAULT_MAX_CONNECTIONS (or pool_maxsize when given)
    max_keepalive: int | None = DEFAULT_MAX_KEEPALIVE
    propagate_trace: bool = True

    def __post_init__(self) -> None:
        protocol = str(getattr(self.protocol, "value", self.protocol)).lower()
        if protocol not in ("v1", "v2"):
            raise ValueError(f"RESTConfig.protocol must be 'v1' or 'v2', got {self.protocol!r}")
        object.__setattr__(self, "protocol", protocol)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"RESTConfig.retries must be an integer >= 0, got {self.retries!r}")
        if self.http2:
            raise ValueError(
                "RESTConfig.http2=True is not supported: the requests and aiohttp transports speak HTTP/1.1. "
                "Use the gRPC client for multiplexed HTTP/2 connections."
            )
        object.__setattr__(self, "timeout", Timeout.coerce(self.timeout))
        if self.retry is None:
            object.__setattr__(self, "retry", RetryPolicy(max_retries=self.retries))
        elif not isinstance(self.retry, RetryPolicy):
            raise ValueError(f"RESTConfig.retry must be a RetryPolicy, got {type(self.retry).__name__}")
        for name in ("max_connections", "pool_maxsize", "pool_connections", "max_keepalive"):
            value = getattr(self, name)
            if value is None and name != "pool_connections":
                continue
            least = 0 if name == "max_keepalive" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"RESTConfig.{name} must be an integer >= {least}, got {value!r}")
        if self.max_connections is not None and self.pool_maxsize is not None:
            if self.max_connections != self.pool_maxsize:
                raise ValueError(
                    f"RESTConfig: max_connections={self.max_connections} and pool_maxsize={self.pool_maxsize} "
                    "disagree; pool_maxsize is the former name of max_connections: give only max_connections"
                )
        limit = self.max_connections or self.pool_maxsize or DEFAULT_MAX_CONNECTIONS
        object.__setattr__(self, "max_connections", limit)
        object.__setattr__(self, "pool_maxsize", limit)
        if self.keepalive_expiry is not None:
            _check_seconds("RESTConfig.keepalive_expiry", self.keepalive_expiry)
        if self.compression is not None and self.compression not in ("gzip", "deflate"):
            raise ValueError(f"RESTConfig.compression must be None, 'gzip' or 'deflate', got {self.compression!r}")
        if not isinstance(self.max_response_size, int) or self.max_response_size < 1:
            raise ValueError(f"RESTConfig.max_response_size must be a positive integer, got {self.max_response_size!r}")
        if isinstance(self.cert, (list, tuple)):
            if len(self.cert) != 2:
                raise ValueError("RESTConfig.cert must be a PEM path or a (cert, key) pair of paths")
            object.__setattr__(self, "cert", tuple(self.cert))
        # A wrong path fails here, with its name, rather than as a TLS error on the first request.
        for label, path in _tls_paths(self.cert, self.verify):
            if not os.path.exists(path):
                raise ValueError(f"RESTConfig.{label}: {path!r} does not exist")
            if not os.access(path, os.R_OK):
                raise ValueError(f"RESTConfig.{label}: {path!r} is not readable")
        if isinstance(self.auth, (list, tuple)):
            if len(self.auth) != 2:
                raise ValueError("RESTConfig.auth as a tuple must be (username, password)")
            object.__setattr__(self, "auth", BasicAuth(*self.auth))
        object.__setattr__(self, "headers", _frozen_mapping(self.headers, "headers"))
        object.__setattr__(self, "proxies", _frozen_mapping(self.proxies, "proxies") if self.proxies else None)

    def __repr__(self) -> str:
        # The generated repr would print credential headers and proxy passwords verbatim into any log of the config.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "headers" and value:
                value = {k: "***" if k.lower() in SENSITIVE_HEADERS else v for k, v in value.items()}
            elif f.name == "proxies" and value:
                value = {k: _hide_userinfo(v) for k, v in value.items()}
            parts.append(f"{f.name}={value!r}")
        return f"RESTConfig({', '.join(parts)})"

    @property
    def retry_policy(self) -> RetryPolicy:
        """The effective retry policy."""
        assert self.retry is not None
        return self.retry

    @property
    def timeouts(self) -> Timeout:
        """The effective split timeouts."""
        assert isinstance(self.timeout, Timeout)
        return self.timeout

    def static_auth_headers(self) -> dict[str, str]:
        """Headers from ``auth`` when it is one of inferkit's static auth objects (else empty)."""
        if isinstance(self.auth, (BearerToken, APIKey, BasicAuth)):
            return self.auth.headers()
        return {}

    def __getstate__(self) -> dict[str, Any]:
        # MappingProxyType cannot be pickled: send plain dicts (multiprocessing, Ray) and freeze them on arrival.
        state = dict(self.__dict__)
        for name in ("headers", "proxies"):
            if state.get(name) is not None:
                state[name] = dict(state[name])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("headers", "proxies"):
            if state.get(name) is not None:
                state[name] = MappingProxyType(dict(state[name]))
        self.__dict__.update(state)  # frozen: bypass __setattr__, as unpickling a dataclass normally does

    def replace(self, **changes: Any) -> RESTConfig:
        """A copy with some fields changed (``retries`` keeps the policy in step unless ``retry`` is given)."""
        if "retries" in changes and "retry" not in changes:
            changes["retry"] = self.retry_policy.with_retries(changes["retries"])
        # The two names of one limit move together: changing either changes both.
        if "max_connections" in changes and "pool_maxsize" not in changes:
            changes["pool_maxsize"] = None
        elif "pool_maxsize" in changes and "max_connections" not in changes:
            changes["max_connections"] = None
        return replace(self, **changes)

    @property
    def connection_limit(self) -> int:
        """``max_connections`` as resolved (the default, or ``pool_maxsize`` when only that was given)."""
        assert self.max_connections is not None
        return self.max_connections

    @property
    def idle_limit(self) -> int | None:
        """The most idle connections kept per host: ``max_keepalive``, at most ``max_connections`` (None: no
        limit of its own, i.e. ``max_connections``)."""
        if self.max_keepalive is None or self.max_keepalive >= self.connection_limit:
            return None
        return self.max_keepalive
