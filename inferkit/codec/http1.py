"""A sans-IO reader of HTTP/1.1 replies: bytes in, status, headers and body out.

Owns: the reply's framing (status line and header block, ``Content-Length``, ``chunked``, read-until-close, 1xx
interim replies), whether the connection may be reused afterwards, and the body read through a
:class:`~inferkit.codec.http_wire.BodyReader` (size limit, decompression). Used by the sync transport's
multiplexed path (:mod:`inferkit._http_mux`), which owns the sockets; everything here is bytes in and values out,
with no sockets, clocks or sleeps (the h11 model).
Must not import: requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

from typing import Any

from inferkit.codec.http_wire import BodyReader, body_buffer_size

__all__ = ["ReplyParser", "ReplyHeaders", "FramingError", "HEAD_LIMIT"]

#: Most bytes a reply's status line and header block may take (http.client allows 64 KiB per line, 100 lines).
HEAD_LIMIT = 1 << 16
_MAX_HEADERS = 100

_HEAD, _PLAIN, _COUNTED, _CHUNKED, _CLOSE, _DONE = range(6)
_CHUNK_SIZE, _CHUNK_END, _TRAILERS = -1, -2, -3


class FramingError(ValueError):
    """The bytes are not a well-formed HTTP/1.1 reply (or the connection ended inside one)."""


class ReplyHeaders(dict[str, str]):
    """A reply's headers: keys lower-cased, ``get`` case-insensitive (repeated headers joined with ``", "``)."""

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> Any:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class ReplyParser:
    """Reads one reply. Feed it what the connection gives until :attr:`done`.

    Two ways to feed: :meth:`feed` with bytes received, or, while :meth:`into` returns a buffer (the body of a
    plain reply with a ``Content-Length``), receive straight into it and report the count with :meth:`filled`
    (no copy of a large body). At the end of the connection, call :meth:`eof` instead.

    When :attr:`done`: :attr:`status`, :attr:`headers`, :attr:`body` (bytes, or a bytearray for a large body),
    :attr:`complete` (read to its end: an error body past its limit is cut) and :attr:`reusable` (the connection
    may carry another request: keep-alive, read to the end, nothing sent beyond the reply).

    Raises :class:`FramingError` for bytes that are not a reply, :class:`~inferkit.codec.http_wire.BodyTooLarge`
    for a body past ``max_response_size``, and ``DecodeError`` for a corrupt compressed body.
    """

    __slots__ = (
        "status",
        "headers",
        "body",
        "complete",
        "reusable",
        "done",
        "_head_request",
        "_limit",
        "_mode",
        "_buf",
        "_reader",
        "_left",
        "_wanted",
        "_got",
        "_keep",
    )

    def __init__(self, max_response_size: int, *, head_request: bool = False) -> None:
        self.status = 0
        self.headers: ReplyHeaders = ReplyHeaders()
        self.body: bytes | bytearray = b""
        self.complete = False
        self.reusable = False
        self.done = False
        self._head_request = head_request
        self._limit = max_response_size
        self._mode = _HEAD
        self._buf = bytearray()  # the head, a chunked body's framing, or a small plain body as it arrives
        self._reader: BodyReader | None = None
        self._left = 0  # bytes left: of the Content-Length (_COUNTED), of the current chunk (_CHUNKED) or a state
        self._wanted = 0  # _PLAIN: bytes of body to read (Content-Length, or less for an error body cut short)
        self._got = 0  # _PLAIN: bytes of body in `body`
        self._keep = True  # the reply allows keep-alive

    @property
    def got_status(self) -> bool:
        """Whether the status line has arrived (a connection lost after it is not a stale keep-alive)."""
        return self.status != 0

    # -- feeding ---------------------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> bool:
        """Add bytes received; returns :attr:`done`."""
        mode = self._mode
        if mode == _HEAD:
            self._buf += data
            if self._head():
                self._feed_rest()
        elif mode == _PLAIN:
            self._plain(data)
        elif mode == _DONE:
            if data:
                self.reusable = False  # bytes nobody asked for: the connection is out of step
        else:
            self._buf += data
            self._feed_rest()
        return self.done

    def into(self) -> memoryview | None:
        """Where the next bytes of a plain body go (receive into it, then :meth:`filled`); None: use :meth:`feed`."""
        if self._mode != _PLAIN:
            return None
        body = self.body
        assert isinstance(body, bytearray)
        if self._got == len(body):
            body = self._grow(body)
        return memoryview(body)[self._got :]

    def _grow(self, body: bytearray) -> bytearray:
        # Grows with what arrived (see body_buffer_size): allocated once, then in place (the temporary zeros are
        # freed at once).
        size = body_buffer_size(len(body), self._wanted)
        if not body:
            self.body = body = bytearray(size)
        else:
            body.extend(bytes(size - len(body)))
        return body

    def filled(self, count: int) -> bool:
        """``count`` bytes were received into the buffer from :meth:`into`; returns :attr:`done`."""
        self._got += count
        if self._got >= self._wanted:
            self._finish_plain()
        return self.done

    def eof(self) -> bool:
        """The connection ended. Returns True when that ends the reply (a body read until close); raises
        :class:`FramingError` when the reply was cut short."""
        if self.done:
            self.reusable = False
            return True
        if self._mode == _CLOSE:
            self._finish_reader()
            self.reusable = False
            return True
        if self._mode == _HEAD:
            raise FramingError("the server closed the connection before its reply's header block ended")
        raise FramingError(f"the server closed the connection in the middle of its reply (status {self.status})")

    # -- the header block ------------------------------------------------------------------------------------------
    def _head(self) -> bool:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > HEAD_LIMIT:
                    raise FramingError(f"the reply's header block is over {HEAD_LIMIT} bytes")
                return False
            if end > HEAD_LIMIT:
                raise FramingError(f"the reply's header block is over {HEAD_LIMIT} bytes")
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            version, status = _status_line(lines[0])
            if 100 <= status < 200:
                if status == 101:
                    raise FramingError("the server switched protocols (101) in reply to an inference request")
                continue  # an interim reply (100 Continue, 103 Early Hints): the real one follows
            break
        if len(lines) - 1 > _MAX_HEADERS:
            raise FramingError(f"the reply has over {_MAX_HEADERS} header lines")
        headers = self.headers
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise FramingError(f"malformed header line in the reply: {bytes(line[:80])!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            old = dict.get(headers, key)
            dict.__setitem__(headers, key, text if old is None else f"{old}, {text}")
        self.status = status
        connection = headers.get("connection", "").lower()
        if version == b"HTTP/1.1":
            self._keep = "close" not in connection
        else:
            self._keep = "keep-alive" in connection
        reader = BodyReader.for_reply(status, headers.get("content-encoding"), self._limit)
        self._reader = reader
        transfer = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if self._head_request or status in (204, 304):
            self._mode = _DONE
            self.complete = True
            self.reusable = self._keep and not buf
            self.done = True
        elif transfer is not None:
            if transfer.strip().lower() != "chunked":
                raise FramingError(f"the reply's Transfer-Encoding {transfer!r} is not supported (only chunked)")
            self._mode, self._left = _CHUNKED, _CHUNK_SIZE
        elif length is not None:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0 or not length.strip().isdigit():
                raise FramingError(f"the reply's Content-Length {length!r} is not a number")
            if reader.plain:
                self._wanted = reader.expect(size)  # BodyTooLarge past the limit
                self.complete = self._wanted == size  # an error body longer than its limit is cut
                self._mode = _PLAIN
                self.body = bytearray()
            else:
                self._mode, self._left = _COUNTED, size
        else:
            self._mode = _CLOSE
            self._keep = False
        return True

    def _feed_rest(self) -> None:
        mode = self._mode
        if mode == _PLAIN:
            data, self._buf = bytes(self._buf), bytearray()
            self._plain(data, first=True)
        elif mode == _COUNTED:
            self._counted()
        elif mode == _CHUNKED:
            self._chunked()
        elif mode == _CLOSE:
            data, self._buf = bytes(self._buf), bytearray()
            if data and not self._reader_feed(data):
                self._finish_reader()

    # -- bodies ----------------------------------------------------------------------------------------------------
    def _plain(self, data: bytes, first: bool = False) -> None:
        need = self._wanted - self._got
        if first and len(data) >= need:
            # The usual small reply: the whole body came with the header block.
            self.body = data[:need] if len(data) > need else data
            self._got = self._wanted
            extra = len(data) - need
        else:
            body = self.body
            assert isinstance(body, bytearray)
            take = min(need, len(data))
            while self._got + take > len(body):
                body = self._grow(body)
            body[self._got : self._got + take] = data[:take]
            self._got += take
            extra = len(data) - take
        if self._got >= self._wanted:
            self._finish_plain(extra)

    def _finish_plain(self, extra: int = 0) -> None:
        body = self.body
        if isinstance(body, bytearray) and len(body) > self._wanted:
            del body[self._wanted :]
        self._mode = _DONE
        self.done = True
        self.reusable = self.complete and self._keep and extra == 0

    def _counted(self) -> None:
        data = bytes(self._buf)
        self._buf = bytearray()
        take = data[: self._left]
        self._left -= len(take)
        more = self._reader_feed(take) if take else True
        if not more or self._left == 0:
            self._finish_reader(extra=len(data) - len(take))

    def _chunked(self) -> None:
        buf = self._buf
        while True:
            left = self._left
            if left > 0:
                if not buf:
                    return
                take = bytes(buf[:left])
                del buf[: len(take)]
                self._left -= len(take)
                if not self._reader_feed(take):
                    self._finish_reader(extra=1)  # cut at the limit: the connection is dropped
                    return
                if self._left == 0:
                    self._left = _CHUNK_END
                continue
            if left == _CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise FramingError("a chunk of the reply's body is not followed by CRLF")
                del buf[:2]
                self._left = _CHUNK_SIZE
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > HEAD_LIMIT:
                    raise FramingError("a chunk size line of the reply is too long")
                return
            line = bytes(buf[:end])
            del buf[: end + 2]
            if left == _TRAILERS:
                if not line:
                    self._finish_reader(extra=len(buf))
                    return
                continue  # a trailer field: not used
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise FramingError(f"bad chunk size in the reply's body: {line[:40]!r}") from None
            if size < 0:
                raise FramingError(f"bad chunk size in the reply's body: {line[:40]!r}")
            self._left = size if size else _TRAILERS

    def _reader_feed(self, data: bytes) -> bool:
        reader = self._reader
        assert reader is not None
        return reader.feed(data)

    def _finish_reader(self, extra: int = 0) -> None:
        reader = self._reader
        assert reader is not None
        self.body = reader.finish()
        self.complete = reader.complete
        self._mode = _DONE
        self.done = True
        self.reusable = self.complete and self._keep and extra == 0


def _status_line(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise FramingError(f"the reply's status line is not HTTP/1.x: {line[:80]!r}")
    return parts[0], int(parts[1])
