"""Server-sent events framing: bytes as they arrive in, complete events out (Triton's ``generate_stream``).

Owns: :class:`SSEDecoder`, an incremental decoder of the ``text/event-stream`` format as the WHATWG HTML standard
defines it ("Interpreting an event stream"): lines end with ``\\r\\n``, ``\\n`` or ``\\r``; a line starting with
``:`` is a comment; ``data`` lines of one event are joined with ``\\n``; ``event`` names the event; ``id``,
``retry`` and unknown fields are read and ignored (a client of one request never reconnects); a blank line
dispatches the event, and an event with no ``data`` line is not dispatched. Bytes may be fed split at any
position, even inside a ``\\r\\n``. One deliberate difference from the standard: at the end of the stream an event
whose data was read but whose blank line never came is dispatched rather than dropped (a server that closes right
after its last ``data:`` line still gets its last answer delivered). Data stays bytes: the caller parses it.
Must not import: requests, urllib3, aiohttp, grpc, inferkit.errors.

The decoder is checked against ``sseclient-py`` and a whole-text reference decoder, with events split at random
byte positions (``tests/unit/test_codec_sse.py``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Event", "SSEDecoder"]

# One line ending: CRLF, a lone CR or a lone LF (a CR at the very end of a feed may be the first half of a CRLF).
_EOL = re.compile(rb"\r\n|\r|\n")


class Event(NamedTuple):
    """One dispatched event: its type (``"message"`` unless an ``event:`` line named it) and its data."""

    event: str
    data: bytes


class SSEDecoder:
    """Feed bytes, get the events they complete. One decoder per stream; not thread-safe."""

    __slots__ = ("_tail", "_skip_lf", "_data", "_event")

    def __init__(self) -> None:
        self._tail = b""  # an unfinished line
        self._skip_lf = False  # the last feed ended with CR: a LF opening the next one belongs to it
        self._data: list[bytes] | None = None  # data lines of the event being read (None: no data line yet)
        self._event = b""

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk`` (often none or one)."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._tail + chunk if self._tail else chunk
        events: list[Event] = []
        if 0x0D not in buf:  # the usual case (Triton ends lines with LF): a split, no regex
            lines = buf.split(b"\n")
            self._tail = lines.pop()
            for line in lines:
                self._line(line, events)
            return events
        pos = 0
        for match in _EOL.finditer(buf):
            self._line(buf[pos : match.start()], events)
            pos = match.end()
        if pos and buf[pos - 1] == 0x0D and pos == len(buf):
            self._skip_lf = True
        self._tail = buf[pos:] if pos < len(buf) else b""
        return events

    def end(self) -> list[Event]:
        """The stream ended: the last event if its data was read but its blank line never came (see above)."""
        events: list[Event] = []
        if self._tail:
            self._line(self._tail, events)
            self._tail = b""
        self._line(b"", events)
        return events

    @property
    def pending(self) -> bytes:
        """The first bytes of what has been read of an event not yet complete (for error messages)."""
        data = b"\n".join(self._data) if self._data is not None else b""
        return (data + self._tail)[:80]

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._data is not None:
                kind = self._event.decode("utf-8", "replace") if self._event else "message"
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                events.append(Event(kind, data))
            self._data = None
            self._event = b""
            return
        if line[0] == 0x3A:  # ":" a comment (servers send them as keep-alives)
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif field == b"event":
            self._event = value
        # id, retry and unknown fields: nothing to do for a stream that is never resumed
