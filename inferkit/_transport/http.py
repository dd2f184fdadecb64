"""The sync HTTP transport under :class:`inferkit.rest_client.InferenceRESTClient`.

Owns: the ``requests.Session`` and its mounted adapter (pool sizing, TLS, proxies, client certificates), one
attempt of a request (the hot path drives the adapter's pooled urllib3 connections directly), split timeouts
within the attempt, request compression, response decompression with ``max_response_size`` enforced while
reading, and THE error boundary: every requests / urllib3 / socket / ssl / http.client exception of an attempt
becomes a failure kind of :mod:`inferkit._retry`, and from there an inferkit error. The retry loop is
:func:`inferkit._retry.rest_exchange`, run by the one sync driver (:func:`inferkit._transport.driver.drive`);
the private urllib3 calls are all in :mod:`inferkit._transport.pool`.
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
import os
import socket
import ssl
import threading
from typing import Any, Generator, Mapping, NamedTuple, Sequence
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils
import urllib3

from inferkit import errors
from inferkit._retry import (
    Attempt,
    AttemptFailed,
    Budget,
    RetryState,
    attempt_logger,
    closed_kind,
    rest_exchange,
)
from inferkit._trace_context import with_trace
from inferkit._transport import pool as pools
from inferkit._transport import wire
from inferkit._transport.driver import CancelScope, clock, current_scope, drive
from inferkit.codec.http_wire import (
    USER_AGENT,
    BodyReader,
    BodyTooLarge,
    call_headers,
    compress_body,
    config_headers,
    parse_base_url,
    redact,
    tls_without_client_cert,
)
from inferkit.codec.rest_calls import Reply, RestCall
from inferkit.codec.rest_v2 import BodyParts
from inferkit.config import RESTConfig, Timeout

__all__ = ["SyncTransport", "HTTPResponse", "Prepared", "make_adapter", "redact", "USER_AGENT"]

logger = logging.getLogger("inferkit")

#: The reply type (shared with the async transport).
HTTPResponse = Reply

# fork(): a child inherits the parent's pooled keep-alive sockets; if both used one, each would read the other's
# replies. The generation counts forks (in the child); a transport that sees a new generation drops its pools.
_fork_generation = 0
_fork_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _fork_generation, _fork_lock
    _fork_generation += 1
    _fork_lock = threading.Lock()  # another thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def make_adapter(config: RESTConfig, ssl_context: ssl.SSLContext | None = None) -> requests.adapters.HTTPAdapter:
    """The adapter inferkit mounts on its own session, sized from ``config`` (see :func:`pool.make_adapter`)."""
    return pools.make_adapter(
        pool_connections=config.pool_connections,
        pool_maxsize=config.connection_limit,
        pool_timeout=config.timeouts.pool,
        keepalive_expiry=config.keepalive_expiry,
        max_keepalive=config.idle_limit,
        ssl_context=ssl_context,
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


class SyncTransport:
    """Sends requests to one server (base URL) with pooling, retries, timeouts and error mapping.

    Thread-safe: the pool is urllib3's (a locked queue); everything else is immutable after construction
    except the lazily resolved pool, which is published under a lock.
    """

    def __init__(self, url: str, config: RESTConfig, session: requests.Session | None = None) -> None:
        parsed = parse_base_url(url)
        self.config = config
        self.scheme = parsed.scheme
        self.base_path = parsed.base_path
        self.netloc = parsed.netloc
        self.base_url = parsed.base_url
        self._origin = parsed.origin
        self._owns_session = session is None
        self._ssl_context = _build_ssl_context(config)
        self._tls_no_cert = tls_without_client_cert(self.scheme, config)
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
        self._generation = _fork_generation

        # Settings requests would apply per call, resolved once: session defaults, environment, config.
        verify: Any = config.verify
        if isinstance(verify, ssl.SSLContext):
            verify = True
        elif verify is True and not self._owns_session:
            verify = None  # defer to the caller's session.verify / REQUESTS_CA_BUNDLE
        if config.verify is False:
            logger.warning(
                "inferkit: TLS certificate verification is disabled for %s (RESTConfig.verify=False)", parsed.base_url
            )
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
        if not self.direct and self._ssl_context is not None and not isinstance(adapter, pools.InferkitAdapter):
            raise ValueError(
                "RESTConfig.verify as an ssl.SSLContext cannot be combined with a session that needs requests' "
                f"own request path ({self.path_reason}); mount an adapter that uses the context on your session"
            )

        self._default_budget = Budget(config.timeouts, None)
        self._keepalive_expiry = config.keepalive_expiry
        self._idle_limit = config.idle_limit
        self._const_headers = config_headers(config, self._session_headers(session), parsed.auth)
        self._const_lower = frozenset(k.lower() for k, _ in self._const_headers)
        self._const_lines = [(k.lower(), f"{k}: {v}\r\n".encode("latin-1")) for k, v in self._const_headers]
        self._const_block = b"".join(line for _, line in self._const_lines)
        self._host_line = b"" if "host" in self._const_lower else f"Host: {self._host_header()}\r\n".encode("idna")
        self._target_prefix = ""

    # -- construction helpers -------------------------------------------------------------------------------
    def _session_headers(self, session: requests.Session) -> list[tuple[str, str]]:
        """Headers the caller set on their own session (requests' defaults excluded)."""
        if self._owns_session:
            return []
        defaults = requests.utils.default_headers()
        return [
            (key, str(value))
            for key, value in session.headers.items()
            # requests' own defaults (python-requests UA, */*, keep-alive) are not the caller's
            if value is not None and defaults.get(key) != value
        ]

    def _resolve_pool(self) -> Any:
        with self._lock:
            if self._pool is not None and pools.is_open(self._pool):
                return self._pool
            if self._closed:
                raise errors.client_closed_error(self.base_url)
            adapter = self._adapter
            if self._ssl_context is not None and self.scheme == "https":
                pool = adapter.poolmanager.connection_from_host(
                    self._host(), self._port(), "https", pool_kwargs=pools.ssl_context_pool_kwargs(self._ssl_context)
                )
            else:
                prepared = requests.Request("GET", self.base_url + "/").prepare()
                pool = adapter.get_connection_with_tls_context(prepared, self._verify, None, self._cert)
                adapter.cert_verify(pool, prepared.url, self._verify, self._cert)
            self._pool = pool
            return pool

    def _after_fork(self) -> None:
        """In a forked child, on first use: new, empty pools (:func:`pool.renew_after_fork`)."""
        with _fork_lock:
            if self._generation == _fork_generation:
                return
            self._lock = threading.Lock()  # may have been held by another thread of the parent at the fork
            self._pool = None
            pools.renew_after_fork(self.session)
            self._generation = _fork_generation

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

    # -- the request: prepared once, then run by the driver ------------------------------------------------------
    def send(self, call: RestCall, headers: Mapping[str, str] | None, timeout: Any) -> Reply:
        """Send a :class:`~inferkit.codec.rest_calls.RestCall` (with retries) and return the complete reply."""
        return drive(self, self.prepare_call(call, headers, timeout))  # type: ignore[no-any-return]

    def prepare_call(self, call: RestCall, headers: Mapping[str, str] | None, timeout: Any) -> Prepared:
        """One request ready to send: its bytes, built once, and its retry state."""
        if self._generation != _fork_generation:
            self._after_fork()
        config = self.config
        tmo = config.timeouts if timeout is None else Timeout.coerce(timeout)
        target = self.base_path + call.path
        body = call.body
        if isinstance(body, BodyParts) and (not self.direct or config.compression is not None):
            body = body.join()  # only the direct path writes parts; the others need one buffer (joined once)
        send_body, encoding = compress_body(body, config)  # type: ignore[arg-type]  # parts are never compressed
        if config.propagate_trace:
            headers = with_trace(headers)
        extra, drop = call_headers(call.method, send_body, call.content_headers, headers, encoding, self._const_lower)
        head = self._head(call.method, target, extra, drop) if self.direct else b""
        state = RetryState(
            config.retry_policy,
            retryable=call.retryable,
            retry_statuses=call.retry_statuses,
            clock=clock,
            total=tmo.total,
        )
        default = self._default_budget if timeout is None else None
        return Prepared(call, head, send_body, target, extra, drop, tmo, default, state, state.begin(tmo, default))

    # The driver's interface (inferkit._transport.driver): one attempt, and the retry loop after the first.
    def attempt(self, prep: Prepared, todo: Attempt | None) -> Any:
        """Send ``prep`` once; the reply, or the failure (:class:`AttemptFailed`, ``BodyTooLarge``) it met."""
        budget, fresh = (prep.budget, False) if todo is None else todo
        scope = current_scope()
        try:
            if scope is not None and scope.cancelled:
                raise self._cancelled(prep)
            if self.direct:
                return self._direct_attempt(prep.call.method, prep.head, prep.body, budget, fresh, scope)
            body = prep.body
            assert not isinstance(body, BodyParts)  # joined by prepare_call() off the direct path
            items = self._items(prep.extra, prep.drop)
            return self._session_attempt(prep.call.method, prep.target, body, items, budget)
        except (AttemptFailed, BodyTooLarge) as failure:
            if scope is not None and scope.cancelled:
                raise self._cancelled(prep) from None
            return failure

    def _cancelled(self, prep: Prepared) -> errors.CancelledError:
        call = prep.call
        return errors.CancelledError(
            f"{call.method} {self.base_url}{call.path}: cancelled by the caller (its connection was closed)",
            model_name=call.model_name,
            request_id=call.request_id,
        )

    def settled(self, prep: Prepared, outcome: Any) -> bool:
        """A first attempt answered 2xx needs no retry loop (unless every attempt is logged)."""
        return type(outcome) is Reply and outcome.status < 300 and not self._verbose

    def result(self, prep: Prepared, outcome: Reply) -> Reply:
        return outcome

    def retries(self, prep: Prepared, first: Any) -> Generator[Attempt | float, Any, Any]:
        call = prep.call
        log = self._logger(call.method, prep.target, prep.extra, prep.drop, prep.body) if self._verbose else None
        return rest_exchange(prep, first, base_url=self.base_url, max_connections=self.config.connection_limit, log=log)

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
    def _checkout(self, pool_timeout: float | None) -> tuple[Any, Any]:
        """A connection from the adapter's pool (and that pool, to put it back into), waiting up to
        ``pool_timeout`` for one to be free (``AttemptFailed("pool")`` then)."""
        pool = self._pool
        if pool is None or not pools.is_open(pool):
            pool = self._resolve_pool()
        expiry = self._keepalive_expiry
        try:
            return pool, pools.checkout(pool, pool_timeout, expiry)
        except pools.PoolExhausted as exc:
            raise AttemptFailed("pool", exc, timeout=pool_timeout) from None
        except pools.PoolClosed:
            # The session's PoolManager evicted (and closed) our pool: take the current one.
            self._pool = None
            pool = self._resolve_pool()
            try:
                return pool, pools.checkout(pool, pool_timeout, expiry)
            except (pools.PoolExhausted, pools.PoolClosed) as exc:
                raise AttemptFailed("pool", exc, timeout=pool_timeout) from None

    def _direct_attempt(
        self,
        method: str,
        head: bytes,
        body: bytes | BodyParts | None,
        budget: Budget,
        fresh: bool,
        scope: CancelScope | None = None,
    ) -> HTTPResponse:
        pool, conn = self._checkout(budget.pool)
        keep = False
        try:
            reused = wire.ready_conn(conn, fresh, budget.connect)
            sock = conn.sock
            if scope is not None and not scope.attach(sock):
                raise AttemptFailed("dropped", ConnectionAbortedError("cancelled"))
            got_status = False
            sent = False
            try:
                if (
                    wire.KERNEL_TIMEOUTS
                    and budget.remaining is None
                    and type(sock) is socket.socket
                    and (body is None or (type(body) is bytes and len(body) <= wire.COALESCE_LIMIT))
                    and pools.others_busy(pool)  # threads share the client
                ):
                    # A small call on plain TCP while other threads use the client: the socket stays in blocking
                    # mode and the kernel enforces the timeouts (SO_SNDTIMEO / SO_RCVTIMEO), so each send and
                    # receive is one system call. In timeout mode Python polls before each of them and switches the
                    # socket's blocking flag on every settimeout(): four more calls that each release the GIL, which
                    # under many threads means as many more thread switches per request (client CPU per request at
                    # 32 threads: about 15% less, benchmarks/batch_bench.py --part profile). A thread alone keeps
                    # timeout mode: there the kernel path did not measure cheaper (14-19 us slower per call in
                    # interleaved tests, within that harness's noise).
                    wire.kernel_timeouts(conn, sock, budget.write, budget.read)
                    for piece in wire.wire_pieces(head, body):  # one piece
                        sock.sendall(piece)
                    sent = True
                    source: Any = wire.KernelTimeoutSocket(sock)
                else:
                    sock.settimeout(budget.write)
                    # The request is written here rather than through http.client's putrequest/putheader: the
                    # constant header block is prebuilt bytes, and a small body leaves in the same segment.
                    for piece in wire.wire_pieces(head, body):
                        sock.sendall(piece)
                    sent = True
                    if budget.read != budget.write:
                        sock.settimeout(budget.read)
                    # Under an overall deadline every read of the reply is bounded by what is left of it, so a
                    # reply trickling in faster than the read timeout cannot outlive the deadline.
                    source = sock if budget.remaining is None else wire.DeadlineSocket(sock, budget)
                raw = http.client.HTTPResponse(source, method=method)
                try:
                    raw.begin()
                    got_status = True
                    status = raw.status
                    data, complete = wire.read_body(raw, self._reader(status, raw.getheader("Content-Encoding")))
                finally:
                    raw.close()
            except (socket.timeout, TimeoutError, BlockingIOError) as exc:  # BlockingIOError: SO_SNDTIMEO ran out
                if sent:
                    raise AttemptFailed("read_timeout", exc, timeout=budget.read) from None
                raise AttemptFailed("write_timeout", exc, timeout=budget.write) from None
            except ssl.SSLError as exc:
                if reused and not sent and isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
                    raise AttemptFailed("stale_send", exc) from None  # TLS's way of a closed idle connection
                raise AttemptFailed("tls" if not got_status else "dropped", exc) from None
            except wire.DROPPED as exc:
                kind = closed_kind(
                    reused=reused, got_status=got_status, tls_without_client_cert=self._tls_no_cert, sending=not sent
                )
                raise AttemptFailed(kind, exc) from None
            except http.client.BadStatusLine as exc:
                raise AttemptFailed("dropped", wire.NotHTTPError(str(exc.args[0]) if exc.args else "")) from exc
            except (http.client.HTTPException, OSError) as exc:
                raise AttemptFailed("dropped", exc) from None
            keep = complete and not raw.will_close
            return HTTPResponse(status, raw.msg, data)
        finally:
            if scope is not None and not scope.attach(None):
                keep = False  # cancelled meanwhile: its socket may be shut down
            if not keep:
                conn.close()
            pools.checkin(pool, conn, self._idle_limit)

    # -- session path: requests does the request, inferkit the retries and mapping -----------------------------
    def _session_attempt(
        self,
        method: str,
        target: str,
        body: bytes | None,
        items: Sequence[tuple[str, str]],
        budget: Budget,
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
        except pools.PoolExhausted as exc:  # requests lets urllib3's EmptyPoolError through unwrapped
            raise AttemptFailed("pool", exc, timeout=budget.pool) from None
        except requests.exceptions.ConnectTimeout as exc:
            raise AttemptFailed("connect_timeout", exc, timeout=budget.connect) from None
        except requests.exceptions.ReadTimeout as exc:
            raise AttemptFailed("read_timeout", exc, timeout=budget.read) from None
        except requests.exceptions.SSLError as exc:
            raise AttemptFailed("tls", exc) from None
        except requests.exceptions.ProxyError as exc:
            raise AttemptFailed("connect", exc) from None
        except requests.exceptions.ConnectionError as exc:
            inner = exc.args[0] if exc.args else None
            if isinstance(inner, pools.PoolExhausted) or "Pool is empty" in str(exc):
                raise AttemptFailed("pool", exc, timeout=budget.pool) from None
            reason = getattr(inner, "reason", inner)
            if isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(
                inner, urllib3.exceptions.NewConnectionError
            ):
                raise AttemptFailed("connect", exc) from None
            raise AttemptFailed("dropped", exc) from None
        except requests.exceptions.RequestException as exc:
            raise AttemptFailed("dropped", exc) from None
        try:
            raw = resp.raw
            data = wire.read_urllib3_body(raw, self._reader(resp.status_code, resp.headers.get("Content-Encoding")))
        except urllib3.exceptions.ReadTimeoutError as exc:
            resp.close()
            raise AttemptFailed("read_timeout", exc, timeout=budget.read) from None
        except BodyTooLarge:
            resp.close()
            raise
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
            resp.close()
            raise AttemptFailed("dropped", exc) from None
        resp.close()
        return HTTPResponse(resp.status_code, resp.headers, data)

    # -- reading and logging -------------------------------------------------------------------------------------
    def _reader(self, status: int, encoding: str | None) -> BodyReader:
        return BodyReader.for_reply(status, encoding, self.config.max_response_size)

    def _logger(
        self,
        method: str,
        target: str,
        extra: list[tuple[str, str]],
        drop: frozenset[str],
        body: bytes | BodyParts | None,
    ) -> Any:
        return attempt_logger(method, self._origin + target, self._items(extra, drop), body)


class Prepared(NamedTuple):
    """A request built by :meth:`SyncTransport.prepare_call`: what every attempt sends, and its retry state."""

    call: RestCall
    head: bytes  # request line and header block (direct path; empty otherwise)
    body: bytes | BodyParts | None  # as sent (compressed when configured)
    target: str  # path on the server (base path included)
    extra: list[tuple[str, str]]  # per-call headers (session path)
    drop: frozenset[str]  # client headers the call overrides (session path)
    timeout: Timeout
    default: Budget | None  # the precomputed budget of the config's timeout, when the call uses it
    state: RetryState
    budget: Budget  # the first attempt's
