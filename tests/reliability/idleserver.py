"""A raw HTTP/1.1 server on 127.0.0.1 that does something to connections left idle, for keep-alive tests.

Owns: ``IdleServer``: answers every request with fixed bytes, and when a connection has had no request for
``idle_after`` seconds either resets it (``mode="reset"``: closed with SO_LINGER 0, as a server or balancer dropping
idle connections) or blackholes it (``mode="blackhole"``: stops reading and answering but never closes it, as a
NAT or firewall that forgot the flow). Counts connections and requests; ``stop()`` releases every socket.
Must not import: any inferkit transport.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

__all__ = ["IdleServer"]


class IdleServer:
    def __init__(self, reply: bytes, *, idle_after: float, mode: str = "reset") -> None:
        assert mode in ("reset", "blackhole")
        self._reply = reply
        self._idle_after = idle_after
        self._mode = mode
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.requests = 0
        self.idled = 0  # connections reset or blackholed
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> IdleServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        last = time.monotonic()
        conn.settimeout(0.02)
        while not self._stop.is_set():
            if b"\r\n\r\n" in buf:
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[length:]
                with self._lock:
                    self.requests += 1
                try:
                    conn.sendall(self._reply)
                except OSError:
                    return
                last = time.monotonic()
                continue
            if time.monotonic() - last > self._idle_after:
                with self._lock:
                    self.idled += 1
                if self._mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    with self._lock:
                        self._conns.remove(conn)
                    conn.close()
                else:
                    self._stop.wait()  # never reads nor answers again; closed by stop()
                return
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
