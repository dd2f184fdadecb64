"""The pytest plugin's fixtures, run in a pytester-style subprocess (the plugin is loaded with -p)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

USER_TEST = """
import http.client
from inferkit.testing import Fault
from inferkit.testing.models import add_sub_model


def get(server, path):
    conn = http.client.HTTPConnection(server.host, server.http_port, timeout=10)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


def test_server(inferkit_server):
    assert "iris" in inferkit_server.models
    inferkit_server.inject(Fault(route="live", action="status", status=500, times=None))
    assert get(inferkit_server, "/v2/health/live") == 500


def test_faults_do_not_leak(inferkit_server):
    assert get(inferkit_server, "/v2/health/live") == 200
    assert inferkit_server.count() == 1


def test_factory(inferkit_server_factory):
    server = inferkit_server_factory([add_sub_model()], grpc=False, auth=("X-Key", "k"))
    assert get(server, "/v2/models/add_sub") == 401
"""


def _entry_point_installed() -> bool:
    """Whether inferkit is installed with its ``pytest11`` entry point (then pytest loads the plugin itself)."""
    from importlib.metadata import entry_points

    eps = entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    return any(ep.name == "inferkit" for ep in group)


def test_plugin_fixtures(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    # Installed (as users have it): the entry point loads the plugin, and naming it again with -p would register
    # it twice. From a source tree without an install: load it by name.
    load = [] if _entry_point_installed() else ["-p", "inferkit.testing.pytest_plugin"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            *load,
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
