"""The interop matrix in docs/compatibility.md cannot drift from the interop suite.

The table is generated from a run (``INFERKIT_WRITE_MATRIX=1 pytest tests/interop -m interop``); this test collects
the interop suite (no server is started) and checks that the committed table has exactly one cell per
(client kind, server, call) the suite's parametrizations produce, no more, no fewer, and no failing cell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop import matrix

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed() -> dict[tuple[str, str, str], str]:
    return matrix.parse_block(matrix.doc_path(ROOT).read_text())


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str, str]]:
    target = tmp_path_factory.mktemp("matrix") / "keys.json"
    env = {**os.environ, "INFERKIT_MATRIX_KEYS": str(target)}
    env.pop("INFERKIT_WRITE_MATRIX", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "interop",
         "tests/interop"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {tuple(key) for key in json.loads(target.read_text())}  # type: ignore[misc]


def test_every_collected_cell_is_in_the_doc_and_back(
    committed: dict[tuple[str, str, str], str], collected: set[tuple[str, str, str]]
) -> None:
    assert collected, "collecting tests/interop produced no matrix cell"
    assert sorted(collected - set(committed)) == [], "cells the suite has but the doc lacks: regenerate the table"
    assert sorted(set(committed) - collected) == [], "cells the doc has but no test produces: regenerate the table"


def test_the_suite_covers_the_full_matrix(collected: set[tuple[str, str, str]]) -> None:
    full = {(k, s, c) for k in matrix.KINDS for s in matrix.SERVERS for c in matrix.CALLS}
    assert sorted(full - collected) == []


def test_no_cell_failed_or_is_missing(committed: dict[tuple[str, str, str], str]) -> None:
    bad = {key: value for key, value in committed.items() if "FAIL" in value or "missing" in value}
    assert bad == {}


def test_every_test_named_in_the_mapping_exists() -> None:
    names = set()
    for file in matrix.MATRIX_FILES:
        source = (ROOT / "tests" / "interop" / file).read_text()
        names |= {line.split("(", 1)[0][4:] for line in source.splitlines() if line.startswith("def test_")}
    stale = set(matrix._BY_FUNCTION) - names
    assert stale == set(), f"matrix.py maps tests that do not exist: {sorted(stale)}"
    unmapped = {n for n in names if matrix.call_of(n, {}) is None}
    assert unmapped == set(), f"matrix tests with no call in matrix.py (add them to _BY_FUNCTION): {sorted(unmapped)}"


def test_the_table_names_each_server_version(committed: dict[tuple[str, str, str], str]) -> None:
    text = matrix.doc_path(ROOT).read_text()
    for server in matrix.SERVERS:
        heading = next(line for line in text.splitlines() if line.startswith(f"### {matrix.SERVER_LABELS[server]}"))
        assert any(ch.isdigit() for ch in heading), heading
