"""The sync HTTP transport under :class:`inferkit.rest_client.InferenceRESTClient`.

Owns: the ``requests.Session`` and its mounted ``HTTPAdapter`` (pool sizing, TLS, proxies, client certificates),
the hot path that drives the adapter's pooled urllib3 connections directly, the retry loop (decisions from
:class:`inferkit.config.RetryPolicy`), split timeouts and the overall deadline, request compression, response
decompression with ``max_response_size`` enforced while reading, verbose logging with credentials redacted, and
THE error boundary: every requests / urllib3 / socket / ssl / http.client exception is turned into an inferkit
error here, with ``raise ... from exc``.
Must not import: aiohttp, grpc, inferkit.aio, inferkit.grpc_client.

Why two paths. ``requests.Session.request`` costs ~400 us of CPU per call, several times the whole cost of a
small inference round trip; the Session stays the place where everything is *configured*, but when nothing
needs requests' per-request machinery (no proxy, no hooks, no cookies, no custom adapter, no ``AuthBase``) the
client takes the urllib3 pool from the session's adapter once and drives its pooled ``HTTPConnection`` with the
``http.client`` primitives it inherits. Otherwise every attempt goes through ``session.request`` (the "session
path"), still with inferkit's retry loop, timeouts and error mapping.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils
import urllib3
from urllib3.exceptions import ClosedPoolError, EmptyPoolError

from inferkit import errors
from inferkit._version import __version__
from inferkit.codec import rest_v2
from inferkit.config import SENSITIVE_HEADERS, RESTConfig, RetryPolicy, Timeout, parse_retry_after

__all__ = ["SyncTransport", "HTTPResponse", "make_adapter"]

logger = logging.getLogger("inferkit")

USER_AGENT = f"inferkit/{__version__}"
_READ_CHUNK = 1 << 16
_COALESCE_LIMIT = 1 << 16  # bodies up to this size are sent together with the headers, in one sendall()
_ERROR_BODY_LIMIT = 1 << 20  # error bodies are read up to 1 MiB; the rest is dropped with the connection

# Failures that mean "the peer closed or reset the connection"; on a reused keep-alive connection before any
# byte of the reply arrived they mean the connection was stale (closed by the server while idle).
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@dataclass
class HTTPResponse:
    """A complete reply: status, headers (case-insensitive ``get``), the whole body in one bytes object."""

    status: int
    headers: Any
    body: bytes
    attempts: int = 1

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)


class _AttemptError(Exception):
    """One attempt failed before a complete reply: ``kind`` says in which phase (drives retry and mapping)."""

    def __init__(self, kind: str, exc: BaseException, *, timeout: float | None = None) -> None:
        super().__init__(kind)
        self.kind = kind  # connect | connect_timeout | tls | stale | dropped | write_timeout | read_timeout | pool
        self.exc = exc
        self.timeout = timeout


class _TooLarge(Exception):
    def __init__(self, size: int, limit: int, compressed: bool) -> None:
        super().__init__(size)
        self.size = size
        self.limit = limit
        self.compressed = compressed


class _InferkitAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` that can carry an ``ssl.SSLContext`` into every pool it creates.

    requests can only express ``verify`` as a bool or a path; a caller's SSLContext (custom ciphers, pinned CAs,
    a client certificate loaded from memory) is passed to urllib3 as the pool's ``ssl_context`` instead.
    """

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, pool_timeout: float | None = None, **kwargs: Any
    ) -> None:
        self._ssl_context = ssl_context
        self._pool_classes = _bounded_pool_classes(pool_timeout)
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = True, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = self._pool_classes
        return manager

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        host_params: Any
        pool_kwargs: Any
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if self._ssl_context is not None and host_params.get("scheme") == "https":
            pool_kwargs = _ssl_context_pool_kwargs(self._ssl_context)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if self._ssl_context is not None and url.lower().startswith("https"):
            return  # everything is in the SSLContext
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]


class _BoundedHTTPPool(urllib3.HTTPConnectionPool):
    default_pool_timeout: float | None = None

    def _get_conn(self, timeout: float | None = None) -> Any:
        return super()._get_conn(timeout if timeout is not None else self.default_pool_timeout)


class _BoundedHTTPSPool(urllib3.HTTPSConnectionPool):
    default_pool_timeout: float | None = None

    def _get_conn(self, timeout: float | None = None) -> Any:
        return super()._get_conn(timeout if timeout is not None else self.default_pool_timeout)


def _bounded_pool_classes(pool_timeout: float | None) -> dict[str, type]:
    """Pool classes whose wait for a free connection defaults to ``pool_timeout`` instead of forever.

    requests never passes ``pool_timeout`` to urllib3, so with ``pool_block=True`` a request on the session path
    would wait forever for a connection; these pools bound that wait (the direct path passes it explicitly).
    """
    attrs = {"default_pool_timeout": pool_timeout}
    return {
        "http": type("InferkitHTTPConnectionPool", (_BoundedHTTPPool,), attrs),
        "https": type("InferkitHTTPSConnectionPool", (_BoundedHTTPSPool,), attrs),
    }


def _ssl_context_pool_kwargs(ctx: ssl.SSLContext) -> dict[str, Any]:
    # cert_reqs mirrors the context so urllib3 does not overwrite its verify_mode; assert_hostname=False when the
    # caller turned hostname checking off, so urllib3 does not turn it back on by itself.
    kwargs: dict[str, Any] = {"ssl_context": ctx, "cert_reqs": ctx.verify_mode}
    if not ctx.check_hostname:
        kwargs["assert_hostname"] = False
    return kwargs


def make_adapter(config: RESTConfig, ssl_context: ssl.SSLContext | None = None) -> requests.adapters.HTTPAdapter:
    """The adapter inferkit mounts on its own Session: pool sized from the config, blocking with a timeout.

    ``pool_block=True`` makes ``pool_maxsize`` a hard limit on open connections per host (no "Connection pool is
    full" churn); the wait for a free connection is bounded by ``Timeout.pool`` on every path. Retries are
    driven by inferkit, so the adapter's own urllib3 ``Retry`` is off.
    """
    return _InferkitAdapter(
        ssl_context=ssl_context,
        pool_timeout=config.timeouts.pool,
        pool_connections=config.pool_connections,
        pool_maxsize=config.pool_maxsize,
        max_retries=urllib3.Retry(0, read=False, redirect=False),
        pool_block=True,
    )


def _build_ssl_context(config: RESTConfig) -> ssl.SSLContext | None:
    if not isinstance(config.verify, ssl.SSLContext):
        return None
    ctx = config.verify
    if config.cert is not None:
        # The caller gave us this context for this client: the client certificate goes into it once.
        if isinstance(config.cert, tuple):
            ctx.load_cert_chain(config.cert[0], config.cert[1])
        else:
            ctx.load_cert_chain(config.cert)
    return ctx


def redact(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers for logging, with credentials replaced by ``***``."""
    return {k: ("***" if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers}


class _Decompressor:
    """gzip / deflate decoding that stops as soon as the output would pass ``limit``."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # gzip: 16 + MAX_WBITS; deflate: zlib-wrapped per RFC, but some servers send raw deflate (decided lazily).
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        self._first = True

    def decompress(self, data: bytes, limit: int, out: list[bytes], total: int) -> int:
        if self.encoding == "deflate" and self._first and data:
            self._first = False
            try:
                return self._run(data, limit, out, total)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._run(data, limit, out, total)

    def _run(self, data: bytes, limit: int, out: list[bytes], total: int) -> int:
        obj = self._obj
        while data:
            chunk = obj.decompress(data, limit - total + 1)
            total += len(chunk)
            if total > limit:
                raise _TooLarge(total, limit, True)
            if chunk:
                out.append(chunk)
            data = obj.unconsumed_tail
        return total

    def flush(self, limit: int, out: list[bytes], total: int) -> int:
        chunk = self._obj.flush()
        total += len(chunk)
        if total > limit:
            raise _TooLarge(total, limit, True)
        if chunk:
            out.append(chunk)
        return total


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        obj = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        obj = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    return obj.compress(body) + obj.flush()


class _Budget:
    """The timeouts of one attempt, capped by what is left of the overall deadline."""

    __slots__ = ("connect", "read", "write", "pool", "capped")

    def __init__(self, timeout: Timeout, remaining: float | None) -> None:
        self.capped = False
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


class SyncTransport:
    """Sends requests to one server (base URL) with pooling, retries, timeouts and error mapping.

    Thread-safe: the pool is urllib3's (a locked queue); everything else is immutable after construction
    except the lazily resolved pool, which is published under a lock.
    """

    def __init__(self, url: str, config: RESTConfig, session: requests.Session | None = None) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"the server URL must be a non-empty string, got {url!r}")
        if "://" not in url:
            url = "http://" + url  # "localhost:8000", as tritonclient accepts it
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"a REST client needs an http:// or https:// URL, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"the server URL {url!r} has no host")
        if parts.query or parts.fragment:
            raise ValueError(f"the server URL {url!r} must not carry a query or fragment")
        self.config = config
        self.scheme = scheme
        self.base_path = requests.utils.requote_uri(parts.path).rstrip("/")
        self.netloc = parts.netloc
        self.base_url = f"{scheme}://{parts.netloc}{self.base_path}"
        self._origin = f"{scheme}://{parts.netloc}"
        self._owns_session = session is None
        self._ssl_context = _build_ssl_context(config)
        if session is None:
            session = requests.Session()
            own_adapter = make_adapter(config, self._ssl_context)
            session.mount("http://", own_adapter)
            session.mount("https://", own_adapter)
            if config.transport is not None:
                if not isinstance(config.transport, requests.adapters.BaseAdapter):
                    raise ValueError(
                        "RESTConfig.transport for the sync client must be a requests adapter "
                        f"(requests.adapters.BaseAdapter), got {type(config.transport).__name__}"
                    )
                session.mount(self._origin + "/", config.transport)
        elif not isinstance(session, requests.Session):
            raise ValueError(f"session must be a requests.Session, got {type(session).__name__}")
        self.session = session
        self._verbose = config.verbose
        self._closed = False
        self._lock = threading.Lock()
        self._pool: Any = None

        # Settings requests would apply per call, resolved once: session defaults, environment, config.
        verify: Any = config.verify
        if isinstance(verify, ssl.SSLContext):
            verify = True
        elif verify is True and not self._owns_session:
            verify = None  # defer to the caller's session.verify / REQUESTS_CA_BUNDLE
        if config.verify is False:
            logger.warning("inferkit: TLS certificate verification is disabled for %s (RESTConfig.verify=False)", url)
        proxies = dict(config.proxies or {})
        settings = session.merge_environment_settings(self.base_url, proxies, None, verify, config.cert)
        self._verify = settings["verify"]
        self._cert = settings["cert"] if self._ssl_context is None else None
        self._proxies = settings["proxies"] or {}
        proxy = requests.utils.select_proxy(self.base_url, self._proxies)
        if proxy and requests.utils.should_bypass_proxies(self.base_url, self._proxies.get("no_proxy")):
            proxy = None
        self._send_kwargs: dict[str, Any] = {
            "verify": self._verify,
            "cert": self._cert,
            "proxies": self._proxies,
            "allow_redirects": False,
            "stream": True,
        }

        adapter: Any = session.get_adapter(self.base_url + "/")
        auth = config.auth
        static_auth = auth is None or config.static_auth_headers() != {}
        self._requests_auth = None if static_auth else auth
        why_session = []
        # requests' own send() is what the direct path replaces; an adapter whose send() is anyone else's (a
        # subclass, or responses / requests-mock patching it in tests) must see every request.
        if not isinstance(adapter, requests.adapters.HTTPAdapter) or (
            getattr(type(adapter).send, "__module__", None) != "requests.adapters"
        ):
            why_session.append("custom adapter")
        if proxy:
            why_session.append("proxy")
        if any(session.hooks.get("response") or ()):
            why_session.append("response hooks")
        if session.auth is not None or not static_auth:
            why_session.append("requests auth")
        if len(session.cookies):
            why_session.append("cookies")
        self.direct = not why_session
        self.path_reason = ", ".join(why_session) or "direct"
        self._adapter = adapter
        if not self.direct and self._ssl_context is not None and not isinstance(adapter, _InferkitAdapter):
            raise ValueError(
                "RESTConfig.verify as an ssl.SSLContext cannot be combined with a session that needs requests' "
                f"own request path ({self.path_reason}); mount an adapter that uses the context on your session"
            )

        self._default_budget = _Budget(config.timeouts, None)
        self._const_headers = self._constant_headers(session)
        self._const_lower = frozenset(k.lower() for k, _ in self._const_headers)
        for key, value in self._const_headers:
            _check_header(key, value)
        self._const_lines = [(k.lower(), f"{k}: {v}\r\n".encode("latin-1")) for k, v in self._const_headers]
        self._const_block = b"".join(line for _, line in self._const_lines)
        self._host_line = b"" if "host" in self._const_lower else f"Host: {self._host_header()}\r\n".encode("idna")
        self._target_prefix = ""

    # -- construction helpers -------------------------------------------------------------------------------
    def _constant_headers(self, session: requests.Session) -> list[tuple[str, str]]:
        """Headers sent on every request, computed once: session's (if changed by the caller), auth, config."""
        merged: dict[str, tuple[str, str]] = {}
        if not self._owns_session:
            defaults = requests.utils.default_headers()
            for key, value in session.headers.items():
                if value is None or defaults.get(key) == value:
                    continue  # requests' own defaults (python-requests UA, */*, keep-alive) are not the caller's
                merged[key.lower()] = (key, str(value))
        merged.setdefault("user-agent", ("User-Agent", USER_AGENT))
        for key, value in self.config.static_auth_headers().items():
            merged[key.lower()] = (key, value)
        for key, value in self.config.headers.items():  # type: ignore[union-attr]
            merged[key.lower()] = (key, value)
        # Only the encodings this module can decode (and limit) are offered, whatever the session says.
        encoding = "gzip, deflate" if self.config.accept_compression else "identity"
        merged["accept-encoding"] = ("Accept-Encoding", encoding)
        return list(merged.values())

    def _resolve_pool(self) -> Any:
        with self._lock:
            if self._pool is not None and self._pool.pool is not None:
                return self._pool
            if self._closed:
                raise errors.ConnectError(f"the client for {self.base_url} is closed")
            adapter = self._adapter
            if self._ssl_context is not None and self.scheme == "https":
                pool = adapter.poolmanager.connection_from_host(
                    self._host(), self._port(), "https", pool_kwargs=_ssl_context_pool_kwargs(self._ssl_context)
                )
            else:
                prepared = requests.Request("GET", self.base_url + "/").prepare()
                pool = adapter.get_connection_with_tls_context(prepared, self._verify, None, self._cert)
                adapter.cert_verify(pool, prepared.url, self._verify, self._cert)
            self._pool = pool
            return pool

    def _host_header(self) -> str:
        host = self._host()
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = urlsplit(self.base_url).port
        default = 443 if self.scheme == "https" else 80
        return host if port in (None, default) else f"{host}:{port}"

    def _host(self) -> str:
        host = urlsplit(self.base_url).hostname
        assert host is not None
        return host

    def _port(self) -> int:
        port = urlsplit(self.base_url).port
        return port if port is not None else (443 if self.scheme == "https" else 80)

    def close(self) -> None:
        """Close pooled connections (and the session when the transport created it)."""
        with self._lock:
            self._closed = True
            self._pool = None
        if self._owns_session:
            self.session.close()

    # -- the request --------------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_headers: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Any = None,
        retryable: bool = True,
        retry_statuses: bool = True,
        raise_for_status: bool = True,
        model_name: str | None = None,
        request_id: str | None = None,
    ) -> HTTPResponse:
        """Send one logical request (with retries) and return the complete reply.

        Args:
            method: HTTP method.
            path: Path relative to the base URL (starting with ``/``).
            body: The request body, built once and resent as is on every attempt.
            content_headers: Headers describing the body (Content-Type, Inference-Header-Content-Length).
            headers: Per-call headers; they override the client's headers (the caller's dict is not changed).
            timeout: Per-call timeout (a Timeout, seconds, or (connect, read)); None uses the config's.
            retryable: Whether a request that may have reached the server may be sent again (False for
                sequence requests). Connection failures before anything was sent are retried regardless.
            retry_statuses: Whether retryable statuses (429, 5xx) are retried (False for health checks,
                where the status is the answer).
            raise_for_status: Map an error status to an inferkit error (else return the reply).
            model_name: For error messages.
            request_id: For error messages.
        """
        config = self.config
        policy: RetryPolicy = config.retry_policy
        tmo = config.timeouts if timeout is None else Timeout.coerce(timeout)
        target = self.base_path + path
        send_body = body
        if send_body is not None and config.compression is not None and len(send_body) >= config.compression_threshold:
            send_body = _compress(send_body, config.compression)
            encoding: str | None = config.compression
        else:
            encoding = None
        extra, drop = self._extra_headers(send_body, content_headers, headers, method, encoding)
        head = self._head(method, target, extra, drop) if self.direct else b""
        start = time.monotonic()
        attempt = 0
        stale_retry_used = False
        fresh = False
        deadline = policy.deadline
        while True:
            attempt += 1
            if deadline is None:
                budget = self._default_budget if timeout is None else _Budget(tmo, None)
            else:
                budget = _Budget(tmo, policy.remaining(time.monotonic() - start))
            t0 = time.perf_counter() if self._verbose else 0.0
            try:
                if self.direct:
                    resp = self._direct_attempt(method, head, send_body, budget, fresh)
                else:
                    resp = self._session_attempt(method, target, send_body, self._items(extra, drop), budget)
            except _AttemptError as failure:
                fresh = False
                kind = failure.kind
                if self._verbose:
                    logger.info("%s %s%s failed (%s: %s)", method, self._origin, target, kind, failure.exc)
                if kind == "stale" and retryable and not stale_retry_used:
                    # The server closed an idle keep-alive connection: resend once at once on a new connection;
                    # it is not a failure of the server, so it costs no retry from the policy.
                    stale_retry_used = True
                    fresh = True
                    attempt -= 1
                    continue
                if kind in ("tls", "pool"):
                    may_retry = False
                elif kind in ("connect", "connect_timeout"):
                    may_retry = True  # nothing reached the server
                elif kind in ("read_timeout", "write_timeout"):
                    may_retry = retryable and policy.retry_on_timeout
                else:  # dropped, stale (second time)
                    may_retry = retryable
                if budget.capped and kind.endswith("timeout"):
                    error: errors.InferkitError = errors.DeadlineExceeded(
                        f"{method} {self.base_url}{path}: the overall deadline of {policy.deadline} s ran out "
                        f"during attempt {attempt}",
                        model_name=model_name,
                        request_id=request_id,
                        attempts=attempt,
                    )
                    raise error from failure.exc
                wait = policy.delay(attempt, elapsed=time.monotonic() - start) if may_retry else None
                if wait is None:
                    raise self._map_failure(failure, method, path, attempt, model_name, request_id) from failure.exc
                time.sleep(wait)
                continue
            except _TooLarge as big:
                raise errors.ResponseTooLargeError(
                    f"{method} {self.base_url}{path}: the reply is larger than max_response_size={big.limit} bytes"
                    + (" after decompression" if big.compressed else "")
                    + "; reading stopped at the limit (raise RESTConfig.max_response_size if this is expected)",
                    model_name=model_name,
                    request_id=request_id,
                    attempts=attempt,
                ) from None
            fresh = False
            resp.attempts = attempt
            status = resp.status
            if self._verbose:
                self._log(method, target, self._items(extra, drop), send_body, resp, t0)
            if status < 400:
                return resp
            retry_after = parse_retry_after(resp.headers)
            if retry_statuses and retryable and policy.is_retryable_status(status):
                wait = policy.delay(attempt, retry_after=retry_after, elapsed=time.monotonic() - start)
                if wait is not None:
                    time.sleep(wait)
                    continue
            if not raise_for_status:
                return resp
            message = rest_v2.decode_error_body(resp.body, default=f"HTTP {status}")
            raise errors.error_for_http_status(
                status,
                message,
                retry_after=retry_after,
                model_name=model_name,
                request_id=request_id,
                attempts=attempt,
            )

    def _extra_headers(
        self,
        body: bytes | None,
        content_headers: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        method: str,
        encoding: str | None,
    ) -> tuple[list[tuple[str, str]], frozenset[str]]:
        """The per-request headers, and which client-wide headers the caller's per-call headers replace."""
        override: dict[str, tuple[str, str]] = {}
        if headers:
            for key, value in headers.items():
                _check_header(key, value)
                override[key.lower()] = (key, value)
            override.pop("content-length", None)  # framing is this module's job
            override.pop("content-encoding", None)
        extra: list[tuple[str, str]] = []
        if content_headers:
            if override:
                extra.extend((k, v) for k, v in content_headers.items() if k.lower() not in override)
            else:
                extra.extend(content_headers.items())
        if body is not None or method == "POST":
            extra.append(("Content-Length", str(len(body) if body is not None else 0)))
        if encoding is not None:
            extra.append(("Content-Encoding", encoding))
        if not override:
            return extra, frozenset()
        extra.extend(override.values())
        return extra, frozenset(override) & self._const_lower

    def _items(self, extra: list[tuple[str, str]], drop: frozenset[str]) -> list[tuple[str, str]]:
        if drop:
            return [kv for kv in self._const_headers if kv[0].lower() not in drop] + extra
        return self._const_headers + extra

    def _head(self, method: str, target: str, extra: list[tuple[str, str]], drop: frozenset[str]) -> bytes:
        """The request line and header block as sent on the wire (built once per call, reused by retries)."""
        if drop:
            block = b"".join(line for key, line in self._const_lines if key not in drop)
            host = b"" if "host" in drop else self._host_line
        else:
            block = self._const_block
            host = self._host_line
        lines = [f"{method} {self._target_prefix}{target} HTTP/1.1\r\n".encode("latin-1"), host, block]
        for key, value in extra:
            lines.append(f"{key}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        return b"".join(lines)

    # -- direct path: the adapter's urllib3 pool, driven with http.client primitives ------------------------------
    def _direct_attempt(
        self,
        method: str,
        head: bytes,
        body: bytes | None,
        budget: _Budget,
        fresh: bool,
    ) -> HTTPResponse:
        pool = self._pool
        if pool is None or pool.pool is None:
            pool = self._resolve_pool()
        try:
            conn = pool._get_conn(timeout=budget.pool)
        except EmptyPoolError as exc:
            raise _AttemptError("pool", exc, timeout=budget.pool) from None
        except ClosedPoolError:
            # The session's PoolManager evicted (and closed) our pool: take the current one.
            self._pool = None
            pool = self._resolve_pool()
            try:
                conn = pool._get_conn(timeout=budget.pool)
            except (EmptyPoolError, ClosedPoolError) as exc:
                raise _AttemptError("pool", exc, timeout=budget.pool) from None
        reused = conn.sock is not None
        keep = False
        try:
            if fresh and reused:
                conn.close()
                reused = False
            if conn.sock is None:
                _connect(conn, budget.connect)
            sock = conn.sock
            got_status = False
            sent = False
            try:
                sock.settimeout(budget.write)
                # The request is written here rather than through http.client's putrequest/putheader: the
                # constant header block is prebuilt bytes, and a small body leaves in the same segment.
                if body is None:
                    sock.sendall(head)
                elif len(body) <= _COALESCE_LIMIT:
                    sock.sendall(head + body)
                else:
                    sock.sendall(head)
                    sock.sendall(body)
                sent = True
                if budget.read != budget.write:
                    sock.settimeout(budget.read)
                raw = http.client.HTTPResponse(sock, method=method)
                try:
                    raw.begin()
                    got_status = True
                    status = raw.status
                    limit = self.config.max_response_size if status < 400 else _ERROR_BODY_LIMIT
                    data, complete = _read_body(
                        raw, limit, raw.getheader("Content-Encoding"), allow_truncate=status >= 400
                    )
                finally:
                    raw.close()
            except (socket.timeout, TimeoutError) as exc:
                if sent:
                    raise _AttemptError("read_timeout", exc, timeout=budget.read) from None
                raise _AttemptError("write_timeout", exc, timeout=budget.write) from None
            except ssl.SSLError as exc:
                raise _AttemptError("tls" if not got_status else "dropped", exc) from None
            except _DROPPED as exc:
                raise _AttemptError("stale" if reused and not got_status else "dropped", exc) from None
            except (http.client.HTTPException, OSError) as exc:
                raise _AttemptError("dropped", exc) from None
            keep = complete and not raw.will_close
            return HTTPResponse(status, raw.msg, data)
        finally:
            if not keep:
                conn.close()
            # Always exactly one put per get, so the blocking pool never loses a slot.
            pool._put_conn(conn)

    # -- session path: requests does the request, inferkit the retries and mapping -----------------------------
    def _session_attempt(
        self,
        method: str,
        target: str,
        body: bytes | None,
        items: Sequence[tuple[str, str]],
        budget: _Budget,
    ) -> HTTPResponse:
        url = self._origin + target
        headers = dict(items)
        try:
            resp = self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=(budget.connect, budget.read),
                auth=self._requests_auth,
                **self._send_kwargs,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise _AttemptError("connect_timeout", exc, timeout=budget.connect) from None
        except requests.exceptions.ReadTimeout as exc:
            raise _AttemptError("read_timeout", exc, timeout=budget.read) from None
        except requests.exceptions.SSLError as exc:
            raise _AttemptError("tls", exc) from None
        except requests.exceptions.ProxyError as exc:
            raise _AttemptError("connect", exc) from None
        except requests.exceptions.ConnectionError as exc:
            inner = exc.args[0] if exc.args else None
            if isinstance(inner, EmptyPoolError) or "Pool is empty" in str(exc):
                raise _AttemptError("pool", exc, timeout=budget.pool) from None
            reason = getattr(inner, "reason", inner)
            if isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(
                inner, urllib3.exceptions.NewConnectionError
            ):
                raise _AttemptError("connect", exc) from None
            raise _AttemptError("dropped", exc) from None
        except requests.exceptions.RequestException as exc:
            raise _AttemptError("dropped", exc) from None
        try:
            raw = resp.raw
            limit = self.config.max_response_size if resp.status_code < 400 else _ERROR_BODY_LIMIT
            data = _read_urllib3_body(raw, limit, resp.headers.get("Content-Encoding"), resp.status_code >= 400)
        except urllib3.exceptions.ReadTimeoutError as exc:
            resp.close()
            raise _AttemptError("read_timeout", exc, timeout=budget.read) from None
        except _TooLarge:
            resp.close()
            raise
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
            resp.close()
            raise _AttemptError("dropped", exc) from None
        resp.close()
        return HTTPResponse(resp.status_code, resp.headers, data)

    # -- errors and logging --------------------------------------------------------------------------------------
    def _map_failure(
        self,
        failure: _AttemptError,
        method: str,
        path: str,
        attempts: int,
        model_name: str | None,
        request_id: str | None,
    ) -> errors.InferkitError:
        where = f"{method} {self.base_url}{path}"
        ctx: dict[str, Any] = {"model_name": model_name, "request_id": request_id, "attempts": attempts}
        kind = failure.kind
        exc = failure.exc
        if kind == "pool":
            return errors.PoolTimeout(
                f"{where}: no pooled connection became free within {failure.timeout} s (all "
                f"{self.config.pool_maxsize} connections busy); raise RESTConfig.pool_maxsize or Timeout.pool, or "
                "lower the concurrency",
                **ctx,
            )
        if kind == "connect_timeout":
            return errors.ConnectTimeout(
                f"{where}: could not connect within {failure.timeout} s (Timeout.connect); is the server "
                "reachable from here?",
                **ctx,
            )
        if kind == "read_timeout":
            return errors.ReadTimeout(
                f"{where}: no reply within the read timeout of {failure.timeout} s (the model may need longer: "
                "raise Timeout.read)",
                **ctx,
            )
        if kind == "write_timeout":
            return errors.WriteTimeout(f"{where}: sending the request body timed out (Timeout.write)", **ctx)
        if kind == "tls":
            return errors.TLSError(
                f"{where}: TLS failed: {_describe(exc)} (check RESTConfig.verify (CA bundle) and, for mTLS, "
                "RESTConfig.cert)",
                **ctx,
            )
        if kind == "connect":
            return errors.ConnectError(f"{where}: could not connect: {_describe(exc)}", **ctx)
        return errors.ConnectError(
            f"{where}: the connection was closed before the reply was complete: {_describe(exc)}", **ctx
        )

    def _log(
        self,
        method: str,
        target: str,
        items: Sequence[tuple[str, str]],
        body: bytes | None,
        resp: HTTPResponse,
        t0: float,
    ) -> None:
        ms = (time.perf_counter() - t0) * 1000.0
        logger.info(
            "%s %s%s -> %d (sent %d B, received %d B, %.2f ms, attempt %d) headers=%s",
            method,
            self._origin,
            target,
            resp.status,
            len(body) if body is not None else 0,
            len(resp.body),
            ms,
            resp.attempts,
            redact(items),
        )


def _connect(conn: Any, timeout: float | None) -> None:
    """Open (and for HTTPS, handshake) a pooled urllib3 connection, classifying the failure."""
    conn.timeout = timeout
    try:
        conn.connect()
    except (socket.timeout, TimeoutError) as exc:
        raise _AttemptError("connect_timeout", exc, timeout=timeout) from None
    except ssl.SSLError as exc:
        raise _AttemptError("tls", exc) from None
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        cause = exc.__cause__ if isinstance(exc, urllib3.exceptions.HTTPError) else exc
        if isinstance(cause, ssl.SSLError) or isinstance(exc, urllib3.exceptions.SSLError):
            raise _AttemptError("tls", exc) from None
        # NewConnectionError subclasses ConnectTimeoutError (urllib3 keeps that for compatibility): refused
        # and DNS failures are connection errors, only a real timeout is a ConnectTimeout.
        if isinstance(exc, urllib3.exceptions.NewConnectionError) and not isinstance(cause, socket.timeout):
            raise _AttemptError("connect", exc) from None
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError) or isinstance(cause, socket.timeout):
            raise _AttemptError("connect_timeout", exc, timeout=timeout) from None
        raise _AttemptError("connect", exc) from None


_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_BAD = re.compile(r"[\r\n\x00]")


def _check_header(key: Any, value: Any) -> None:
    if not isinstance(key, str) or not isinstance(value, str):
        raise errors.EncodeError(f"headers must map str to str; {key!r}: {value!r} is not")
    if not _HEADER_NAME.match(key) or _HEADER_VALUE_BAD.search(value):
        raise errors.EncodeError(
            f"header {key!r} is not a valid HTTP header (names are tokens; values cannot contain CR, LF or NUL)"
        )


def _describe(exc: BaseException) -> str:
    seen = exc
    # requests and urllib3 wrap the interesting OS / SSL error a few levels down.
    for _ in range(4):
        inner = getattr(seen, "reason", None) or (seen.args[0] if seen.args else None)
        if isinstance(inner, BaseException) and inner is not seen:
            seen = inner
        else:
            break
    text = str(seen) or type(seen).__name__
    return f"{type(seen).__name__}: {text}"[:500]


def _read_body(
    raw: http.client.HTTPResponse, limit: int, encoding: str | None, *, allow_truncate: bool
) -> tuple[bytes, bool]:
    """Read the whole body of an http.client reply into one bytes object, enforcing ``limit`` while reading.

    Returns the body and whether it was read to its end (only then may the connection be reused). With
    ``allow_truncate`` (error replies) a body past the limit is cut instead of raising.
    """
    decoder = _decoder_for(encoding)
    length = raw.length
    if decoder is None:
        if length is not None:
            if length > limit:
                if allow_truncate:
                    return raw.read(limit), False
                raise _TooLarge(length, limit, False)
            return raw.read(), True  # one allocation of exactly Content-Length bytes
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = raw.read(_READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                if allow_truncate:
                    return b"".join(parts), False
                raise _TooLarge(total, limit, False)
            parts.append(chunk)
        return (parts[0] if len(parts) == 1 else b"".join(parts)), True
    out: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = raw.read(_READ_CHUNK)
            if not chunk:
                break
            total = decoder.decompress(chunk, limit, out, total)
        decoder.flush(limit, out, total)
    except zlib.error as exc:
        raise errors.DecodeError(f"the reply's {encoding} body is corrupt: {exc}") from exc
    except _TooLarge:
        if allow_truncate:
            return b"".join(out), False
        raise
    return (out[0] if len(out) == 1 else b"".join(out)), True


def _read_urllib3_body(raw: Any, limit: int, encoding: str | None, allow_truncate: bool) -> bytes:
    decoder = _decoder_for(encoding)
    out: list[bytes] = []
    total = 0
    while True:
        chunk = raw.read(_READ_CHUNK, decode_content=False)
        if not chunk:
            break
        if decoder is None:
            total += len(chunk)
            if total > limit:
                if allow_truncate:
                    break
                raise _TooLarge(total, limit, False)
            out.append(chunk)
        else:
            try:
                total = decoder.decompress(chunk, limit, out, total)
            except zlib.error as exc:
                raise errors.DecodeError(f"the reply's {encoding} body is corrupt: {exc}") from exc
    if decoder is not None:
        decoder.flush(limit, out, total)
    return out[0] if len(out) == 1 else b"".join(out)


def _decoder_for(encoding: str | None) -> _Decompressor | None:
    if encoding is None:
        return None
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return _Decompressor("gzip")
    if enc == "deflate":
        return _Decompressor("deflate")
    raise errors.DecodeError(
        f"the server replied with Content-Encoding {encoding!r}, which inferkit does not decode (it only offers "
        "gzip and deflate)"
    )
