"""Writing a request to a pooled urllib3 connection and reading its reply, within the attempt's timeouts.

Owns: how a request is laid out on the socket, opening a pooled connection (classifying its failures), the
socket timeout modes (Python's timeout mode, or blocking with the kernel's SO_SNDTIMEO / SO_RCVTIMEO; a read
bounded by an overall deadline), and reading a body into one buffer through a
:class:`~inferkit.codec.http_wire.BodyReader` (size limit, decompression). The parsing of the reply is
``http.client``'s. Used by the direct path of :class:`inferkit._transport.http.SyncTransport`.
Must not import: requests, aiohttp, grpc, inferkit.aio.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import struct
import sys
import time
from typing import Any

import urllib3

from inferkit._retry import AttemptFailed, Budget
from inferkit.codec.http_wire import READ_CHUNK, BodyReader, body_buffer_size
from inferkit.codec.rest_v2 import BodyParts

COALESCE_LIMIT = 1 << 16  # bodies up to this size are sent together with the headers, in one sendall()
# A plain body up to this size is read with one read() of Content-Length bytes; a larger one in pieces that grow
# with what arrived, because http.client (before Python 3.12) allocates the whole announced length up front.
ONE_READ_LIMIT = 1 << 20

# Failures that mean "the peer closed or reset the connection"; on a reused keep-alive connection before any
# byte of the reply arrived they mean the connection was stale (closed by the server while idle): "stale_send" when
# writing the request failed (it was never received), "stale" when the reply failed.
DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class NotHTTPError(ConnectionError):
    """The peer answered with something that is not an HTTP/1.x status line."""

    def __init__(self, line: str) -> None:
        grpc = line.startswith("\x00") or "PRI * HTTP/2" in line  # an HTTP/2 frame header, or its preface
        hint = "this looks like a gRPC (HTTP/2) port: use InferenceGRPCClient" if grpc or not line else ""
        super().__init__(
            f"the reply is not HTTP (it began with {line[:40]!r}); "
            + (hint or "check the URL's host and port: another kind of server answers there")
        )


def wire_pieces(head: bytes, body: bytes | BodyParts | None) -> list[Any]:
    """A request as written to the socket by the direct path: the header block with a
    small body in the same piece (one segment), a large body after it, a large binary body as its parts (each
    tensor straight from the caller's array)."""
    if body is None:
        return [head]
    if isinstance(body, BodyParts):
        return [head, *body.parts]
    if len(body) <= COALESCE_LIMIT:
        return [head + body]
    return [head, body]


def ready_conn(conn: Any, fresh: bool, connect_timeout: float | None) -> bool:
    """Make a pooled connection ready for an attempt: closed first when the attempt needs a fresh one, opened
    when it is not. Returns whether it is a reused keep-alive connection (a failure on it may be "stale")."""
    reused = conn.sock is not None
    if fresh and reused:
        conn.close()
        reused = False
    if conn.sock is None:
        _connect(conn, connect_timeout)
    return reused


def _connect(conn: Any, timeout: float | None) -> None:
    """Open (and for HTTPS, handshake) a pooled urllib3 connection, classifying the failure."""
    conn.timeout = timeout
    try:
        conn.connect()
    except (socket.timeout, TimeoutError) as exc:
        raise AttemptFailed("connect_timeout", exc, timeout=timeout) from None
    except ssl.SSLError as exc:
        raise AttemptFailed("tls", exc) from None
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        cause = exc.__cause__ if isinstance(exc, urllib3.exceptions.HTTPError) else exc
        if isinstance(cause, ssl.SSLError) or isinstance(exc, urllib3.exceptions.SSLError):
            raise AttemptFailed("tls", exc) from None
        # NewConnectionError subclasses ConnectTimeoutError (urllib3 keeps that for compatibility): refused
        # and DNS failures are connection errors, only a real timeout is a ConnectTimeout.
        if isinstance(exc, urllib3.exceptions.NewConnectionError) and not isinstance(cause, socket.timeout):
            raise AttemptFailed("connect", exc) from None
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError) or isinstance(cause, socket.timeout):
            raise AttemptFailed("connect_timeout", exc, timeout=timeout) from None
        raise AttemptFailed("connect", exc) from None


#: Whether the kernel can time out blocking sends and receives for us (the setsockopt struct below is a timeval).
KERNEL_TIMEOUTS = sys.platform.startswith(("linux", "darwin")) and hasattr(socket, "SO_RCVTIMEO")


def _timeval(seconds: float | None) -> bytes:
    if seconds is None:
        return struct.pack("@ll", 0, 0)  # 0: no timeout
    micros = max(1, int(seconds * 1_000_000))
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)


def kernel_timeouts(conn: Any, sock: socket.socket, write: float | None, read: float | None) -> None:
    """Put ``sock`` in blocking mode with the kernel enforcing ``write`` / ``read`` (no call when already so)."""
    state = (sock, write, read)
    if getattr(conn, "_inferkit_kernel_timeouts", None) != state or sock.gettimeout() is not None:
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(write))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(read))
        conn._inferkit_kernel_timeouts = state


class KernelTimeoutSocket:
    """What ``http.client.HTTPResponse`` reads a reply from on a blocking socket with SO_RCVTIMEO: a receive that
    runs out fails with EAGAIN, which this turns into ``socket.timeout`` (socket.makefile would return None
    for it, which http.client would take for a closed connection)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_KernelTimeoutRaw(self._sock))


class _KernelTimeoutRaw(io.RawIOBase):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._sock.recv_into(buffer)
        except BlockingIOError:
            raise socket.timeout("timed out (SO_RCVTIMEO)") from None


class DeadlineSocket:
    """What ``http.client.HTTPResponse`` reads the reply from when an overall deadline applies: each read waits at
    most the read timeout and never past the deadline (then ``socket.timeout``, a read timeout past the deadline)."""

    __slots__ = ("_sock", "_read", "_end")

    def __init__(self, sock: socket.socket, budget: Budget) -> None:
        assert budget.remaining is not None
        self._sock = sock
        self._read = budget.read
        self._end = time.monotonic() + budget.remaining

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineRaw(self._sock, self._read, self._end))


class _DeadlineRaw(io.RawIOBase):
    def __init__(self, sock: socket.socket, read: float | None, end: float) -> None:
        super().__init__()
        self._sock, self._read, self._end = sock, read, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._end - time.monotonic()
        if left <= 0:
            raise socket.timeout("the overall deadline ran out while reading the reply")
        self._sock.settimeout(left if self._read is None or left < self._read else self._read)
        return self._sock.recv_into(buffer)


def read_body(raw: http.client.HTTPResponse, reader: BodyReader) -> tuple[bytes | bytearray, bool]:
    """Read the whole body of an http.client reply into one bytes object through ``reader`` (size limit,
    decompression). Returns the body and whether it was read to its end (only then may the connection be reused).
    """
    length = raw.length
    if reader.plain and length is not None:
        wanted = reader.expect(length)
        if wanted <= ONE_READ_LIMIT:
            if wanted < length:
                return raw.read(wanted), False  # an error body cut at its limit
            return raw.read(), True  # one allocation of exactly Content-Length bytes; a short body raises
        return _read_exact(raw, wanted), wanted == length
    while True:
        chunk = raw.read(READ_CHUNK)
        if not chunk or not reader.feed(chunk):
            break
    return reader.finish(), reader.complete


def _read_exact(raw: http.client.HTTPResponse, wanted: int) -> bytearray:
    """``wanted`` bytes of a large plain body, read into one buffer that grows with the bytes received
    (:func:`~inferkit.codec.http_wire.body_buffer_size`): a hostile Content-Length costs about what the server
    really sends, and a real large body is not copied again (no list of pieces to join). A short body raises
    IncompleteRead. The buffer grows in place (realloc; for large buffers the C library remaps pages rather
    than copying them)."""
    buf = bytearray(body_buffer_size(0, wanted))
    got = 0
    while got < wanted:
        if got == len(buf):
            grow = body_buffer_size(got, wanted) - got
            buf[got:] = bytes(grow)  # the temporary zeros are freed at once; the buffer itself grows in place
        view = memoryview(buf)[got:]
        try:
            n = raw.readinto(view)
        finally:
            view.release()
        if not n:
            raise http.client.IncompleteRead(b"", wanted - got)
        got += n
    return buf


def read_urllib3_body(raw: Any, reader: BodyReader) -> bytes:
    while True:
        chunk = raw.read(READ_CHUNK, decode_content=False)
        if not chunk or not reader.feed(chunk):
            break
    return reader.finish()
