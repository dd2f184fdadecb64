"""The one place where inferkit relies on urllib3's and requests' internals (pinned by tests/unit/test_pool_pins.py).

Owns: the ``HTTPAdapter`` inferkit mounts on its session (pool sizing, a bounded wait for a free connection,
keep-alive expiry, a caller's ``ssl.SSLContext`` carried into every pool), taking a connection out of a urllib3
pool and giving it back (with keep-alive expiry), and dropping the pools a forked child inherited.
Must not import: aiohttp, grpc, inferkit.aio, inferkit.grpc_client.

Why private calls at all. urllib3's public request API (``pool.urlopen``) costs about 50 us of CPU more per call
than driving a pooled ``HTTPConnection`` with the ``http.client`` primitives it inherits, which was measured at
15-20% of inferkit's whole per-call cost on a small infer (docs/performance.md). Driving a connection needs it out
of the pool and back: ``HTTPConnectionPool._get_conn(timeout)`` and ``_put_conn(conn)``, unchanged since urllib3
1.x. Everything that touches them, or another private attribute, is here, and a unit test asserts each assumption
so that a urllib3 or requests release that changes one fails there, not in a user's process.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import requests
import requests.adapters
import urllib3
from urllib3.exceptions import ClosedPoolError, EmptyPoolError

__all__ = [
    "InferkitAdapter",
    "make_adapter",
    "ssl_context_pool_kwargs",
    "checkout",
    "checkin",
    "others_busy",
    "renew_after_fork",
    "PoolExhausted",
    "PoolClosed",
]

#: Raised by :func:`checkout` when no connection became free in time / when the pool was closed meanwhile.
PoolExhausted = EmptyPoolError
PoolClosed = ClosedPoolError


class InferkitAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose pools wait a bounded time for a free connection and can carry an SSLContext.

    requests can only express ``verify`` as a bool or a path; a caller's SSLContext (custom ciphers, pinned CAs,
    a client certificate loaded from memory) is passed to urllib3 as the pool's ``ssl_context`` instead.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        pool_timeout: float | None = None,
        keepalive_expiry: float | None = None,
        max_keepalive: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._ssl_context = ssl_context
        self._pool_classes = _bounded_pool_classes(pool_timeout, keepalive_expiry, max_keepalive)
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
            pool_kwargs = ssl_context_pool_kwargs(self._ssl_context)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if self._ssl_context is not None and url.lower().startswith("https"):
            return  # everything is in the SSLContext
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]


class _PoolPolicy:
    """What inferkit adds to urllib3's pools on the session path: a bounded wait for a free connection (requests
    passes no ``pool_timeout``, so a blocking pool would wait forever), keep-alive expiry, and a limit on the
    idle connections kept (``max_keepalive``: one given back while that many are idle is closed)."""

    default_pool_timeout: float | None = None
    keepalive_expiry: float | None = None
    max_keepalive: int | None = None

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout if timeout is not None else self.default_pool_timeout)  # type: ignore[misc]
        _expire(conn, self.keepalive_expiry)
        return conn

    def _put_conn(self, conn: Any) -> None:
        closed = conn is not None and _idle_or_close(self, conn, self.max_keepalive)
        super()._put_conn(conn)  # type: ignore[misc]
        if closed:
            _sink(self, conn)


class _BoundedHTTPPool(_PoolPolicy, urllib3.HTTPConnectionPool):
    pass


class _BoundedHTTPSPool(_PoolPolicy, urllib3.HTTPSConnectionPool):
    pass


def _bounded_pool_classes(
    pool_timeout: float | None, keepalive_expiry: float | None, max_keepalive: int | None = None
) -> dict[str, type]:
    """Pool classes whose wait for a free connection defaults to ``pool_timeout`` instead of forever, which
    close a connection idle for longer than ``keepalive_expiry`` instead of reusing it, and which keep at most
    ``max_keepalive`` idle connections open."""
    attrs = {"default_pool_timeout": pool_timeout, "keepalive_expiry": keepalive_expiry, "max_keepalive": max_keepalive}
    return {
        "http": type("InferkitHTTPConnectionPool", (_BoundedHTTPPool,), attrs),
        "https": type("InferkitHTTPSConnectionPool", (_BoundedHTTPSPool,), attrs),
    }


def ssl_context_pool_kwargs(ctx: ssl.SSLContext) -> dict[str, Any]:
    """urllib3 pool arguments for a caller's SSLContext."""
    # cert_reqs mirrors the context so urllib3 does not overwrite its verify_mode; assert_hostname=False when the
    # caller turned hostname checking off, so urllib3 does not turn it back on by itself.
    kwargs: dict[str, Any] = {"ssl_context": ctx, "cert_reqs": ctx.verify_mode}
    if not ctx.check_hostname:
        kwargs["assert_hostname"] = False
    return kwargs


def make_adapter(
    *,
    pool_connections: int,
    pool_maxsize: int,
    pool_timeout: float | None,
    keepalive_expiry: float | None = None,
    max_keepalive: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> InferkitAdapter:
    """The adapter inferkit mounts on its own Session: pool sized from the config, blocking with a timeout.

    ``pool_block=True`` makes ``pool_maxsize`` (``RESTConfig.max_connections``) a hard limit on open connections
    per host (no "Connection pool is full" churn); ``max_keepalive`` bounds the idle connections kept; the wait for
    a free connection is bounded by ``Timeout.pool`` on every path. Retries are
    driven by inferkit, so the adapter's own urllib3 ``Retry`` is off.
    """
    return InferkitAdapter(
        ssl_context=ssl_context,
        pool_timeout=pool_timeout,
        keepalive_expiry=keepalive_expiry,
        max_keepalive=max_keepalive,
        pool_connections=pool_connections,
        pool_maxsize=pool_maxsize,
        max_retries=urllib3.Retry(0, read=False, redirect=False),
        pool_block=True,
    )


def checkout(pool: Any, timeout: float | None, keepalive_expiry: float | None = None) -> Any:
    """A connection of ``pool``, waiting up to ``timeout`` for one to be free (:data:`PoolExhausted` then;
    :data:`PoolClosed` when the pool was closed). A kept-alive connection idle for longer than
    ``keepalive_expiry`` seconds is closed first (the next use opens a new one): a server or a balancer may have
    dropped it without a word."""
    conn = pool._get_conn(timeout=timeout)
    if not isinstance(pool, _PoolPolicy):  # inferkit's own pools expire connections in _get_conn already
        _expire(conn, keepalive_expiry)
    return conn


def _expire(conn: Any, keepalive_expiry: float | None) -> None:
    """Close ``conn`` when it has been idle in its pool for longer than ``keepalive_expiry`` seconds."""
    if keepalive_expiry is not None and conn is not None and conn.sock is not None:
        idle_since = getattr(conn, "_inferkit_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > keepalive_expiry:
            conn.close()


def checkin(pool: Any, conn: Any, max_keepalive: int | None = None) -> None:
    """Give a connection back to its pool (exactly once per :func:`checkout`, so a blocking pool never loses a
    slot), noting when it became idle; closed first when ``max_keepalive`` idle connections are already open
    (the pool's own limit when it is inferkit's)."""
    if isinstance(pool, _PoolPolicy):
        pool._put_conn(conn)
        return
    # A pool of the caller's own adapter: the limit is applied here.
    closed = _idle_or_close(pool, conn, max_keepalive)
    pool._put_conn(conn)
    if closed:
        _sink(pool, conn)


def _idle_or_close(pool: Any, conn: Any, max_keepalive: int | None) -> bool:
    """Note when ``conn`` became idle, or close it (True) when ``max_keepalive`` idle connections of ``pool`` are
    already open. The closed connection still goes back (its slot of the blocking pool): see :func:`_sink`."""
    if (
        max_keepalive is not None
        and conn.sock is not None
        # Fewer connections ever opened than the limit: none can be over it (urllib3 counts them; no walk needed).
        and getattr(pool, "num_connections", max_keepalive) >= max_keepalive
        and idle_open(pool, max_keepalive) >= max_keepalive
    ):
        conn.close()
        return True
    conn._inferkit_idle_since = time.monotonic()
    return False


def _sink(pool: Any, conn: Any) -> None:
    """Move a connection just closed by the idle limit from the top of the pool's LIFO stack to its bottom, so the
    open connections kept are taken first and the closed one is reopened only when all of them are busy. Below
    the ``None`` placeholders it keeps :func:`idle_open`'s walk short: only closed connections are ever put there."""
    queue = pool.pool
    if queue is None:
        return
    with queue.mutex:
        stack = queue.queue
        if stack and stack[-1] is conn:  # else another thread took it meanwhile: nothing to move
            stack.pop()
            stack.insert(0, conn)  # a list: a memmove of at most max_connections pointers


def idle_open(pool: Any, stop_at: int | None = None) -> int:
    """How many connections waiting in ``pool`` are open (counting stops at ``stop_at``).

    urllib3's queue is a LIFO stack filled with ``None`` placeholders: connections given back sit above them, so
    the count walks down from the top until the first placeholder (one or two steps for a client used by a few
    threads), under the queue's lock.
    """
    queue = pool.pool
    if queue is None:
        return 0
    count = 0
    with queue.mutex:
        for conn in reversed(queue.queue):
            if conn is None:
                break
            if conn.sock is not None:
                count += 1
                if count == stop_at:
                    break
    return count


def others_busy(pool: Any) -> bool:
    """Whether another connection of ``pool`` is checked out besides the caller's (threads share the client)."""
    queue = pool.pool
    return queue is not None and len(queue.queue) < queue.maxsize - 1


def is_open(pool: Any) -> bool:
    """Whether ``pool`` has not been closed (a PoolManager closes a pool it evicts)."""
    return pool.pool is not None


def renew_after_fork(session: requests.Session) -> None:
    """In a forked child: new, empty pools for every adapter of ``session``.

    The inherited connections are let go of by closing the child's copies of their sockets: ``close()`` only
    drops this process's descriptor, while ``shutdown()`` (or a TLS close_notify) would end the parent's
    connection too, so neither is used.
    """
    for adapter in list(session.adapters.values()):
        if not isinstance(adapter, requests.adapters.HTTPAdapter):
            continue
        managers = [adapter.poolmanager, *adapter.proxy_manager.values()]
        sizes: Any = adapter  # requests keeps the pool sizes as private attributes (for pickling)
        adapter.init_poolmanager(sizes._pool_connections, sizes._pool_maxsize, block=sizes._pool_block)
        adapter.proxy_manager = {}
        for manager in managers:
            _drop_inherited(manager)


def _drop_inherited(manager: Any) -> None:
    """Close this process's copies of the sockets pooled in a urllib3 PoolManager inherited across fork()."""
    try:
        pools = list(manager.pools._container.values())  # urllib3 has no public iterator
    except AttributeError:
        return
    for pool in pools:
        queue = getattr(pool, "pool", None)
        for conn in list(getattr(queue, "queue", ()) or ()):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.close()  # this process's descriptor only: close() sends no TLS close_notify, no shutdown
                except OSError:
                    pass
                conn.sock = None
