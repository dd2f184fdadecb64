"""Session fixtures that start real servers (Triton, KServe ModelServer, MLServer) for the interop suite.

Every test collected under tests/interop gets the ``interop`` marker. The server venvs the collected tests need are
built (or found in the cache) once, right after collection, outside any test's timeout. A venv that cannot be built
(e.g. no registry access) skips that server's tests with the reason; under CI (``CI=true``) it fails them instead,
so the suite cannot rot silently. A server that has a venv but does not start is always an error, with its log tail.

Run: ``pytest tests/interop -m interop`` (or ``tox -e interop``); ``-k triton`` etc. selects servers.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop import harness, matrix

SERVERS = ("triton", "kserve", "mlserver")
_venvs: dict[str, harness.VirtualEnv] = {}
_unavailable: dict[str, str] = {}
_timings: dict[str, dict[str, float]] = {}
_start_failures: dict[str, str] = {}
_cells: dict[tuple[str, str, str], matrix.Cell] = {}
_versions: dict[str, str] = {}
WRITE_ENV = "INFERKIT_WRITE_MATRIX"  # =1: write the matrix of this run into docs/compatibility.md
KEYS_ENV = "INFERKIT_MATRIX_KEYS"  # =FILE: with --collect-only, write the collected matrix cells there (docs test)


def in_ci() -> bool:
    # tox 4 does not pass CI through, but keeps it under this name inside the tox environment.
    value = os.environ.get("CI") or os.environ.get("__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI", "")
    return value.strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.interop)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the venvs of the servers that the selected tests use (not the deselected ones)."""
    if session.config.option.collectonly:
        target = os.environ.get(KEYS_ENV)
        if target:
            keys = {_matrix_key(item) for item in session.items} - {None}
            Path(target).write_text(json.dumps(sorted(keys)))  # type: ignore[type-var]
        return
    needed = set()
    for item in session.items:
        for name in getattr(item, "fixturenames", ()):
            if name in SERVERS:
                needed.add(name)
            elif name == "server":
                callspec = getattr(item, "callspec", None)
                if callspec is not None and callspec.params.get("server") in SERVERS:
                    needed.add(callspec.params["server"])
    # pip spends much of a build waiting on downloads and unpacking: build the venvs side by side.
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(needed))) as pool:
        for name, outcome in zip(sorted(needed), pool.map(_build, sorted(needed))):
            if isinstance(outcome, str):
                _unavailable[name] = outcome
                continue
            venv, seconds = outcome
            _venvs[name] = venv
            _timings.setdefault(name, {})["venv_seconds" if venv.built else "venv_cached_seconds"] = seconds


def _build(name: str) -> tuple[harness.VirtualEnv, float] | str:
    started = time.monotonic()
    try:
        venv = harness.ensure_venv(name)
    except harness.EnvironmentUnavailable as exc:
        return str(exc)
    return venv, time.monotonic() - started


def _start(name: str) -> Iterator[harness.Server]:
    if name in _unavailable or name not in _venvs:
        reason = _unavailable.get(name, "venv was not prepared")
        first_line = reason.splitlines()[0] if reason else reason
        if in_ci():
            pytest.fail(f"{name}: server venv unavailable under CI=true: {reason}")
        pytest.skip(f"{name}: server venv could not be built here ({first_line}); see {harness.cache_root()}")
    if name in _start_failures:  # one start attempt per session, not one per test
        pytest.fail(f"{name} did not start (see the first error)", pytrace=False)
    try:
        server = harness.start_server(name, venv=_venvs[name])
    except harness.HarnessError as exc:
        _start_failures[name] = str(exc)
        pytest.fail(str(exc), pytrace=False)
    _timings.setdefault(name, {})["start_to_ready_seconds"] = server.startup_seconds
    _versions[name] = _version_of(server)
    try:
        yield server
    finally:
        stopped = time.monotonic()
        server.stop()
        _timings[name]["stop_seconds"] = time.monotonic() - stopped


@pytest.fixture(scope="session")
def triton() -> Iterator[harness.Server]:
    """Triton 2.51 (nvidia-pytriton wheel) with tests/interop/triton_models."""
    yield from _start("triton")


@pytest.fixture(scope="session")
def kserve() -> Iterator[harness.Server]:
    """KServe ModelServer 0.21 running tests/interop/kserve_server.py."""
    yield from _start("kserve")


@pytest.fixture(scope="session")
def mlserver() -> Iterator[harness.Server]:
    """MLServer 1.7.1 with tests/interop/mlserver_models."""
    yield from _start("mlserver")


@pytest.fixture(scope="session", params=SERVERS)
def server(request: pytest.FixtureRequest) -> harness.Server:
    """Each server in turn (tests parametrized over servers use this one)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(autouse=True)
def _server_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for name in ("server", *SERVERS):
        if name in request.fixturenames:
            server = request.getfixturevalue(name)
            report.sections.append((f"{server.name} log tail", server.log_tail(40)))
            return


def _version_of(server: harness.Server) -> str:
    """The version the server reports in its v2 metadata (what the matrix is labelled with)."""
    try:
        status, body = harness.http_get(server.http_url, "/v2", timeout=5.0)
        meta = json.loads(body) if status == 200 else {}
    except (OSError, ValueError):
        meta = {}
    return str(meta.get("version") or "(version unknown)")


def _matrix_key(item: pytest.Item) -> tuple[str, str, str] | None:
    function = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    if Path(str(item.fspath)).name not in matrix.MATRIX_FILES:
        return None
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec is not None else {}
    return matrix.key_of(function, params, getattr(item, "fixturenames", ()))


def _record(item: pytest.Item, report: pytest.TestReport) -> None:
    key = _matrix_key(item)
    if key is None:
        return
    cell = _cells.setdefault(key, matrix.Cell())
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            cell.xfailed += 1
        elif report.failed:
            cell.failed += 1
        elif report.skipped:
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            cell.skips.append(reason.removeprefix("Skipped: "))
        else:
            cell.passed += 1
            cell.lacking += [str(v) for k, v in report.user_properties if k == matrix.LACKING_PROPERTY]
    elif report.when == "teardown" and report.failed:
        cell.failed += 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    _record(item, report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With INFERKIT_WRITE_MATRIX=1, write this run's matrix into docs/compatibility.md (full runs only)."""
    if os.environ.get(WRITE_ENV, "").strip() not in ("1", "true", "yes") or not _cells:
        return
    expected = {(k, s, c) for k in matrix.KINDS for s in matrix.SERVERS for c in matrix.CALLS}
    missing = expected - set(_cells)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if missing:
        if reporter is not None:
            reporter.write_line(f"interop matrix NOT written: {len(missing)} cells were not run (a partial run?)")
        return
    versions = {name: _versions.get(name, "(version unknown)") for name in matrix.SERVERS}
    stamp = (
        f"Generated from an interop run on {datetime.date.today().isoformat()} (Python "
        f"{'.'.join(map(str, sys.version_info[:3]))}; server versions as reported by `GET /v2`)."
    )
    path = matrix.doc_path(Path(__file__).resolve().parents[2])
    path.write_text(matrix.replace_block(path.read_text(), matrix.render(_cells, versions, stamp)))
    if reporter is not None:
        reporter.write_line(f"interop matrix written to {path}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _timings and not _unavailable:
        return
    terminalreporter.section("interop servers")
    for name in SERVERS:
        if name in _unavailable:
            terminalreporter.write_line(f"{name}: unavailable: {_unavailable[name].splitlines()[0]}")
        if name in _timings:
            parts = ", ".join(f"{k}={v:.1f}" for k, v in sorted(_timings[name].items()))
            venv = _venvs.get(name)
            terminalreporter.write_line(f"{name}: {parts}" + (f" ({venv.path})" if venv else ""))
