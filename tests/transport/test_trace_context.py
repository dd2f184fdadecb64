"""W3C trace context: with an OpenTelemetry span current, every call of the four clients carries its ``traceparent``
(an HTTP header; gRPC metadata), as the reference server records it; off with ``propagate_trace=False``; nothing is
imported when the application does not use OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any, Iterator

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("grpc")
pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import inferkit.aio as aio  # noqa: E402
from inferkit import InferenceGRPCClient, InferenceRESTClient, RESTConfig  # noqa: E402
from tests.transport.cases import add_sub_request  # noqa: E402

KINDS = ("rest", "grpc", "aio_rest", "aio_grpc")
_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
_TRACER = _PROVIDER.get_tracer("inferkit-tests")  # a provider of our own: the global one is left alone


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _call(kind: str, server: Any, method: str, *args: Any, propagate: bool = True, **kwargs: Any) -> Any:
    """``method`` on a fresh client of ``kind`` (aio clients run in their own loop, in the caller's context)."""
    if kind == "rest":
        with InferenceRESTClient(server.http_url, RESTConfig(propagate_trace=propagate)) as client:
            return getattr(client, method)(*args, **kwargs)
    if kind == "grpc":
        with InferenceGRPCClient(server.grpc_address, propagate_trace=propagate) as client:
            return getattr(client, method)(*args, **kwargs)

    async def main() -> Any:
        if kind == "aio_rest":
            c: Any = aio.InferenceRESTClient(server.http_url, RESTConfig(propagate_trace=propagate))
        else:
            c = aio.InferenceGRPCClient(server.grpc_address, propagate_trace=propagate)
        async with c:
            return await getattr(c, method)(*args, **kwargs)

    return asyncio.run(main())  # asyncio.run copies the current context: the span stays current in the task


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["infer", "get_model_metadata", "get_log_settings"])
def test_every_call_carries_the_current_span(kind: str, method: str, reference_server: Any, spans: Any) -> None:
    args = {"infer": (add_sub_request()[0],), "get_model_metadata": ("add_sub",), "get_log_settings": ()}[method]
    with _TRACER.start_as_current_span("caller") as span:
        _call(kind, reference_server, method, *args)
    assert reference_server.last_headers()["traceparent"] == _traceparent(span)
    assert [s.name for s in spans.get_finished_spans()] == ["caller"]


@pytest.mark.parametrize("kind", KINDS)
def test_no_span_no_header_and_off_switch(kind: str, reference_server: Any) -> None:
    _call(kind, reference_server, "is_server_live")
    assert "traceparent" not in reference_server.last_headers()
    with _TRACER.start_as_current_span("caller"):
        _call(kind, reference_server, "get_model_metadata", "add_sub", propagate=False)
    assert "traceparent" not in reference_server.last_headers()


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_a_traceparent_of_the_callers_own_wins(kind: str, reference_server: Any) -> None:
    mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with _TRACER.start_as_current_span("caller"):
        _call(kind, reference_server, "get_model_metadata", "add_sub", headers={"traceparent": mine})
    assert reference_server.last_headers()["traceparent"] == mine


def test_nothing_is_imported_without_opentelemetry_in_use() -> None:
    code = (
        "import sys\n"
        "from inferkit import InferenceRESTClient\n"
        "from inferkit.testing import ReferenceServer\n"
        "from inferkit.testing.models import add_sub_model\n"
        "with ReferenceServer([add_sub_model()], grpc=False) as s, InferenceRESTClient(s.http_url) as c:\n"
        "    c.get_model_metadata('add_sub')\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
