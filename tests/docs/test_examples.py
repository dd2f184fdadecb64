"""Every runnable example under docs/examples runs against the reference server, so none can rot.

Most examples are imported and their ``main(argv)`` called in-process (fast); two are run as scripts in a
subprocess (with a timeout) to cover the ``__main__`` path and the URL taken from the environment. An example whose
client or optional framework is not available yet is skipped with the reason.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from inferkit.testing import ReferenceServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"

#: Every example file and where it is exercised; a new example without an entry fails test_every_example_is_tested.
COVERED = {
    "shared_client.py": "test_flask_view, test_django_view, test_views_share_one_client",
    "flask_app.py": "test_flask_view, test_flask_script",
    "django_app.py": "test_django_view, test_views_share_one_client",
    "batch_progress.py": "test_batch_progress",
    "async_fanout.py": "test_async_fanout",
    "mtls.py": "test_mtls",
    "grpc_stream.py": "test_grpc_stream, test_grpc_stream_script",
    "ray_batch.py": "tests/integrations/test_scaling_examples.py (needs Ray: .ci/run's ray step)",
    "ray_generate.py": "tests/integrations/test_scaling_examples.py (needs Ray: .ci/run's ray step)",
    "spark_batch.py": "tests/integrations/test_scaling_examples.py (needs Spark: .ci/run's spark step)",
    "spark_generate.py": "tests/integrations/test_scaling_examples.py (needs Spark: .ci/run's spark step)",
    "scale_one_machine.py": "test_scale_one_machine",
}


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Import an example module by file name (docs/examples on sys.path, as when run as a script)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    loaded: list[Any] = []

    def load(name: str) -> Any:
        module = importlib.import_module(name)
        loaded.append(module)
        return module

    yield load
    shared = sys.modules.get("shared_client")
    if shared is not None:
        shared.close()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _run_script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_example_is_tested() -> None:
    present = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert present, "no examples found"
    missing = [name for name in present if name not in COVERED]
    assert not missing, f"examples without a test: {missing} (add a test and an entry to COVERED)"


# -- web apps: Flask and Django views sharing one client --------------------------------------------------------


def _point_at(monkeypatch: pytest.MonkeyPatch, server: ReferenceServer, model: str = "iris") -> None:
    monkeypatch.setenv("INFERKIT_URL", server.http_url)
    monkeypatch.setenv("INFERKIT_MODEL", model)


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1]]


def test_flask_view(examples: Any, reference_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask", reason="Flask is not installed")
    _point_at(monkeypatch, reference_server)
    app = examples("flask_app").create_app()
    client = app.test_client()
    ok = client.post("/classify", json={"rows": ROWS})
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json() == {"labels": ["setosa", "virginica"]}
    bad = client.post("/classify", json={"rows": [[1.0, 2.0]]})
    assert bad.status_code == 400
    assert reference_server.count(route="infer", model="iris") == 1  # bad input never reached the server
    monkeypatch.setenv("INFERKIT_MODEL", "no_such_model")
    missing = client.post("/classify", json={"rows": ROWS})
    assert missing.status_code == 502
    assert "NotFound" in missing.get_json()["error"] or "not found" in missing.get_json()["error"]


def test_django_view(examples: Any, reference_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("django", reason="Django is not installed")
    _point_at(monkeypatch, reference_server)
    module = examples("django_app")
    module.setup()
    from django.test import Client

    client = Client()
    ok = client.post("/classify", data={"rows": ROWS}, content_type="application/json")
    assert ok.status_code == 200, ok.content
    assert ok.json() == {"labels": ["setosa", "virginica"]}
    assert client.post("/classify", data="not json", content_type="application/json").status_code == 400
    assert client.get("/classify").status_code == 405


def test_views_share_one_client(
    examples: Any, reference_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("flask", reason="Flask is not installed")
    pytest.importorskip("django", reason="Django is not installed")
    _point_at(monkeypatch, reference_server)
    shared = examples("shared_client")
    flask_app = examples("flask_app").create_app()
    examples("django_app").setup()
    from django.test import Client

    assert flask_app.test_client().post("/classify", json={"rows": ROWS}).status_code == 200
    first = shared.get_client()
    assert Client().post("/classify", data={"rows": ROWS}, content_type="application/json").status_code == 200
    assert shared.get_client() is first  # one client (one pool) for both frameworks and every thread


def test_flask_script(reference_server: ReferenceServer) -> None:
    pytest.importorskip("flask", reason="Flask is not installed")
    result = _run_script("flask_app.py", "--selftest", INFERKIT_URL=reference_server.http_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200 ") and "setosa" in result.stdout


# -- batch job, async fan-out, mTLS, gRPC stream --------------------------------------------------------------


def test_batch_progress(examples: Any, reference_server: ReferenceServer, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm", reason="tqdm (the progress extra) is not installed")
    from inferkit.rest_client import InferenceRESTClient

    if not hasattr(InferenceRESTClient, "infer_many"):
        pytest.skip("the sync clients do not have infer_many yet (inferkit.batching.BatchMixin not mixed in)")
    module = examples("batch_progress")
    assert module.main(["--url", reference_server.http_url, "--rows", "60", "--concurrency", "4"]) == 0
    out = capsys.readouterr()
    assert "classified 60 rows" in out.out and "failed: 0" in out.out
    assert "req" in out.err  # the tqdm bar went to stderr
    assert reference_server.count(route="infer", model="iris") == 60


def test_async_fanout(examples: Any, reference_server: ReferenceServer, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("aiohttp", reason="aiohttp (the aio extra) is not installed")
    try:
        from inferkit.aio import InferenceRESTClient  # noqa: F401
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"inferkit.aio.InferenceRESTClient is not available yet: {exc}")
    module = examples("async_fanout")
    models = "iris,identity_fp32,no_such_model"
    assert module.main(["--url", reference_server.http_url, "--models", models]) == 0
    out = capsys.readouterr().out
    assert "label=[b'versicolor']" in out
    assert "identity_fp32: OUTPUT0=" in out
    assert "no_such_model: NotFoundError" in out


def test_mtls(examples: Any, tls_material: Any, capsys: pytest.CaptureFixture[str]) -> None:
    module = examples("mtls")
    with ReferenceServer([], grpc=True, tls=tls_material.server_mutual) as server:
        argv = ["--url", server.http_url, "--grpc-url", server.grpc_url, "--ca", tls_material.ca_file]
        argv += ["--cert", tls_material.client_cert_file, "--key", tls_material.client_key_file]
        assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "REST  https://" in out and "server live = True" in out
    assert "gRPC  grpcs://" in out
    assert "without a client certificate: refused" in out


def test_grpc_stream(examples: Any, reference_server: ReferenceServer, capsys: pytest.CaptureFixture[str]) -> None:
    module = examples("grpc_stream")
    assert module.main(["--url", reference_server.grpc_url]) == 0
    out = capsys.readouterr().out
    assert "first: OUT=30 IDX=2" in out and "second: OUT=8 IDX=1" in out
    assert "stream_infer: [1, 2, 3, 4]" in out
    assert "error: " in out and "after-the-error: OUT=5" in out
    assert "received 9 streamed responses" in out


def test_grpc_stream_script(reference_server: ReferenceServer) -> None:
    result = _run_script("grpc_stream.py", INFERKIT_GRPC_URL=reference_server.grpc_url)
    assert result.returncode == 0, result.stderr
    assert "received 9 streamed responses" in result.stdout


def test_scale_one_machine(examples: Any) -> None:
    assert examples("scale_one_machine").main(["--rows", "3000", "--concurrency", "4"]) > 0
