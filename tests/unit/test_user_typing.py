"""What a user's type checker and ``inspect`` see of the four client classes (sync and aio, REST and gRPC).

``InferenceRESTClient(...)`` must be typed as the client, not ``Any``, and ``inspect.signature`` must show the real
constructor parameters: pickling support (``RebuildOnUnpickle``) must not hide either.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CLIENTS = {
    "InferenceRESTClient": ("inferkit", "inferkit.rest_client.InferenceRESTClient", "http://x"),
    "InferenceGRPCClient": ("inferkit", "inferkit.grpc_client.InferenceGRPCClient", "x:8001"),
    "AioRESTClient": ("inferkit.aio", "inferkit.aio.rest_client.InferenceRESTClient", "http://x"),
    "AioGRPCClient": ("inferkit.aio", "inferkit.aio.grpc_client.InferenceGRPCClient", "x:8001"),
}

SNIPPET = """\
from inferkit import InferenceGRPCClient, InferenceRESTClient
from inferkit.aio import InferenceGRPCClient as AioGRPCClient
from inferkit.aio import InferenceRESTClient as AioRESTClient

reveal_type(InferenceRESTClient("http://x"))
reveal_type(InferenceGRPCClient("x:8001"))
reveal_type(AioRESTClient("http://x"))
reveal_type(AioGRPCClient("x:8001"))
"""


def test_a_type_checker_sees_each_client_class(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra)")
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--follow-imports=silent",  # inferkit's own strictness is checked elsewhere; only the snippet's types here
        "--cache-dir",
        str(tmp_path / "mypy_cache"),
        "-c",
        SNIPPET,
    ]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    revealed = re.findall(r'Revealed type is "([^"]+)"', out.stdout)
    assert revealed == [full for _, full, _ in CLIENTS.values()], out.stdout + out.stderr
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", CLIENTS)
def test_inspect_shows_the_real_constructor_signature(name: str) -> None:
    module_name, full, _ = CLIENTS[name]
    module, _, cls_name = full.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except ImportError as exc:  # an optional dependency of that client (grpc, aiohttp) is missing
        pytest.skip(str(exc))
    assert getattr(importlib.import_module(module_name), cls_name) is cls
    params = inspect.signature(cls).parameters
    assert list(params)[0] == "url", params
    assert "args" not in params and "kwargs" not in params, params
    expected = {"config", "session"} if "REST" in cls_name else {"timeout", "retries", "use_ssl", "channel_args"}
    assert expected <= set(params), params
