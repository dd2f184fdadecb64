"""The half of a ``generate_stream`` that does not depend on the I/O model: shared by the sync and async streams.

Owns: :class:`EventStreamBase`, the state of one open stream of server-sent events (the decoder, the events read
but not yet handed out, how many were, the read timeout and the call's deadline) and the rules both streams follow:
the next event as a dict (a malformed one names its position; any error closes the stream), the time the next read
may take (the read timeout, or what is left of the deadline), and the wording of each failure. The sync
(:mod:`inferkit._transport.stream`) and async (:mod:`inferkit.aio._stream`) streams only read bytes.
Must not import: requests, urllib3, aiohttp, grpc, inferkit._transport, inferkit.aio.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from inferkit import errors
from inferkit.codec.generate import decode_event
from inferkit.codec.rest_calls import Opened
from inferkit.codec.sse import Event, SSEDecoder

__all__ = ["EventStreamBase"]


class EventStreamBase:
    """The events of one ``generate_stream`` call; the subclasses add reading (``_source.read``) and iteration.

    ``_source`` is the transport's open response: ``release()`` when read to its end (the connection may be
    pooled), ``close()`` when left early (the connection is closed: the server stops generating).
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        #: Events handed to the caller so far.
        self.events_received = 0
        self._pending: deque[Event] = deque()
        self._source: Any = None
        self._decoder = SSEDecoder()
        self._read: float | None = None
        self._deadline: float | None = None
        self._policy_deadline = True

    def _begin(self, opened: Any, read: float | None, deadline: float | None, policy_deadline: bool) -> None:
        """Take what the first attempt returned: an :class:`Opened` stream, or a 2xx reply that is not an event
        stream (its JSON object is the only event)."""
        self._read, self._deadline, self._policy_deadline = read, deadline, policy_deadline
        if type(opened) is Opened:
            self._pending.extend(opened.events)
            self._source = None if opened.ended else opened.source
            self._decoder = opened.decoder
        else:
            self._pending.append(Event("message", bytes(opened.body)))

    def _next_event(self) -> dict[str, Any]:
        """The next pending event as a dict (call it when ``_pending`` is not empty); an error event or a malformed
        one closes the stream and raises (ServerError / DecodeError naming the model and the event's position)."""
        try:
            value = decode_event(self.model_name, self._pending.popleft())
        except errors.InferkitError as exc:
            if isinstance(exc, errors.DecodeError):
                exc.message = f"{exc.message} (event {self.events_received + 1})"
            self._close()
            raise
        self.events_received += 1
        return value

    def _read_timeout(self, now: float) -> tuple[float | None, bool]:
        """How long the next read may wait, and whether that bound is the call's deadline (not the read timeout);
        the stream is closed and DeadlineExceeded / ReadTimeout raised when the deadline has passed."""
        if self._deadline is None:
            return self._read, False
        left = self._deadline - now
        if left <= 0:
            self._close()
            raise self._deadline_error()
        if self._read is None or left < self._read:
            return left, True
        return self._read, False

    def _received(self, chunk: bytes) -> None:
        """Decode a chunk read from the source; an empty one is the end of the stream (the source is released)."""
        if chunk:
            self._pending.extend(self._decoder.feed(chunk))
            return
        self._pending.extend(self._decoder.end())
        source, self._source = self._source, None
        source.release()

    def _timed_out(self, by_deadline: bool) -> errors.InferTimeoutError:
        """The error for a read that timed out (the stream is closed)."""
        self._close()
        if by_deadline:
            return self._deadline_error()
        return errors.ReadTimeout(
            f"generate_stream: no event from model '{self.model_name}' within the {self._read:g} s read timeout "
            f"after {self.events_received} events (raise Timeout(read=...) for a slower model)",
            model_name=self.model_name,
        )

    def _broken(self, exc: BaseException) -> errors.ConnectError:
        """The error for a connection that broke once events were received (the stream is closed; not retried)."""
        self._close()
        return errors.ConnectError(
            f"generate_stream: the connection broke after {self.events_received} events of model "
            f"'{self.model_name}' ({type(exc).__name__}: {exc}); not retried once events were received",
            model_name=self.model_name,
        )

    def _deadline_error(self) -> errors.InferTimeoutError:
        cls = errors.DeadlineExceeded if self._policy_deadline else errors.ReadTimeout
        return cls(
            f"generate_stream: the call's deadline ran out after {self.events_received} events of model "
            f"'{self.model_name}' (RetryPolicy.deadline / Timeout.total bound the whole stream)",
            model_name=self.model_name,
        )

    def _close(self) -> None:
        source, self._source = self._source, None
        self._pending.clear()
        if source is not None:
            source.close()

    def __del__(self) -> None:
        if getattr(self, "_source", None) is not None:
            self._close()
