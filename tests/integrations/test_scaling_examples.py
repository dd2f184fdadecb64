"""The scaling-out examples of docs/scaling.md that need an engine: docs/examples/ray_batch.py and ray_generate.py
(in the Ray venv) and docs/examples/spark_batch.py and spark_generate.py (in the Spark venv), each run as a script
against its embedded reference server.
The one-machine example runs in the default suite (tests/docs/test_examples.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_ray_batch_example() -> None:
    pytest.importorskip("ray.data")
    assert "1000 rows scored" in _run("ray_batch.py", "--rows", "1000", "--actors", "2")


def test_ray_generate_example() -> None:
    pytest.importorskip("ray.data")
    stdout = _run("ray_generate.py", "--rows", "120", "--actors", "2")
    assert "120 prompts answered, 0 failed; first: 'Write one line about the sea' -> 'Write one line about '" in stdout


def test_spark_batch_example() -> None:
    pytest.importorskip("pyspark")
    pytest.importorskip("pyarrow")
    stdout = _run("spark_batch.py", "--rows", "1000")
    assert "predict_batch_udf: 1000 rows" in stdout and "mapInPandas: 1000 rows" in stdout


def test_spark_generate_example() -> None:
    pytest.importorskip("pyspark")
    pytest.importorskip("pyarrow")
    stdout = _run("spark_generate.py", "--rows", "120")
    assert "120 prompts answered, 0 failed; first: 'Write one line about the sea' -> 'Write one line about '" in stdout
