"""Many REST requests at once over a sync transport's pooled connections, on one I/O thread (``infer_many``).

Owns: a small event loop of its own (``selectors``, one thread) that drives the direct path (HTTP or HTTPS) of a
:class:`~inferkit._http.SyncTransport` without blocking. Each request's bytes and retry loop come from
``SyncTransport.prepare`` (the same :func:`~inferkit._retry.rest_exchange` a blocking call runs: the same retries,
backoff, Retry-After, split timeouts and overall deadline, with backoff waits as timers instead of sleeps);
connections are the adapter's pooled urllib3 ones, borrowed and given back; replies are read by the sans-IO
:class:`~inferkit.codec.http1.ReplyParser`; failures are classified exactly as the direct path classifies them.
Waiting for the pool and opening a connection (DNS, connect) happen on helper threads, so neither stalls the loop.
Must not import: aiohttp, grpc, inferkit.aio, inferkit.grpc_client.

Why: with a blocked thread per request in flight, every reply wakes its own thread, and under the GIL each wake-up
is a thread switch or two; at 32 requests in flight that, not the work per request, is what kept the sync
``infer_many`` under the aio client's throughput (``benchmarks/batch_bench.py --part profile``). One loop thread
receiving every reply costs what the aio client's event loop costs. Plain HTTP and TLS on the direct path are
multiplexed (connections are opened, TLS handshake included, by the helpers; the loop then drives the
non-blocking ``SSLSocket``); proxies and everything that needs requests' own request path keep the worker
threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any, Callable

from inferkit._http import _DROPPED, Prepared, SyncTransport, ready_conn, wire_pieces
from inferkit._retry import Attempt, AttemptFailed, Budget, closed_kind
from inferkit.codec.http1 import FramingError, ReplyParser
from inferkit.codec.http_wire import BodyTooLarge
from inferkit.codec.rest_calls import Reply

__all__ = ["HTTPMux"]

logger = logging.getLogger("inferkit")

_READ_SIZE = 1 << 16
_IOV_MAX = 512  # buffers per sendmsg() (Linux allows 1024)
_EVENT_READ = selectors.EVENT_READ
_EVENT_BOTH = selectors.EVENT_READ | selectors.EVENT_WRITE


def _backoff(seconds: float) -> float:
    """How long a backoff's timer runs: one indirection so tests can record the waits (as ``_http._sleep``)."""
    return seconds


class _Job:
    """One logical request: its retry loop, where it stands, and who to tell when it ends."""

    __slots__ = ("prep", "parse", "done", "budget", "fresh", "conn", "ended")

    def __init__(self, prep: Prepared, parse: Callable[[Reply], Any], done: Callable[[bool, Any], None]) -> None:
        self.prep = prep
        self.parse = parse
        self.done = done
        self.budget: Budget | None = None
        self.fresh = False
        self.conn: _Conn | None = None
        self.ended = False


class _Conn:
    """A pooled connection while the loop holds it (non-blocking, registered with the selector)."""

    __slots__ = (
        "pool",
        "conn",
        "sock",
        "job",
        "out",
        "parser",
        "reused",
        "sent",
        "writing",
        "deadline",
        "end",
        "timer",
        "tls",
    )

    def __init__(self, pool: Any, conn: Any, reused: bool) -> None:
        self.pool = pool
        self.conn = conn
        self.sock: socket.socket | None = conn.sock
        self.job: _Job | None = None
        self.out: deque[Any] = deque()
        self.parser: ReplyParser | None = None
        self.reused = reused  # a keep-alive connection that carried a request before (a failure may be "stale")
        self.sent = False
        self.writing = False  # registered for EVENT_WRITE too
        self.deadline: float | None = None  # when the current send or receive times out
        self.end: float | None = None  # the overall deadline of the current attempt
        self.timer: float | None = None  # when its entry in the timer heap fires (one entry per connection)
        self.tls = isinstance(self.sock, ssl.SSLSocket)


class HTTPMux:
    """Runs requests prepared by one :class:`~inferkit._http.SyncTransport` concurrently on one I/O thread.

    :meth:`submit` starts a request and returns a function that cancels it; ``done(ok, value)`` is called exactly
    once per request, on the loop's thread (the parsed result, or the error a blocking call would have raised).
    :meth:`close` ends the loop and gives every connection back to the transport's pool. Thread-safe.

    Args:
        transport: A transport on the direct path (``transport.multiplexable``).
        helpers: Most threads waiting for the pool or opening connections at once.
    """

    def __init__(self, transport: SyncTransport, helpers: int = 8) -> None:
        if not transport.multiplexable:
            raise ValueError(f"this transport cannot be multiplexed ({transport.path_reason}, {transport.scheme})")
        self._transport = transport
        self._max_response = transport.config.max_response_size
        self._tls_no_cert = transport._tls_no_cert
        self._helpers = ThreadPoolExecutor(max(1, helpers), thread_name_prefix="inferkit-connect")
        self._lock = threading.Lock()
        self._inbox: deque[tuple[Callable[[Any], None], Any]] = deque()  # posted from other threads
        self._ready: deque[_Job] = deque()  # submitted on the loop's thread: begun after the current event
        self._live: set[_Job] = set()
        self._idle: list[_Conn] = []
        self._timers: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self._waiting_pool = 0  # helpers waiting for a pooled connection: give connections back rather than idle
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._closed = False
        self._stopping = False
        self._signalled = False
        self._sel: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # -- the API -------------------------------------------------------------------------------------------------
    def submit(
        self, prep: Prepared, parse: Callable[[Reply], Any], done: Callable[[bool, Any], None]
    ) -> Callable[[], Any]:
        """Start ``prep`` (from ``transport.prepare``); ``parse(reply)`` makes the result passed to ``done``."""
        job = _Job(prep, parse, done)
        if self.on_loop():
            self._ready.append(job)  # from a done() callback: begun once the current event is handled
        elif not self._post(self._begin, job):
            prep.exchange.close()
            done(False, CancelledError("the multiplexed REST loop was closed"))
        return lambda: self._post(self._cancel, job)

    def on_loop(self) -> bool:
        """Whether the caller runs on the loop's thread (in a ``done`` callback): it must not block."""
        return threading.get_ident() == self._ident

    def close(self, wait: bool = True) -> None:
        """Cancel what is still running, give the connections back to the pool and end the loop's thread."""
        with self._lock:
            ended = self._closed  # by an earlier close(), or by the loop itself after a failure
            self._closed = True
            thread = self._thread
            if thread is not None and not ended:
                self._inbox.append((self._stop, None))
                self._wake()
        if thread is not None and wait and thread is not threading.current_thread():
            thread.join()
        # A helper still waiting for the pool gets a connection the loop gave back, finds the loop closed and puts
        # it back; one still connecting ends with its connect timeout.
        self._helpers.shutdown(wait=wait)

    # -- posting to the loop -----------------------------------------------------------------------------------
    def _post(self, fn: Callable[[Any], None], arg: Any) -> bool:
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                self._open()
            self._inbox.append((fn, arg))
            self._wake()
        return True

    def _wake(self) -> None:
        if not self._signalled and self._wake_w is not None:
            self._signalled = True
            try:
                self._wake_w.send(b"\0")
            except BlockingIOError:
                pass  # the loop has wake-ups pending already

    def _open(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, _EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="inferkit-rest-mux", daemon=True)
        self._thread.start()

    # -- the loop --------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        self._ident = threading.get_ident()
        sel = self._sel
        assert sel is not None
        timers = self._timers
        try:
            while not (self._stopping and not self._live):
                if self._ready or self._inbox:
                    timeout: float | None = 0.0
                elif timers:
                    timeout = max(0.0, timers[0][0] - time.monotonic())
                else:
                    timeout = None
                for key, mask in sel.select(timeout):
                    c = key.data
                    if c is None:
                        self._drain_wake()
                        continue
                    if c.job is not None and c.out and (mask & selectors.EVENT_WRITE or c.tls):
                        self._write(c)  # (TLS: a send may wait for the peer's bytes, so a read event resumes it)
                    if mask & _EVENT_READ and c.sock is not None:
                        self._read(c)
                self._drain()
                if timers and timers[0][0] <= time.monotonic():
                    self._fire()
                if self._idle:
                    # A connection whose reply came in is reused by a request begun in this same turn (the
                    # completion started the next one); any left over goes back to the pool, where the other
                    # threads of the application may need it: the loop never holds a connection it has no use for.
                    self._give_back_idle()
        except BaseException as exc:  # noqa: BLE001 - a bug here must not leave callers waiting forever
            logger.exception("inferkit: the multiplexed REST loop failed")
            self._abandon(exc)
        finally:
            self._shutdown()

    def _abandon(self, exc: BaseException) -> None:
        """After a failure of the loop itself: every request it knows of ends with ``exc``, and connections
        handed over by helpers go back to the pool."""
        with self._lock:
            self._closed = True  # from here on, submit() and the helpers see a closed loop
            posted = list(self._inbox)
            self._inbox.clear()
        for fn, arg in posted:
            if fn == self._begin:
                self._ready.append(arg)
            elif fn == self._acquired:
                job, outcome, _ = arg
                if isinstance(outcome, tuple):
                    outcome[0]._put_conn(outcome[1])
                self._ready.append(job)
        # Ending a request may start the next ones (from its done callback, into _ready): until none is left.
        while self._live or self._ready:
            jobs = list(self._live) + list(self._ready)
            self._ready.clear()
            for job in jobs:
                c = job.conn
                if c is not None:
                    c.job = job.conn = None
                    self._discard(c)
                self._end(job, False, exc)

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        with self._lock:
            self._signalled = False
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass

    def _drain(self) -> None:
        inbox, ready = self._inbox, self._ready
        while inbox or ready:
            while inbox:
                fn, arg = inbox.popleft()
                fn(arg)
            while ready and not inbox:
                self._begin(ready.popleft())

    def _fire(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, fn, arg = heapq.heappop(timers)
            fn(arg)

    def _at(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), fn, arg))

    def _stop(self, _: Any) -> None:
        self._stopping = True
        for job in list(self._live) + list(self._ready):
            self._cancel(job)
        self._ready.clear()

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._give_back_idle()
        sel = self._sel
        if sel is not None:
            for key in list(sel.get_map().values()):
                if key.data is not None:
                    self._discard(key.data)
            sel.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    # -- a request's progress --------------------------------------------------------------------------------------
    def _begin(self, job: _Job) -> None:
        if job.ended:
            return  # cancelled before it began
        self._live.add(job)
        self._advance(job, None)

    def _advance(self, job: _Job, outcome: Any) -> None:
        """Send ``outcome`` (None to start, or after a backoff) into the job's retry loop and do what it asks."""
        try:
            todo = job.prep.exchange.send(outcome)
        except StopIteration as stop:
            try:
                result = (True, job.parse(stop.value))
            except BaseException as exc:  # noqa: BLE001 - the item's outcome
                result = (False, exc)
            self._end(job, *result)
            return
        except BaseException as exc:  # noqa: BLE001 - the typed error of the request: its outcome
            self._end(job, False, exc)
            return
        if isinstance(todo, Attempt):
            job.budget = todo.budget
            job.fresh = todo.fresh
            self._attempt(job)
        else:
            self._at(time.monotonic() + _backoff(todo), self._resume, job)  # a backoff: a timer, nobody sleeps

    def _resume(self, job: _Job) -> None:
        if not job.ended:
            self._advance(job, None)

    def _end(self, job: _Job, ok: bool, value: Any) -> None:
        if job.ended:
            return
        job.ended = True
        self._live.discard(job)
        job.prep.exchange.close()
        try:
            job.done(ok, value)
        except BaseException:  # noqa: BLE001 - the caller's callback; the loop goes on
            logger.exception("inferkit: a multiplexed request's completion callback failed")

    def _cancel(self, job: _Job) -> None:
        if job.ended:
            return
        c = job.conn
        if c is not None:
            job.conn = None
            c.job = None
            self._discard(c)  # the request may be half sent: the connection is done
        self._end(job, False, CancelledError("the request was cancelled (infer_many stopped)"))

    # -- connections -------------------------------------------------------------------------------------------
    def _attempt(self, job: _Job) -> None:
        if not job.fresh and self._idle:
            self._send(self._idle.pop(), job)  # the most recently used: the likeliest to be alive
            return
        transport = self._transport
        conn = pool = None
        try:
            pool, conn = transport._checkout(0.0)
        except AttemptFailed:
            pass  # none free now: a helper waits for one (Timeout.pool)
        except BaseException as exc:  # noqa: BLE001 - the client was closed: raised as a blocking call would
            self._end(job, False, exc)
            return
        if conn is not None and conn.sock is not None and not job.fresh:
            self._send(self._adopt(pool, conn, reused=True), job)
        else:
            self._acquire(job, pool, conn)

    def _acquire(self, job: _Job, pool: Any, conn: Any) -> None:
        """Get a connection (waiting for the pool) and open it, on a helper thread; then continue on the loop."""
        budget = job.budget
        assert budget is not None
        fresh = job.fresh
        waits = conn is None
        if waits:
            self._waiting_pool += 1
        transport = self._transport

        def work() -> None:
            got, where = conn, pool
            try:
                if got is None:
                    where, got = transport._checkout(budget.pool)
                outcome: Any = (where, got, ready_conn(got, fresh, budget.connect))
            except BaseException as exc:  # noqa: BLE001 - AttemptFailed for the retry loop, or the client closed
                if got is not None:
                    got.close()
                    where._put_conn(got)
                    got = None
                outcome = exc
            if not self._post(self._acquired, (job, outcome, waits)) and got is not None:
                where._put_conn(got)

        self._helpers.submit(work)

    def _acquired(self, arg: tuple[_Job, Any, bool]) -> None:
        job, outcome, waited = arg
        if waited:
            self._waiting_pool -= 1
        if isinstance(outcome, BaseException):
            if not job.ended:
                if isinstance(outcome, AttemptFailed):
                    self._advance(job, outcome)
                else:
                    self._end(job, False, outcome)
            return
        pool, conn, reused = outcome
        if job.ended or self._stopping:
            pool._put_conn(conn)
            return
        self._send(self._adopt(pool, conn, reused), job)

    def _adopt(self, pool: Any, conn: Any, reused: bool) -> _Conn:
        c = _Conn(pool, conn, reused)
        sock = c.sock
        assert sock is not None and self._sel is not None
        sock.setblocking(False)
        self._sel.register(sock, _EVENT_READ, c)
        return c

    def _release(self, c: _Conn, keep: bool) -> None:
        if not keep:
            self._discard(c)
        elif self._waiting_pool or self._stopping:
            self._give_back(c)
        else:
            self._idle.append(c)

    def _give_back_idle(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            self._give_back(c)

    def _give_back(self, c: _Conn) -> None:
        """Back to the pool, open, as the blocking paths expect it (blocking mode)."""
        sock = c.sock
        if sock is not None:
            assert self._sel is not None
            self._sel.unregister(sock)
            sock.setblocking(True)
            c.sock = None
        c.pool._put_conn(c.conn)

    def _discard(self, c: _Conn) -> None:
        """Closed, then back to the pool (one put per get: the blocking pool never loses a slot)."""
        sock = c.sock
        if sock is None:
            return
        if c in self._idle:
            self._idle.remove(c)
        assert self._sel is not None
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        c.sock = None
        c.deadline = None
        c.conn.close()
        c.pool._put_conn(c.conn)

    # -- one attempt on one connection ------------------------------------------------------------------------------
    def _send(self, c: _Conn, job: _Job) -> None:
        prep = job.prep
        budget = job.budget
        assert budget is not None
        c.job = job
        job.conn = c
        c.parser = ReplyParser(self._max_response, head_request=prep.method == "HEAD")
        c.out.clear()
        c.out.extend(wire_pieces(prep.head, prep.body))
        c.sent = False
        c.end = None if budget.remaining is None else time.monotonic() + budget.remaining
        self._write(c)

    def _write(self, c: _Conn) -> None:
        sock, out = c.sock, c.out
        assert sock is not None and c.job is not None
        try:
            while out:
                if len(out) == 1 or c.tls:  # an SSLSocket has no sendmsg()
                    n = sock.send(out[0])
                else:
                    n = sock.sendmsg(list(itertools.islice(out, _IOV_MAX)))
                while n:
                    first = out[0]
                    size = len(first) if type(first) is bytes else memoryview(first).nbytes
                    if n >= size:
                        out.popleft()
                        n -= size
                    else:
                        out[0] = memoryview(first).cast("B")[n:]  # a tensor's part may have another item size
                        n = 0
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            if not c.writing:
                assert self._sel is not None
                self._sel.modify(sock, _EVENT_BOTH, c)
                c.writing = True
            self._arm(c, c.job.budget.write if c.job.budget is not None else None)
            return
        except OSError as exc:  # ssl.SSLError included
            self._lost(c, exc, eof=False)
            return
        if c.writing:
            assert self._sel is not None
            self._sel.modify(sock, _EVENT_READ, c)
            c.writing = False
        c.sent = True
        self._arm(c, c.job.budget.read if c.job.budget is not None else None)

    def _read(self, c: _Conn) -> None:
        job, sock, parser = c.job, c.sock, c.parser
        assert sock is not None
        if job is None or parser is None:
            self._discard(c)  # an idle keep-alive connection the server closed (or sent bytes nobody asked for)
            return
        try:
            while True:
                view = parser.into()
                if view is None:
                    data = self._recv(sock)
                    done = parser.feed(data) if data else parser.eof()
                    full = len(data) == _READ_SIZE
                else:
                    with view:
                        n = self._recv_into(sock, view)
                        full = n == len(view)
                    done = parser.filled(n) if n else parser.eof()
                # TLS: a receive returns one record at most, and the SSL object may hold decrypted bytes the selector
                # cannot see: read on until it says it wants more from the network.
                if done or not (full or c.tls):
                    break
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            done = False
        except FramingError as exc:
            self._lost(c, exc, eof=True)
            return
        except BodyTooLarge as exc:
            self._fail(c, exc)
            return
        except OSError as exc:  # ssl.SSLError included
            self._lost(c, exc, eof=False)
            return
        except BaseException as exc:  # noqa: BLE001 - DecodeError (a corrupt compressed body): the call's error
            c.job = job.conn = None
            self._discard(c)
            self._end(job, False, exc)
            return
        if not done:
            if c.deadline is not None:
                self._arm(c, job.budget.read if job.budget is not None else None)  # progress: the clock restarts
            return
        keep = parser.reusable and not c.out  # a reply before the whole body was sent ends the connection
        reply = Reply(parser.status, parser.headers, parser.body)
        c.job = job.conn = None
        c.parser = None
        c.deadline = None
        c.reused = True
        self._release(c, keep)
        self._advance(job, reply)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(_READ_SIZE)
        except ssl.SSLZeroReturnError:
            return b""  # the server's close_notify: the end of the connection

    @staticmethod
    def _recv_into(sock: socket.socket, view: memoryview) -> int:
        try:
            return sock.recv_into(view)
        except ssl.SSLZeroReturnError:
            return 0

    def _lost(self, c: _Conn, exc: BaseException, eof: bool) -> None:
        """The connection failed under the attempt: the same failure kinds as the direct path."""
        parser = c.parser
        got_status = parser is not None and parser.got_status
        if isinstance(exc, FramingError) and (got_status or not eof):
            kind = "dropped"  # a malformed reply, or one cut short after its status line
        elif isinstance(exc, (FramingError, *_DROPPED)):
            kind = closed_kind(reused=c.reused, got_status=got_status, tls_without_client_cert=self._tls_no_cert)
        elif isinstance(exc, ssl.SSLError):
            kind = "dropped" if got_status else "tls"
        else:
            kind = "dropped"
        self._fail(c, AttemptFailed(kind, exc))

    def _fail(self, c: _Conn, outcome: BaseException) -> None:
        job = c.job
        assert job is not None
        c.job = job.conn = None
        self._discard(c)
        self._advance(job, outcome)

    # -- timeouts ----------------------------------------------------------------------------------------------------
    def _arm(self, c: _Conn, seconds: float | None) -> None:
        """The current send or receive must progress within ``seconds`` (and not pass the attempt's deadline)."""
        if seconds is None and c.end is None:
            c.deadline = None
            return
        when = time.monotonic() + seconds if seconds is not None else float("inf")
        if c.end is not None and c.end < when:
            when = c.end
        c.deadline = when
        if c.timer is None or when < c.timer:
            c.timer = when  # an earlier entry still in the heap fires, sees it is not the current one, and goes
            self._at(when, self._expire, (c, when))

    def _expire(self, arg: tuple[_Conn, float]) -> None:
        c, when = arg
        if c.timer != when:
            return  # superseded by an earlier entry
        c.timer = None
        deadline = c.deadline
        if deadline is None or c.job is None or c.sock is None:
            return
        if deadline > time.monotonic():
            c.timer = deadline  # progress moved it: one entry per connection, pushed again
            self._at(deadline, self._expire, (c, deadline))
            return
        budget = c.job.budget
        assert budget is not None
        if c.sent:
            failure = AttemptFailed("read_timeout", socket.timeout("timed out"), timeout=budget.read)
        else:
            failure = AttemptFailed("write_timeout", socket.timeout("timed out"), timeout=budget.write)
        self._fail(c, failure)
