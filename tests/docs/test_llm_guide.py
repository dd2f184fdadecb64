"""docs/llm.md: every Python block runs, in page order and one namespace (as a reader would), against the reference
server; the Flask and Django views it defines are then called through their test clients."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from inferkit.testing import Fault, ReferenceServer

PAGE = Path(__file__).resolve().parents[2] / "docs" / "llm.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


@pytest.fixture
def guide(reference_server: ReferenceServer) -> dict[str, Any]:
    pytest.importorskip("flask", reason="Flask is not installed")
    pytest.importorskip("django", reason="Django is not installed")
    namespace: dict[str, Any] = {"__name__": "llm_guide"}
    for i, block in enumerate(_blocks()):
        code = block.replace("http://127.0.0.1:8000", reference_server.http_url)
        code = code.replace("127.0.0.1:8001", reference_server.grpc_address)
        exec(compile(code, f"docs/llm.md block {i + 1}", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def test_every_block_runs(guide: dict[str, Any]) -> None:
    assert len(_blocks()) >= 9
    assert guide["words"] == ["same ", "events"]
    assert guide["text"] == "it works"  # the last block, with its own server


def test_flask_view_streams_the_words(guide: dict[str, Any], reference_server: ReferenceServer) -> None:
    app = guide["app"]
    reply = app.test_client().post("/chat", json={"prompt": "streamed into flask"})
    assert reply.status_code == 200 and reply.get_data(as_text=True) == "streamed into flask"
    reference_server.inject(Fault(route="generate_stream", action="status", status=400, times=1))
    assert app.test_client().post("/chat", json={"prompt": "x"}).status_code == 502  # failed before the first token


def test_django_view_streams_the_words(guide: dict[str, Any]) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, SECRET_KEY="docs-test", ALLOWED_HOSTS=["testserver"])  # noqa: S106
        django.setup()
    from django.test import RequestFactory

    request = RequestFactory().post("/chat", data={"prompt": "streamed into django"}, content_type="application/json")
    response = guide["chat_view"](request)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"streamed into django"
