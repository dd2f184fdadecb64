"""The `inferkit` command: --version, serve (module:callable loading, a real process) and demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inferkit._version import __version__
from inferkit.cli import load_models, main, parse_tensor_spec
from inferkit.testing import ReferenceServer
from tests.testing.helpers import call

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


def test_demo_runs_and_exits_0():
    result = subprocess.run(
        [sys.executable, "-m", "inferkit.cli", "demo"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reference server ready in" in result.stdout and "== sync REST" in result.stdout
