"""Fault injection and request counters of the reference server.

Owns: the ``Fault`` value, the thread-safe book of pending faults and per-(route, model) counters that the test
thread writes and the server's event loop reads. Must not import: aiohttp, grpc.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from typing import Optional

__all__ = ["Fault", "FaultBook", "ROUTES", "ACTIONS"]

ROUTES = (
    "live",
    "ready",
    "server_metadata",
    "model_metadata",
    "model_ready",
    "infer",
    "generate",
    "generate_stream",
    "model_config",
    "model_statistics",
    "repository_index",
    "repository_load",
    "repository_unload",
    "v1_live",
    "v1_models",
    "v1_ready",
    "v1_predict",
    "v1_explain",
    "stream_infer",
    "shm_status",
    "shm_register",
    "shm_unregister",
    "shared_memory",
    "trace_setting",
    "log_settings",
)

ACTIONS = (
    "status",
    "grpc_status",
    "delay",
    "drop_before",
    "drop_during",
    "truncate",
    "lie_header_length",
    "lie_binary_size",
    "malformed_json",
    "trickle",
)


@dataclasses.dataclass
class Fault:
    """A misbehaviour to inject into the next matching requests.

    Args:
        route: Route name (see ``ROUTES``), or None for every route.
        model: Model name, or None for any model (and for routes without one).
        action: One of ``ACTIONS``:
            ``"status"``: answer HTTP ``status`` with ``{"error": message}`` (gRPC: the matching code), with a
            ``Retry-After`` header (gRPC: ``retry-after`` trailing metadata) when ``retry_after`` is set;
            ``"grpc_status"``: answer gRPC ``code`` (REST: the matching HTTP status);
            ``"delay"``: wait ``seconds``, then answer normally;
            ``"drop_before"``: close the connection without answering;
            ``"drop_during"``: send the headers and part of the body, then reset the connection;
            ``"truncate"``: announce the full Content-Length, send fewer bytes, then close cleanly;
            ``"lie_header_length"``: a wrong ``Inference-Header-Content-Length`` (``value`` or past the body);
            ``"lie_binary_size"``: a wrong ``binary_data_size`` on the first binary output (off by ``value``
            or 4);
            ``"malformed_json"``: a 200 whose JSON body is cut short;
            ``"trickle"``: the body in ``chunk_size``-byte chunks with ``seconds`` pauses.
            Over gRPC, the connection-level actions (drop/truncate) answer UNAVAILABLE ("Socket closed", the
            client's view of a dropped connection), ``malformed_json`` sends bytes that do not parse as the
            reply message, ``lie_binary_size`` sends raw contents of the wrong size, ``trickle`` is a delay.
        status: HTTP status for ``"status"``.
        code: gRPC code name for ``"grpc_status"``, e.g. ``"UNAVAILABLE"``.
        retry_after: Seconds for ``Retry-After``.
        seconds: Delay for ``"delay"``; pause between chunks for ``"trickle"``.
        times: Apply to the next N matching requests; None: until ``reset()``.
        message: Error message (a default names the fault).
        value: Size used by the ``lie_*`` actions.
        chunk_size: Chunk size for ``"trickle"``.
        protocol: ``"rest"``, ``"grpc"`` or None for both.
    """

    route: Optional[str] = None
    model: Optional[str] = None
    action: str = "status"
    status: int = 503
    code: str = "UNAVAILABLE"
    retry_after: Optional[float] = None
    seconds: float = 0.0
    times: Optional[int] = 1
    message: Optional[str] = None
    value: Optional[int] = None
    chunk_size: int = 16
    protocol: Optional[str] = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; expected one of {', '.join(ACTIONS)}")
        if self.route is not None and self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}; expected one of {', '.join(ROUTES)}")
        if self.protocol not in (None, "rest", "grpc"):
            raise ValueError("protocol must be 'rest', 'grpc' or None")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 or None")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")

    def error_message(self) -> str:
        """The message sent with an error answer."""
        if self.message:
            return self.message
        if self.action == "grpc_status":
            return f"injected fault: gRPC {self.code}"
        return f"injected fault: HTTP {self.status}"


class FaultBook:
    """Pending faults and request counters, shared by the test thread and the server loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[list[object]] = []  # [fault, remaining or None]
        self._counts: Counter[tuple[str, Optional[str]]] = Counter()

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append([fault, fault.times])

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._counts.clear()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def arrive(self, route: str, model: Optional[str], protocol: str) -> Optional[Fault]:
        """Count one request and return the fault to apply to it, if any (consuming one of its ``times``)."""
        with self._lock:
            self._counts[(route, model)] += 1
            for entry in self._faults:
                fault, remaining = entry
                assert isinstance(fault, Fault)
                if fault.route not in (None, route) or fault.model not in (None, model):
                    continue
                if fault.protocol not in (None, protocol):
                    continue
                if remaining is not None:
                    entry[1] = int(remaining) - 1  # type: ignore[call-overload]
                    if entry[1] == 0:
                        self._faults.remove(entry)
                return fault
            return None

    def count(self, route: Optional[str] = None, model: Optional[str] = None) -> int:
        with self._lock:
            return sum(
                n
                for (r, m), n in self._counts.items()
                if (route is None or r == route) and (model is None or m == model)
            )

    def pending(self) -> list[Fault]:
        with self._lock:
            return [entry[0] for entry in self._faults]  # type: ignore[misc]
