"""The embedded reference server: REST (aiohttp) and gRPC (grpc.aio) on one event loop in a background thread.

Owns: ``ReferenceServer`` (start/stop, URLs, fault injection and counters) and ``ServerTLS``.
Must not import at module level: aiohttp, grpc (they load in ``start()``, so ``import inferkit.testing`` is cheap
and a missing extra gives an ImportError naming it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import ssl
import tempfile
import threading
import time
from typing import Any, Iterable, Optional

from inferkit.testing._engine import Engine
from inferkit.testing._faults import Fault, FaultBook
from inferkit.testing._model import Model

__all__ = ["ReferenceServer", "ServerTLS"]


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """TLS material of the server, as PEM bytes.

    Args:
        cert_pem: The server certificate chain (leaf first).
        key_pem: The server's private key.
        client_ca_pem: When set, clients must present a certificate signed by this CA (mutual TLS).
    """

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: Optional[bytes] = None

    @classmethod
    def from_trustme(
        cls, ca: Any, *, client_ca: Any = None, hostnames: Iterable[str] = ("127.0.0.1", "localhost")
    ) -> ServerTLS:
        """Issue a server certificate from a ``trustme.CA`` (and require client certificates of ``client_ca``)."""
        cert = ca.issue_cert(*hostnames)
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        return cls(chain, cert.private_key_pem.bytes(), client_ca.cert_pem.bytes() if client_ca is not None else None)

    @property
    def mutual(self) -> bool:
        """Whether client certificates are required."""
        return self.client_ca_pem is not None

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side SSLContext (the PEM files live on disk only while they load)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory(prefix="inferkit-tls-") as tmp:
            cert_path = os.path.join(tmp, "cert.pem")
            key_path = os.path.join(tmp, "key.pem")
            with open(cert_path, "wb") as f:
                f.write(self.cert_pem)
            with open(key_path, "wb") as f:
                f.write(self.key_pem)
            context.load_cert_chain(cert_path, key_path)
        if self.client_ca_pem is not None:
            context.load_verify_locations(cadata=self.client_ca_pem.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class ReferenceServer:
    """A V2/v1 inference server for tests and demos, serving Python callables as models.

    REST and gRPC run on one asyncio loop in a background thread, bound to ``host`` (127.0.0.1) on free ports
    unless ports are given. Model callables run in a thread pool, so a slow model never blocks other requests.
    ``stop()`` leaves no thread, socket or file descriptor behind.

    Example:
        >>> with ReferenceServer([add_sub_model()]) as server:
        ...     server.inject(Fault(route="infer", action="status", status=503, times=2))
        ...     ...  # call server.http_url / server.grpc_url
        ...     server.count(route="infer")

    Args:
        models: The models to serve.
        grpc: Also serve gRPC (needs ``grpcio``).
        rest: Serve REST (needs ``aiohttp``).
        tls: Serve HTTPS and gRPC over TLS (mutual TLS when ``tls.client_ca_pem`` is set).
        auth: ``(header, value)``: requests without exactly that header get 401 / UNAUTHENTICATED.
        host: Address to bind.
        http_port: REST port (0: a free one).
        grpc_port: gRPC port (0: a free one).
        max_workers: Threads running model callables.
        start_timeout: Seconds ``start()`` waits for the server to listen.
    """

    def __init__(
        self,
        models: Iterable[Model] = (),
        *,
        grpc: bool = True,
        rest: bool = True,
        tls: ServerTLS | None = None,
        auth: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
        max_workers: int = 8,
        start_timeout: float = 10.0,
    ) -> None:
        self._models = list(models)
        self._engine = Engine(self._models, max_workers=max_workers)
        self._book = FaultBook()
        self._want_grpc = grpc
        self._want_rest = rest
        self.tls = tls
        self.auth = auth
        self.host = host
        self._http_port_wanted = http_port
        self._grpc_port_wanted = grpc_port
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> ReferenceServer:
        """Start serving; returns once both front ends listen (raises what went wrong otherwise)."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        if self._engine.stopping.is_set():
            self._engine = Engine(self._models, max_workers=self._engine._max_workers)
        t0 = time.perf_counter()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="inferkit-reference-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            self.stop()
            raise TimeoutError(f"reference server did not start within {self._start_timeout} s")
        if self._error is not None:
            error = self._error
            self._thread.join(self._start_timeout)
            self._thread = None
            raise error
        self.startup_seconds = time.perf_counter() - t0
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close every connection and join the server thread (bounded by ``timeout``)."""
        thread = self._thread
        if thread is None:
            return
        self._engine.stopping.set()  # wake models sleeping in interruptible_sleep
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed in between
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"reference server thread did not stop within {timeout} s")
        self._thread = None
        if self._want_grpc:
            # grpc.aio keeps a process-wide poller thread until its last server or channel object is freed, and
            # a stopped server can sit in a reference cycle: collect now so no thread outlives stop().
            gc.collect()

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    # -- addresses --------------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS)."""
        if self.http_port is None:
            raise RuntimeError("REST is not running (start the server, with rest=True)")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        """``127.0.0.1:PORT``."""
        if self.grpc_port is None:
            raise RuntimeError("gRPC is not running (start the server, with grpc=True)")
        return f"{self.host}:{self.grpc_port}"

    @property
    def grpc_url(self) -> str:
        """``grpc://127.0.0.1:PORT`` (``grpcs://`` with TLS)."""
        return f"{'grpcs' if self.tls else 'grpc'}://{self.grpc_address}"

    # -- models, faults, counters -----------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, Model]:
        """The served models by name."""
        return dict(self._engine.models)

    def inject(self, fault: Fault) -> Fault:
        """Apply ``fault`` to the next matching requests (REST and gRPC)."""
        self._book.inject(fault)
        return fault

    def count(self, route: str | None = None, model: str | None = None) -> int:
        """Requests received for ``route`` and ``model`` (None: any), faulted ones included."""
        return self._book.count(route, model)

    def reset(self) -> None:
        """Clear faults, counters and statistics, unregister every shared memory region, load every model again (with
        its own configuration), and restore the trace and log settings."""
        self._book.reset()
        self._engine.shm.unregister(None)
        self._engine.reset_statistics()
        self._engine.settings.reset()
        self._engine.config_overrides.clear()
        self._engine.abandoned.clear()
        for name in self._engine.loaded:
            self._engine.loaded[name] = True

    def abandoned(self, route: str | None = None) -> list[str]:
        """The transports (``"rest"``, ``"grpc"``) of the calls to ``route`` (None: any) whose client went away
        before the reply: a cancelled gRPC call, or an HTTP connection closed while the request ran."""
        return [t for r, t in self._engine.abandoned if route is None or r == route]

    def last_headers(self) -> dict[str, str]:
        """The headers (REST) or metadata (gRPC) of the last request received, names in lower case (e.g. to check
        that a client sent ``traceparent``)."""
        return dict(self._engine.last_headers)

    def load(self, name: str) -> None:
        """Load a model (as ``POST /v2/repository/models/{name}/load`` does)."""
        self._engine.load(name)

    def unload(self, name: str) -> None:
        """Unload a model (as ``POST /v2/repository/models/{name}/unload`` does)."""
        self._engine.unload(name)

    # -- the server thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(); the thread must end cleanly either way
            if not self._ready.is_set():
                self._error = exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                self._engine.shutdown()
                self._loop = None
                self._stop_event = None
                loop.close()
                self._ready.set()

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        runner = None
        grpc_server = None
        try:
            if self._want_rest:
                try:
                    from aiohttp import web  # noqa: PLC0415 - optional dependency, loaded when serving
                except ImportError as exc:
                    raise ImportError(
                        "the reference server's REST front end needs aiohttp: pip install 'inferkit[aio]'"
                    ) from exc
                from inferkit.testing._rest import RequestLog, build_app  # noqa: PLC0415

                app = build_app(self._engine, self._book, self.auth)
                runner = web.AppRunner(
                    app,
                    access_log=None,
                    shutdown_timeout=1.0,
                    handle_signals=False,
                    logger=RequestLog(lambda: self.grpc_port),  # a gRPC client on the REST port: one line
                )
                await runner.setup()
                ssl_context = self.tls.ssl_context() if self.tls else None
                site = web.TCPSite(
                    runner, self.host, self._http_port_wanted, ssl_context=ssl_context, reuse_address=True
                )
                await site.start()
                self.http_port = int(runner.addresses[0][1])
            if self._want_grpc:
                try:
                    from inferkit.testing._grpc import start_grpc_server  # noqa: PLC0415
                except ImportError as exc:
                    raise ImportError(
                        "the reference server's gRPC front end needs grpcio: pip install 'inferkit[grpc]' "
                        "(or ReferenceServer(..., grpc=False))"
                    ) from exc

                grpc_server, self.grpc_port = await start_grpc_server(
                    self._engine, self._book, self.auth, self.tls, self.host, self._grpc_port_wanted
                )
            self._ready.set()
            await self._stop_event.wait()
        finally:
            self._engine.stopping.set()
            if grpc_server is not None:
                await grpc_server.stop(grace=0.2)
            if runner is not None:
                await runner.cleanup()
