"""The `inferkit` command: --version, serve (module:callable loading, a real process) and demo."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inferkit._version import __version__
from inferkit.cli import DEMO_CODE, load_models, main, parse_tensor_spec
from inferkit.testing import ReferenceServer
from inferkit.testing.models import demo_models
from tests.testing.helpers import call


def _aiohttp_logs_the_peer() -> bool:
    """Newer aiohttp logs "Error handling request from <peer>"; older ones (3.10.x) do not name the peer."""
    import inspect  # noqa: PLC0415

    from aiohttp import web_protocol  # noqa: PLC0415

    return "from %s" in inspect.getsource(web_protocol.RequestHandler.handle_error)


A_CLIENT = "a client at 127.0.0.1" if _aiohttp_logs_the_peer() else "a client"


def _warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    """WARNING and above, less grpcio's own asyncio poller error: on some grpcio versions (seen with 1.50-1.63) a
    grpc.aio server that an earlier test stopped logs "Exception in callback PollerCompletionQueue._handle_events"
    (BlockingIOError) on the asyncio logger later; it is grpcio's, not the reference server's."""
    return [
        r
        for r in caplog.records
        if r.levelno >= level and not (r.name == "asyncio" and "PollerCompletionQueue" in r.getMessage())
    ]


ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


def test_load_models_from_specs():
    models = load_models(["tests.testing.cli_models:make_models", "tests.testing.cli_models:single"])
    assert [m.name for m in models] == ["add_sub", "echo", "single"]
    (plain,) = load_models(
        ["tests.testing.cli_models:double"],
        [parse_tensor_spec("x:FP32:-1,2")],
        [parse_tensor_spec("y:FP32:-1,2")],
        name="twice",
    )
    assert plain.name == "twice" and plain.inputs[0].shape == (-1, 2) and plain.outputs[0].datatype == "FP32"
    with ReferenceServer([plain], grpc=False) as server:
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        assert call(server, "POST", "/v2/models/twice/infer", body).json()["outputs"][0]["data"] == [2.0, 4.0]
    with pytest.raises(ValueError):
        load_models(["no_colon"])


def test_bad_tensor_spec():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_tensor_spec("x:NOPE")


def test_serve_runs_until_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferkit.cli",
            "serve",
            "tests.testing.cli_models:make_models",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--duration",
            "60",
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.strip().startswith("REST"):
                url = line.split()[1]
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        host, port = url.split("://")[1].split(":")
        import http.client

        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/v2/models/echo")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_serve_reports_a_bad_spec(capsys):
    assert main(["serve", "nonexistent_module_xyz:thing", "--http-port", "0", "--grpc-port", "0"]) == 2
    assert "nonexistent_module_xyz" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_output() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inferkit.cli", "demo"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo_runs_and_exits_0(demo_output: str) -> None:
    assert "reference server ready in" in demo_output and "== sync REST" in demo_output


def test_demo_explains_its_top1_line(demo_output: str) -> None:
    lines = demo_output.splitlines()
    (i,) = [n for n, line in enumerate(lines) if "infer iris top-1 (classification)" in line]
    assert ":0:setosa'" in lines[i]  # score:index:label
    assert lines[i + 1].strip().startswith("(one 'score:index:label' per sample: the probability, index and name")
    assert "InferRequestedOutput('probabilities', class_count=1)" in lines[i + 2]


def _demo_code(demo_output: str) -> str:
    """The code the demo ends with: the indented lines between "in your code:" and "read on:"."""
    tail = demo_output.split("in your code:\n", 1)[1].split("\nread on:", 1)[0]
    return textwrap.dedent(tail).strip() + "\n"


def test_demo_ends_with_the_code_of_its_rest_infer_and_where_to_read_on(demo_output: str) -> None:
    assert "== your turn" in demo_output and "`inferkit serve` serves these models" in demo_output
    assert _demo_code(demo_output) == DEMO_CODE
    read_on = demo_output.split("\nread on:", 1)[1]
    pages = re.findall(r"docs/(\w+)\.md", read_on)
    assert {"quickstart", "rest", "grpc", "async", "cli"} <= set(pages)
    assert all((ROOT / "docs" / f"{page}.md").is_file() for page in pages)


def test_demo_code_is_the_one_on_the_cli_page_and_runs(reference_server: ReferenceServer, capsys) -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "InferenceRESTClient(" in b]
    assert block == DEMO_CODE
    code = block.replace("http://127.0.0.1:8000", reference_server.http_url)
    exec(compile(code, "docs/cli.md", "exec"), {})  # noqa: S102 - our own documentation
    assert capsys.readouterr().out.strip() == "[b'setosa' b'versicolor' b'virginica']"
    assert reference_server.count(route="infer", model="iris") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--http-port", "99999"], "argument --http-port: '99999': expected a port number from 0"),
        (["--grpc-port", "-1"], "argument --grpc-port: '-1': expected a port number from 0"),
        (["--http-port", "http"], "argument --http-port: 'http': expected a port number from 0"),
    ],
)
def test_serve_rejects_bad_ports(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("busy", ["--http-port", "--grpc-port"])
def test_serve_on_a_port_in_use_is_one_line(busy):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--grpc-port" if busy == "--http-port" else "--http-port"
        # A subprocess: a grpc.aio server that failed to bind can crash a later one in the same process at exit.
        result = subprocess.run(
            [sys.executable, "-m", "inferkit.cli", "serve", busy, str(port), other, "0", "--duration", "0.1"],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # grpc's C core may log its own bind error line before it
    assert line.startswith("inferkit serve: cannot listen on 127.0.0.1 (REST port ") and str(port) in line


# -- a client of the wrong protocol on the REST port: one line, no traceback ----------------------------------------

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _send_raw(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return sock.recv(4096)  # aiohttp answers 400 and closes


def _wait_for(caplog: pytest.LogCaptureFixture, text: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)


def test_http2_preface_on_the_rest_port_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ReferenceServer(demo_models()) as server:
        assert _send_raw(server.http_port, HTTP2_PREFACE).startswith(b"HTTP/1.")
        expected = f"to the REST port (a gRPC client? use the gRPC port {server.grpc_port})"
        _wait_for(caplog, expected)
    (record,) = _warnings(caplog)
    assert record.name == "inferkit.testing" and record.exc_info is None
    assert record.getMessage() == f"{A_CLIENT} sent something that is not HTTP/1.1 {expected}"
    assert not [r for r in _warnings(caplog, 0) if r.exc_info] and "Error handling request" not in caplog.text


def test_a_grpc_channel_on_the_rest_port_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    grpc = pytest.importorskip("grpc")
    caplog.set_level(logging.DEBUG)
    with ReferenceServer(demo_models()) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.http_port}")
        try:
            with pytest.raises(grpc.FutureTimeoutError):
                grpc.channel_ready_future(channel).result(timeout=1.5)
        finally:
            channel.close()
        _wait_for(caplog, "a gRPC client?")
    warnings = _warnings(caplog)
    assert [r.getMessage() for r in warnings] == [
        f"{A_CLIENT} sent something that is not HTTP/1.1 to the REST port (a gRPC client? use the gRPC "
        f"port {server.grpc_port})"
    ]  # its reconnects within the minute: DEBUG
    assert not [r for r in _warnings(caplog, 0) if r.exc_info]  # no traceback at any level


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), "sent TLS to the REST port, which is plain HTTP"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "sent a request that is not valid HTTP/1.1"),
    ],
)
def test_other_unparsable_requests_are_one_warning(
    caplog: pytest.LogCaptureFixture, data: bytes, expected: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with ReferenceServer(demo_models(), grpc=False) as server:
        assert _send_raw(server.http_port, data).startswith(b"HTTP/1.")
        _wait_for(caplog, expected)
    (record,) = _warnings(caplog)
    assert expected in record.getMessage() and not [r for r in _warnings(caplog, 0) if r.exc_info]


def test_serve_prints_one_line_for_a_grpc_client_on_the_rest_port() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferkit.cli", "serve", "--http-port", "0", "--grpc-port", "0", "--duration", "60"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ports = {}
        deadline = time.monotonic() + 30
        while len(ports) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.strip().startswith(("REST", "gRPC")):
                kind, url = line.split()[:2]
                ports[kind] = int(url.rsplit(":", 1)[1])
        assert len(ports) == 2, proc.stderr.read() if proc.poll() is not None else "no URLs printed"
        _send_raw(ports["REST"], HTTP2_PREFACE)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert "Traceback" not in err and "BadHttpMessage" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"(a gRPC client? use the gRPC port {ports['gRPC']})"), err
