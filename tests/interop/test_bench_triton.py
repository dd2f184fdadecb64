"""``inferkit bench`` (the CLI, in a subprocess) against real Triton's add_sub over REST and gRPC, and its reports.

Short steps (a few tenths of a second) at concurrency 1 and 2; the JSON and CSV files are checked for their
steps, a throughput above zero, ordered percentiles and no error. No wall time is asserted.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop import harness

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_bench_add_sub(triton: harness.Server, transport: str, tmp_path: Path) -> None:
    url = triton.http_url if transport == "rest" else f"grpc://{triton.grpc_address}"
    json_path, csv_path = tmp_path / "run.json", tmp_path / "run.csv"
    cmd = [
        sys.executable, "-m", "inferkit.cli", "bench", "-u", url, "-m", "add_sub", "--concurrency", "1,2",
        "--duration", "0.4", "--warmup", "5", "--timeout", "10", "--progress", "none",
        "--json", str(json_path), "--csv", str(csv_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "add_sub" in result.stdout and "concurrency" in result.stdout

    report = json.loads(json_path.read_text())
    steps = report["steps"]
    assert [int(s["level"]) for s in steps] == [1, 2]
    for step in steps:
        assert step["mode"] == "concurrency"
        assert step["requests"] > 0 and step["ok"] == step["requests"], step
        assert step["errors"] == {} and step["error_rate"] == 0, step
        assert step["throughput"] > 0 and step["seconds"] > 0, step
        assert 0 < step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"] <= step["max_ms"], step

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(float(r["level"])) for r in rows] == [1, 2]
    for row, step in zip(rows, steps):
        assert int(row["requests"]) == step["requests"] and int(row["ok"]) == step["ok"]
        assert int(row["error_count"]) == 0 and float(row["throughput"]) > 0
        p50, p90, p99, top = (float(row[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        assert 0 < p50 <= p90 <= p99 <= top, row
