"""Trace context propagation: the caller's OpenTelemetry span travels with every call (W3C ``traceparent``).

Owns: :func:`with_trace`, the per-call headers (REST) or metadata (gRPC) plus the current trace context, written by
OpenTelemetry's own configured propagators (W3C ``traceparent`` / ``tracestate``, and ``baggage``, by default), so
that a server's traces (Triton's ``trace_mode=opentelemetry``) join the caller's.

Cheap and lazy by design: OpenTelemetry is optional (``pip install 'inferkit[opentelemetry]'``) and never imported
by inferkit unless the application has already imported it (``opentelemetry.context`` in ``sys.modules``): a
process that does not use OpenTelemetry can have no current span, so each call then costs one dict look-up. Only
a call made while a valid span is current carries anything (baggage set outside any span is not sent).
The clients turn it off with ``RESTConfig(propagate_trace=False)`` / ``InferenceGRPCClient(propagate_trace=False)``.
Must not import at module level: opentelemetry, requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Optional

__all__ = ["with_trace"]

_inject: Optional[Callable[[dict[str, str]], None]] = None
_current_span: Callable[[], Any] = lambda: None  # noqa: E731 - replaced by OpenTelemetry's on first use


def _injector() -> Callable[[dict[str, str]], None]:
    global _inject, _current_span
    if _inject is None:
        try:
            from opentelemetry import propagate, trace  # noqa: PLC0415 - optional, and only once the app uses it
        except ImportError:  # a partial install: nothing to propagate
            _inject = _no_inject
        else:
            _current_span = trace.get_current_span
            _inject = propagate.inject
    return _inject


def _no_inject(carrier: dict[str, str]) -> None:
    return None


def with_trace(headers: Any) -> Any:
    """``headers`` (a mapping, pairs or None) plus the current trace context (``headers`` itself when there is
    none); the caller's own headers win over the injected ones (a ``traceparent`` set by hand is kept)."""
    if "opentelemetry.context" not in sys.modules:
        return headers
    inject = _injector()
    span = _current_span()
    if span is None or not span.get_span_context().is_valid:
        return headers  # no span is current: nothing to join (the propagators' walk costs ~2 us, skipped)
    carrier: dict[str, str] = {}
    inject(carrier)
    if not carrier:
        return headers  # no valid span is current
    if headers:
        carrier.update(headers.items() if isinstance(headers, Mapping) else headers)
    return carrier
