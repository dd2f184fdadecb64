"""Library hygiene: the package's logger and the public namespaces."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

import inferkit
import inferkit.aio
from inferkit.codec import _json
from inferkit.errors import DecodeError


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_the_inferkit_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("inferkit").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers), handlers


def test_an_unconfigured_application_sees_no_inferkit_log_records() -> None:
    # Without the NullHandler, Python's last-resort handler prints warnings to stderr.
    out = _run(
        "import logging, inferkit\n"
        "logging.getLogger('inferkit').warning('parent record')\n"
        "logging.getLogger('inferkit.transport').error('child record')\n"
    )
    assert out.stderr == ""


def test_a_configured_application_still_gets_inferkit_records() -> None:
    out = _run(
        "import logging, sys, inferkit\n"
        "logging.basicConfig(stream=sys.stdout, format='%(name)s %(message)s')\n"
        "logging.getLogger('inferkit').warning('hello')\n"
    )
    assert out.stdout.strip() == "inferkit hello"


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def test_dir_of_inferkit_aio_is_the_public_api_and_dunders() -> None:
    names = dir(inferkit.aio)
    assert [n for n in names if not _dunder(n)] == sorted(inferkit.aio.__all__)
    for stray in ("Any", "TYPE_CHECKING", "annotations", "importlib", "typing"):
        assert stray not in names


def test_inferkit_aio_namespace_has_no_public_stray_names() -> None:
    # In a fresh interpreter: under pytest, assertion rewriting adds its own names to inferkit's modules.
    out = _run("import json, inferkit.aio as aio\nprint(json.dumps(sorted(vars(aio))))")
    public = {n for n in json.loads(out.stdout) if not n.startswith("_")}
    assert public <= set(inferkit.aio.__all__), public - set(inferkit.aio.__all__)


def test_inferkit_aio_stays_lazy_and_its_names_resolve() -> None:
    out = _run(
        "import json, sys\n"
        "import inferkit.aio as aio\n"
        "before = sorted(m for m in sys.modules if m.startswith('inferkit.aio.'))\n"
        "listed = [n for n in dir(aio) if not n.startswith('__')]\n"
        "ns = {}\n"
        "exec('from inferkit.aio import *', ns)\n"
        "star = sorted(n for n in ns if n != '__builtins__')\n"
        "resolved = [getattr(aio, n).__name__ for n in aio.__all__]\n"
        "print(json.dumps([before, listed, star, resolved, sorted(aio.__all__)]))\n"
    )
    before, listed, star, resolved, api = json.loads(out.stdout)
    assert before == []  # importing the package loads none of its client modules
    assert listed == api and star == api
    assert resolved == inferkit.aio.__all__
    try:
        inferkit.aio.NoSuchName  # noqa: B018
    except AttributeError as exc:
        assert "inferkit.aio" in str(exc)
    else:
        raise AssertionError("inferkit.aio.NoSuchName resolved")


def test_deeply_nested_json_is_refused_by_the_installed_json_backend() -> None:
    # orjson before 3.9.15 parses any depth (and a ~20 MB reply of brackets crashes the process); the floor in
    # setup.cfg is the first release with a depth limit, and the stdlib backend raises RecursionError.
    depth = 5000
    with pytest.raises(DecodeError, match="nested too deeply|not valid JSON"):
        _json.loads(b'{"outputs": ' + b"[" * depth + b"]" * depth + b"}")
