"""Server-sent event streams on the sync HTTP transport: ``generate_stream`` of :class:`InferenceRESTClient`.

Owns: one attempt of a streamed request for the sync driver (:func:`inferkit._transport.driver.drive`): it opens
the connection, sends the request, reads the status and, on a 2xx event stream, reads until the first event is
complete, so that everything before the first event (connect, a 5xx, a drop, a read timeout) is retried under the
client's :class:`~inferkit.config.RetryPolicy` by the same retry loop as every REST call
(:func:`inferkit._retry.rest_exchange`), and nothing after it is. Then :class:`EventStream`, the iterator handed to
the caller: each wait for bytes is bounded by the read timeout (the time per event) and by what is left of the
call's deadline (``RetryPolicy.deadline`` or ``Timeout.total``: the whole stream); closing it early closes its
connection (never back to the pool half-read), a stream read to its end gives the connection back. Failures map
to inferkit errors here, naming the model.
Must not import: aiohttp, grpc, inferkit.aio, inferkit.grpc_client.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any, Generator

import requests
import urllib3

from inferkit._retry import Attempt, AttemptFailed, Budget, closed_kind
from inferkit._transport import pool as pools
from inferkit._transport import wire
from inferkit._transport.driver import CancelScope, clock, current_scope, drive
from inferkit._transport.http import Prepared, SyncTransport
from inferkit.codec.event_stream import EventStreamBase
from inferkit.codec.generate import is_event_stream
from inferkit.codec.http_wire import BodyTooLarge
from inferkit.codec.rest_calls import Opened, Reply, RestCall
from inferkit.codec.rest_v2 import BodyParts

__all__ = ["EventStream", "open_stream"]

READ_SIZE = 65536


class _Runner:
    """The sync driver's interface (see :mod:`inferkit._transport.driver`) for one streamed request."""

    def __init__(self, transport: SyncTransport) -> None:
        self.t = transport

    def attempt(self, prep: Prepared, todo: Attempt | None) -> Any:
        budget, fresh = (prep.budget, False) if todo is None else todo
        scope = current_scope()
        try:
            if self.t.direct:
                return _open_direct(self.t, prep, budget, fresh, scope)
            return _open_session(self.t, prep, budget)
        except (AttemptFailed, BodyTooLarge) as failure:
            if scope is not None and scope.cancelled:
                raise self.t._cancelled(prep) from None
            return failure

    def settled(self, prep: Prepared, outcome: Any) -> bool:
        return type(outcome) is Opened and not self.t.config.verbose

    def result(self, prep: Prepared, outcome: Any) -> Any:
        return outcome

    def retries(self, prep: Prepared, first: Any) -> Generator[Attempt | float, Any, Any]:
        return self.t.retries(prep, first)


def open_stream(transport: SyncTransport, call: RestCall, headers: Any, timeout: Any) -> EventStream:
    """Send a ``generate_stream`` call (retried until its first event) and return the stream of its events."""
    prep = transport.prepare_call(call, headers, timeout)
    deadline = None if prep.state.deadline is None else prep.state.start + prep.state.deadline
    read = prep.timeout.read
    outcome = drive(_Runner(transport), prep)
    return EventStream(call.model_name or "", outcome, read, deadline, prep.state.policy_deadline)


# -- opening: one attempt ------------------------------------------------------------------------------------------
def _open_direct(t: SyncTransport, prep: Prepared, budget: Budget, fresh: bool, scope: CancelScope | None) -> Any:
    pool, conn = t._checkout(budget.pool)
    handed = keep = False
    reused = sent = got_status = False
    try:
        reused = wire.ready_conn(conn, fresh, budget.connect)
        sock = conn.sock
        if scope is not None and not scope.attach(sock):
            raise AttemptFailed("dropped", ConnectionAbortedError("cancelled"))
        sock.settimeout(budget.write)
        for piece in wire.wire_pieces(prep.head, prep.body):
            sock.sendall(piece)
        sent = True
        sock.settimeout(budget.read)
        raw = http.client.HTTPResponse(sock, method=prep.call.method)
        raw.begin()
        got_status = True
        if raw.status >= 300 or not is_event_stream(raw.getheader("Content-Type")):
            try:
                data, complete = wire.read_body(raw, t._reader(raw.status, raw.getheader("Content-Encoding")))
            finally:
                raw.close()
            keep = complete and not raw.will_close
            return Reply(raw.status, raw.msg, data)
        source = _DirectSource(t, pool, conn, sock, raw)
        handed = True  # the source gives the connection back (or closes it) from here on, failures included
        opened = Opened(raw.status, raw.msg, b"", source=source)
        _first_event(opened)
        return opened
    except (AttemptFailed, BodyTooLarge):
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a failure kind, as the transport's own attempts do
        raise _failure(exc, t, budget, reused=reused, sent=sent, got_status=got_status) from None
    finally:
        if not handed:
            if scope is not None and not scope.attach(None):
                keep = False
            if not keep:
                conn.close()
            pools.checkin(pool, conn, t._idle_limit)


def _open_session(t: SyncTransport, prep: Prepared, budget: Budget) -> Any:
    body = prep.body
    assert not isinstance(body, BodyParts)
    try:
        resp = t.session.request(
            prep.call.method,
            t._origin + prep.target,
            data=body,
            headers=dict(t._items(prep.extra, prep.drop)),
            timeout=(budget.connect, budget.read),
            auth=t._requests_auth,
            **t._send_kwargs,
        )
    except requests.exceptions.ConnectTimeout as exc:
        raise AttemptFailed("connect_timeout", exc, timeout=budget.connect) from None
    except requests.exceptions.ReadTimeout as exc:
        raise AttemptFailed("read_timeout", exc, timeout=budget.read) from None
    except requests.exceptions.SSLError as exc:
        raise AttemptFailed("tls", exc) from None
    except requests.exceptions.ConnectionError as exc:
        raise AttemptFailed("connect", exc) from None
    except requests.exceptions.RequestException as exc:
        raise AttemptFailed("dropped", exc) from None
    try:
        if resp.status_code >= 300 or not is_event_stream(resp.headers.get("Content-Type")):
            reader = t._reader(resp.status_code, resp.headers.get("Content-Encoding"))
            data = wire.read_urllib3_body(resp.raw, reader)
            resp.close()
            return Reply(resp.status_code, resp.headers, data)
        opened = Opened(resp.status_code, resp.headers, b"", source=_SessionSource(resp))
        _first_event(opened)
        return opened
    except (AttemptFailed, BodyTooLarge):
        resp.close()
        raise
    except urllib3.exceptions.ReadTimeoutError as exc:
        resp.close()
        raise AttemptFailed("read_timeout", exc, timeout=budget.read) from None
    except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
        resp.close()
        raise AttemptFailed("dropped", exc) from None


def _first_event(opened: Opened) -> None:
    """Read until the first event is complete (or the stream ends); the source is closed if this fails."""
    try:
        while not opened.feed(opened.source.read(None)):
            pass
    except BaseException:
        opened.source.close()
        raise


def _failure(
    exc: BaseException, t: SyncTransport, budget: Budget, *, reused: bool, sent: bool, got_status: bool
) -> Any:
    if isinstance(exc, (socket.timeout, TimeoutError, BlockingIOError)):
        if sent:
            return AttemptFailed("read_timeout", exc, timeout=budget.read)
        return AttemptFailed("write_timeout", exc, timeout=budget.write)
    if isinstance(exc, ssl.SSLError):
        if reused and not sent and isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return AttemptFailed("stale_send", exc)
        return AttemptFailed("tls" if not got_status else "dropped", exc)
    if isinstance(exc, wire.DROPPED):
        kind = closed_kind(
            reused=reused, got_status=got_status, tls_without_client_cert=t._tls_no_cert, sending=not sent
        )
        return AttemptFailed(kind, exc)
    if isinstance(exc, http.client.BadStatusLine):
        return AttemptFailed("dropped", wire.NotHTTPError(str(exc.args[0]) if exc.args else ""))
    if isinstance(exc, (http.client.HTTPException, OSError)):
        return AttemptFailed("dropped", exc)
    raise exc


# -- reading: the open connection ----------------------------------------------------------------------------------
class _DirectSource:
    """An open stream on a pooled connection of the direct path."""

    def __init__(self, t: SyncTransport, pool: Any, conn: Any, sock: socket.socket, raw: http.client.HTTPResponse):
        self._t, self._pool, self._conn, self._sock, self._raw = t, pool, conn, sock, raw
        self._done = False
        self._timeout = sock.gettimeout()

    def read(self, timeout: float | None) -> bytes:
        if timeout is not None and timeout != self._timeout:  # the same read timeout for every event: set once
            self._sock.settimeout(timeout)
            self._timeout = timeout
        data = self._raw.read1(READ_SIZE)
        if not data and self._raw.length:  # closed short of its Content-Length (chunked raises by itself)
            raise http.client.IncompleteRead(b"", self._raw.length)
        return data

    def release(self) -> None:
        """The stream was read to its end: the connection goes back to the pool (when the server keeps it)."""
        self._give_back(keep=self._raw.isclosed() and not self._raw.will_close)

    def close(self) -> None:
        """Left early: this connection is closed, never pooled half-read."""
        self._give_back(keep=False)

    def _give_back(self, keep: bool) -> None:
        if self._done:
            return
        self._done = True
        scope = current_scope()
        if scope is not None and not scope.attach(None):
            keep = False
        if not keep:
            self._raw.close()
            self._conn.close()
        pools.checkin(self._pool, self._conn, self._t._idle_limit)


class _SessionSource:
    """An open stream read through requests (proxies, hooks, custom adapters): the response's urllib3 body."""

    def __init__(self, resp: requests.Response) -> None:
        self._resp = resp

    def read(self, timeout: float | None) -> bytes:
        # requests set the socket's read timeout when the request was sent; a deadline is checked between reads.
        data: bytes = self._resp.raw.read1(READ_SIZE)
        return data

    def release(self) -> None:
        self._resp.close()

    def close(self) -> None:
        self._resp.close()


class EventStream(EventStreamBase):
    """The events of one ``generate_stream`` call, as dicts: an iterator and a context manager.

    Leaving the ``with`` block, :meth:`close`, or breaking out of a ``for`` loop over it (the generator form closes
    it when collected; call :meth:`close` to be prompt) closes the connection, which tells the server to stop
    generating. Errors raised from ``next()``: :class:`~inferkit.errors.ServerError` for an error event (the
    server's text, naming the model; the stream ends), :class:`~inferkit.errors.DecodeError` for a malformed
    event, :class:`~inferkit.errors.ReadTimeout` when no bytes came within the read timeout,
    :class:`~inferkit.errors.DeadlineExceeded` when the call's deadline ran out, and
    :class:`~inferkit.errors.ConnectError` when the connection broke.
    """

    def __init__(
        self, model_name: str, opened: Any, read: float | None, deadline: float | None, policy_deadline: bool
    ) -> None:
        super().__init__(model_name)
        self._begin(opened, read, deadline, policy_deadline)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._pending:
            if self._source is None:
                raise StopIteration
            timeout, by_deadline = self._read_timeout(clock())
            try:
                chunk = self._source.read(timeout)
            except (socket.timeout, TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
                raise self._timed_out(by_deadline) from exc
            except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError, ValueError) as exc:
                raise self._broken(exc) from exc
            self._received(chunk)
        return self._next_event()

    def close(self) -> None:
        """End the stream now: its connection is closed (the server stops generating). Safe to call twice."""
        self._close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()
