"""The async HTTP transport under :class:`inferkit.aio.InferenceRESTClient` (aiohttp).

Owns: the ``aiohttp.ClientSession`` and its ``TCPConnector`` (pool size, keep-alive, TLS), made lazily in the
running event loop and rebuilt when the client is used from another loop (a client made at import time, or reused
across ``asyncio.run`` calls); the pool-acquire timeout; one attempt of a request; and THE error boundary of the
async REST client: every aiohttp / asyncio / ssl / OS exception of an attempt becomes a failure kind of
:mod:`inferkit._retry`, and from there an inferkit error. The retry loop, headers, compression, body size limit and
reply interpretation are the shared sans-IO pieces (:func:`inferkit._retry.rest_exchange`,
:mod:`inferkit.codec.http_wire`, :mod:`inferkit.codec.rest_calls`), the same ones the sync transport drives.
Must not import: requests, urllib3, grpc, inferkit.rest_client, inferkit._transport, inferkit.grpc_client.

How ``Timeout`` maps onto aiohttp:

* ``connect`` -> ``ClientTimeout.sock_connect`` (TCP connect of a new connection; TLS handshake included).
* ``read`` -> ``ClientTimeout.sock_read`` (the longest wait for any chunk of the reply, as in the sync client).
* ``pool`` -> the wait for a free connection slot. aiohttp has no separate pool timeout (its ``connect`` timeout
  covers waiting for the pool *and* connecting), so the client keeps its own per-loop semaphore of
  ``max_connections`` slots in front of the connector (whose limit is the same) and bounds the wait with
  ``asyncio.wait_for``; running out is a :class:`~inferkit.errors.PoolTimeout`, as in the sync client.
* ``write`` -> not enforced separately: aiohttp writes the body without a timeout of its own. The overall
  ``RetryPolicy.deadline`` (``ClientTimeout.total`` of each attempt, capped to what is left) bounds it.
* ``max_keepalive`` -> not applied: aiohttp has no limit on idle connections, so up to ``max_connections`` stay
  open while idle, each closed after ``keepalive_expiry`` (``TCPConnector(keepalive_timeout=...)``).
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import ssl
import urllib.request
from typing import Any, Mapping, NamedTuple

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
from inferkit.aio._driver import drive
from inferkit.codec.http_wire import (
    READ_CHUNK,
    BodyReader,
    BodyTooLarge,
    call_headers,
    compress_body,
    config_headers,
    parse_base_url,
    tls_without_client_cert,
)
from inferkit.codec.rest_calls import Reply, RestCall
from inferkit.codec.rest_v2 import BodyParts
from inferkit.config import RESTConfig, Timeout

__all__ = ["AsyncTransport", "load_aiohttp"]

_YEAR = 365 * 24 * 3600.0  # seconds

logger = logging.getLogger("inferkit")

_INSTALL_HINT = "the async REST client needs aiohttp: pip install 'inferkit[aio]'"
_aiohttp: Any = None
_connector_cls: Any = None


class _ConnUse:
    """Whether the current attempt got a pooled keep-alive connection (set by :func:`_tracking_connector`)."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


# aiohttp does not say whether a request ran on a reused connection; the attempt's task carries this holder down to
# the connector (connect() runs in the same task, so in the same context).
_CONN_USE: contextvars.ContextVar[_ConnUse | None] = contextvars.ContextVar("inferkit_conn_use", default=None)


#: Request URLs kept parsed per transport (one per path: a model's infer, health, metadata...).
_URL_CACHE_SIZE = 256


def _yarl() -> Any:
    import yarl  # noqa: PLC0415 - aiohttp's own URL type (an aiohttp dependency), imported with it

    return yarl


def _tracking_connector(aiohttp: Any) -> Any:
    """A ``TCPConnector`` subclass that records in :data:`_CONN_USE` whether it handed out a used connection."""
    global _connector_cls
    if _connector_cls is None:

        class TrackingConnector(aiohttp.TCPConnector):  # type: ignore[misc]
            async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
                conn = await super().connect(req, traces, timeout)
                use = _CONN_USE.get()
                proto = conn.protocol
                if use is not None and proto is not None:
                    use.reused = getattr(proto, "_inferkit_used", False)
                    proto._inferkit_used = True  # noqa: SLF001 - our own mark on aiohttp's protocol object
                return conn

        _connector_cls = TrackingConnector
    return _connector_cls


def load_aiohttp() -> Any:
    """Import aiohttp on first use; an ImportError naming the extra when it is missing."""
    global _aiohttp
    if _aiohttp is None:
        try:
            import aiohttp  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        _aiohttp = aiohttp
    return _aiohttp


def _ssl_setting(config: RESTConfig) -> Any:
    """``ssl=`` for aiohttp from RESTConfig.verify / cert: False, a default context, or an SSLContext."""
    verify, cert = config.verify, config.cert
    if verify is False and cert is None:
        return False
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
    elif isinstance(verify, str):
        ctx = ssl.create_default_context(cafile=verify)
    elif cert is None:
        return True  # aiohttp's default verified context
    else:
        ctx = ssl.create_default_context()
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        # The client certificate for mutual TLS goes into this client's context once.
        if isinstance(cert, tuple):
            ctx.load_cert_chain(cert[0], cert[1])
        else:
            ctx.load_cert_chain(cert)
    return ctx


class _Prepared(NamedTuple):
    """A request built by :meth:`AsyncTransport.prepare_call`: what every attempt sends, and its retry state."""

    call: RestCall
    body: bytes | None  # as sent (compressed when configured)
    items: list[tuple[str, str]]  # headers
    url: Any  # yarl.URL
    loop: _LoopState
    timeout: Timeout
    default: Budget | None  # the precomputed budget of the config's timeout, when the call uses it
    state: RetryState
    budget: Budget  # the first attempt's


class _LoopState:
    """What is bound to one event loop: the session (with its connector) and the pool semaphore."""

    __slots__ = ("loop", "session", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop, session: Any, slots: asyncio.Semaphore) -> None:
        self.loop = loop
        self.session = session
        self.slots = slots


class AsyncTransport:
    """Sends requests to one server (base URL) with pooling, retries, timeouts and error mapping.

    Not bound to an event loop when constructed. Within one loop it is safe for any number of concurrent tasks.
    """

    def __init__(self, url: str, config: RESTConfig) -> None:
        self.aiohttp = load_aiohttp()
        parsed = parse_base_url(url)
        self.config = config
        self.scheme = parsed.scheme
        self.base_path = parsed.base_path
        self.base_url = parsed.base_url
        self._origin = parsed.origin
        if config.auth is not None and not config.static_auth_headers():
            raise ValueError(
                "RESTConfig.auth for the async client must be a BearerToken, APIKey, BasicAuth or a (user, password) "
                f"tuple; {type(config.auth).__name__} (a requests AuthBase) only works with the sync client"
            )
        transport = config.transport
        if transport is not None and not callable(transport):
            raise ValueError(
                "RESTConfig.transport for the async client must be a zero-argument callable returning an "
                f"aiohttp.BaseConnector (it is called in each event loop), got {type(transport).__name__}"
            )
        if config.verify is False:
            logger.warning(
                "inferkit: TLS certificate verification is disabled for %s (RESTConfig.verify=False)", parsed.base_url
            )
        self._ssl = _ssl_setting(config)
        self._tls_no_cert = tls_without_client_cert(self.scheme, config)
        self._host = parsed.host
        self._proxy = self._select_proxy(config.proxies)
        self._const_headers = config_headers(config, (), parsed.auth)
        self._const_lower = frozenset(k.lower() for k, _ in self._const_headers)
        self._default_budget = Budget(config.timeouts, None)
        self._default_timeout = self.aiohttp.ClientTimeout(
            total=None, sock_connect=config.timeouts.connect, sock_read=config.timeouts.read, connect=None
        )
        self._state: _LoopState | None = None
        self._closed = False
        self._verbose = config.verbose
        self._yarl_url: Any = _yarl().URL
        self._urls: dict[str, Any] = {}

    def _select_proxy(self, proxies: Mapping[str, str] | None) -> str | None:
        """The proxy for this server, decided once: RESTConfig.proxies, else the environment (HTTP(S)_PROXY,
        NO_PROXY) as requests reads it; aiohttp's own ``trust_env`` would look it up in a thread on every request."""
        if proxies is None:
            env = urllib.request.getproxies()
            if not env or urllib.request.proxy_bypass(self._host):
                return None
            proxies = env
        return proxies.get(self.scheme) or proxies.get("all")

    # -- the per-loop session ---------------------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop and not state.session.closed:
            return state
        if self._closed:
            raise errors.client_closed_error(self.base_url)
        if state is not None:
            self._abandon(state)
        aiohttp = self.aiohttp
        config = self.config
        if config.transport is not None:
            connector = config.transport()
        else:
            connector = _tracking_connector(aiohttp)(
                limit=config.connection_limit,
                limit_per_host=config.connection_limit,
                ssl=self._ssl,
                # None: keep idle connections for good. aiohttp 3.10 takes no None here: a year is the same.
                keepalive_timeout=_YEAR if config.keepalive_expiry is None else config.keepalive_expiry,
            )
        session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=config.transport is None,
            auto_decompress=False,  # BodyReader decodes, so the size limit holds after decompression too
            trust_env=False,  # the environment's proxy settings are read once, in _select_proxy
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        state = _LoopState(loop, session, asyncio.Semaphore(config.connection_limit))
        self._state = state
        return state

    def _abandon(self, state: _LoopState) -> None:
        """Let go of a session made in another (possibly closed) loop without leaking its sockets."""
        session = state.session
        if session.closed:
            return
        old = state.loop
        if not old.is_closed() and old.is_running():
            # Still running in another thread: close it there.
            asyncio.run_coroutine_threadsafe(session.close(), old)
            return
        # The loop is gone (asyncio.run returned): nothing can run the transports' close callbacks any more, so the
        # pooled sockets are closed here, directly.
        connector = session.connector
        if connector is not None:
            _close_sockets(connector)
        session._connector = None  # noqa: SLF001 - marks the session closed (no "unclosed session" warning)

    def connector_stats(self) -> dict[str, int]:
        """Connections of the current loop's pool: ``{"acquired": n, "idle": n, "limit": n}`` (for tests)."""
        state = self._state
        if state is None or state.session.closed:
            return {"acquired": 0, "idle": 0, "limit": self.config.connection_limit}
        conn = state.session.connector
        idle = sum(len(v) for v in conn._conns.values())  # noqa: SLF001 - aiohttp exposes no public counters
        return {"acquired": len(conn._acquired), "idle": idle, "limit": conn.limit}  # noqa: SLF001

    async def close(self) -> None:
        """Close the session of the current loop (and let go of one made in another loop)."""
        self._closed = True
        state, self._state = self._state, None
        if state is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if state.loop is running:
            await state.session.close()
        else:
            self._abandon(state)

    # -- the request --------------------------------------------------------------------------------------------
    async def send(self, call: RestCall, headers: Mapping[str, str] | None, timeout: Any) -> Reply:
        """Send a :class:`~inferkit.codec.rest_calls.RestCall` with retries; the complete reply."""
        return await drive(self, self.prepare_call(call, headers, timeout))  # type: ignore[no-any-return]

    def prepare_call(self, call: RestCall, headers: Mapping[str, str] | None, timeout: Any) -> _Prepared:
        """One request ready to send: its bytes, built once, and its retry state."""
        config = self.config
        # aiohttp sends one buffer: a large binary body kept in parts is joined here, once for all attempts.
        body = call.body.join() if isinstance(call.body, BodyParts) else call.body
        send_body, encoding = compress_body(body, config)
        if config.propagate_trace:
            headers = with_trace(headers)
        extra, drop = call_headers(call.method, send_body, call.content_headers, headers, encoding, self._const_lower)
        if drop:
            items = [kv for kv in self._const_headers if kv[0].lower() not in drop] + extra
        else:
            items = self._const_headers + extra
        tmo = config.timeouts if timeout is None else Timeout.coerce(timeout)
        state = RetryState(
            config.retry_policy, retryable=call.retryable, retry_statuses=call.retry_statuses, total=tmo.total
        )
        default = self._default_budget if timeout is None else None
        budget = state.begin(tmo, default)
        return _Prepared(call, send_body, items, self._url(call.path), self._loop_state(), tmo, default, state, budget)

    # The driver's interface (inferkit.aio._driver): one attempt, and the retry loop after the first.
    async def attempt(self, prep: _Prepared, todo: Attempt | None) -> Any:
        """Send ``prep`` once; the reply, or the failure (:class:`AttemptFailed`, ``BodyTooLarge``) it met."""
        budget = prep.budget if todo is None else todo.budget
        try:
            return await self._attempt(prep.loop, prep.call.method, prep.url, prep.body, prep.items, budget)
        except (AttemptFailed, BodyTooLarge) as failure:
            return failure

    def settled(self, prep: _Prepared, outcome: Any) -> bool:
        """A first attempt answered 2xx needs no retry loop (unless every attempt is logged)."""
        return type(outcome) is Reply and outcome.status < 300 and not self._verbose

    def result(self, prep: _Prepared, outcome: Reply) -> Reply:
        return outcome

    def retries(self, prep: _Prepared, first: Any) -> Any:
        call = prep.call
        url = self._origin + self.base_path + call.path
        log = self._logger(call.method, url, prep.items, prep.body) if self._verbose else None
        return rest_exchange(prep, first, base_url=self.base_url, max_connections=self.config.connection_limit, log=log)

    def _url(self, path: str) -> Any:
        """The request URL as a ``yarl.URL``, parsed once per path: aiohttp would parse a string on every request,
        and a reused URL object also keeps the host/port values aiohttp derives from it."""
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()  # many distinct paths (model names): start over rather than grow without bound
            url = self._urls[path] = self._yarl_url(self._origin + self.base_path + path)
        return url

    async def _attempt(
        self,
        state: _LoopState,
        method: str,
        url: Any,
        body: bytes | None,
        items: list[tuple[str, str]],
        budget: Budget,
    ) -> Reply:
        aiohttp = self.aiohttp
        slots = state.slots
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), budget.pool)
            except asyncio.TimeoutError as exc:
                raise AttemptFailed("pool", exc, timeout=budget.pool) from None
        else:
            await slots.acquire()
        try:
            if budget is self._default_budget:
                timeout = self._default_timeout
            else:
                timeout = aiohttp.ClientTimeout(
                    total=budget.remaining, sock_connect=budget.connect, sock_read=budget.read, connect=None
                )
            got_status = False
            resp = None
            use = _ConnUse()
            token = _CONN_USE.set(use)
            try:
                resp = await state.session.request(
                    method,
                    url,
                    data=body,
                    headers=items,
                    timeout=timeout,
                    proxy=self._proxy,
                    allow_redirects=False,
                )
                got_status = True
                status = resp.status
                reader = BodyReader.for_reply(
                    status, resp.headers.get("Content-Encoding"), self.config.max_response_size
                )
                content = resp.content
                length = resp.content_length
                if reader.plain and length is not None:
                    wanted = reader.expect(length)  # raises past the limit; error bodies are cut there
                    data = await content.readexactly(wanted) if wanted else b""
                else:
                    while True:
                        chunk = await content.read(READ_CHUNK)
                        if not chunk or not reader.feed(chunk):
                            break
                    data = reader.finish()
                if reader.complete:
                    resp.release()
                else:
                    resp.close()
                return Reply(status, resp.headers, data)
            except BaseException as exc:
                if resp is not None:
                    resp.close()  # an unfinished reply never goes back to the pool (also on cancellation)
                if not isinstance(exc, Exception) or isinstance(exc, (BodyTooLarge, errors.InferkitError)):
                    raise  # cancellation, interpreter exit, and what is already ours
                raise _classify(aiohttp, exc, budget, got_status, use.reused, self._tls_no_cert) from None
            finally:
                _CONN_USE.reset(token)
        finally:
            slots.release()

    def _logger(self, method: str, url: str, items: list[tuple[str, str]], body: bytes | None) -> Any:
        return attempt_logger(method, url, items, body)


def _close_sockets(connector: Any) -> None:
    """Close the sockets of a connector whose event loop is closed (aiohttp would need that loop to do it)."""
    try:
        pooled = [proto for conns in connector._conns.values() for proto, _ in conns]  # noqa: SLF001
        pooled += list(connector._acquired)  # noqa: SLF001
        connector._conns.clear()  # noqa: SLF001
        connector._acquired.clear()  # noqa: SLF001
        connector._closed = True  # noqa: SLF001
    except AttributeError:  # a custom connector: nothing more to do
        return
    for proto in pooled:
        transport: Any = getattr(proto, "transport", None)
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            sock.close()
            transport._sock = None  # noqa: SLF001 - the transport is dead with its loop; do not warn about it


_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def _classify(
    aiohttp: Any, exc: BaseException, budget: Budget, got_status: bool, reused: bool, tls_no_cert: bool
) -> AttemptFailed:
    """The failure kind of an aiohttp / asyncio exception (drives the shared retry decisions)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return AttemptFailed("connect_timeout", exc, timeout=budget.connect)
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return AttemptFailed("read_timeout", exc, timeout=budget.read)
    if isinstance(exc, aiohttp.ClientSSLError):
        return AttemptFailed("tls", exc)
    if isinstance(exc, ssl.SSLError):
        return AttemptFailed("tls" if not got_status else "dropped", exc)
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientHttpProxyError)):
        return AttemptFailed("connect", exc)
    closed = isinstance(exc, (aiohttp.ServerDisconnectedError, ConnectionResetError, BrokenPipeError)) or (
        isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS
    )
    if closed:
        return AttemptFailed(
            closed_kind(reused=reused, got_status=got_status, tls_without_client_cert=tls_no_cert), exc
        )
    # Disconnected, reset, truncated payload, a malformed reply: the connection broke after sending.
    return AttemptFailed("dropped", exc)
