"""A tiny raw-socket HTTP/1.1 server for tests that need exact, hostile bytes on the wire.

Owns: ``RawHTTPServer``: 127.0.0.1 on a free port, one accept thread and one thread per connection, every socket
operation bounded by a timeout, ``stop()`` joins everything within a bound. The test supplies
``respond(conn_index, request_index, request_bytes) -> bytes | None``: the exact bytes to send back for that
request (None: close the connection without answering); the connection is closed after a reply that says
``Connection: close``, or after every reply with ``close_after_reply``. Must not import: any inferkit transport.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Optional

Respond = Callable[[int, int, bytes], Optional[bytes]]

_IO_TIMEOUT = 5.0


def http_reply(
    body: bytes,
    *,
    status: str = "200 OK",
    headers: Optional[dict[str, str]] = None,
    content_length: Optional[int] = None,
    close: bool = True,
) -> bytes:
    """The bytes of one HTTP/1.1 reply; ``content_length`` may lie (default: the true length)."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body) if content_length is None else content_length}"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    lines.append("Connection: close" if close else "Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawHTTPServer:
    """Answer each HTTP request with exactly the bytes ``respond`` returns; counts requests."""

    def __init__(self, respond: Respond, *, close_after_reply: bool = False) -> None:
        self._respond = respond
        self._close_after = close_after_reply  # also close after replies without "Connection: close"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self._accept = threading.Thread(target=self._accept_loop, name="raw-http-accept", daemon=True)

    def __enter__(self) -> RawHTTPServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                index = self.connections
                self.connections += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, conn_index: int) -> None:
        conn.settimeout(_IO_TIMEOUT)
        buf = b""
        request_index = 0
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                request, buf = head + b"\r\n\r\n" + buf[:length], buf[length:]
                with self._lock:
                    self.requests += 1
                reply = self._respond(conn_index, request_index, request)
                request_index += 1
                if reply is None:
                    return
                conn.sendall(reply)
                if self._close_after or b"\r\nConnection: close\r\n" in reply.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass
