"""The API reference lists every public name, and the error reference every exception class with its status.

Checked textually on the Markdown sources (no Sphinx needed), plus an import of every autodoc target so a typo in
docs/api.md fails here even when the Sphinx build is not run.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

import inferkit
from inferkit import errors

DOCS = Path(__file__).resolve().parents[2] / "docs"
API = (DOCS / "api.md").read_text()
DIRECTIVE = re.compile(r"^\.\. (?:auto|py:)(?:class|function|data|exception|method|attribute|module)::\s+(\S+)", re.M)
TARGETS = DIRECTIVE.findall(API)


def _documented(module: str, name: str) -> bool:
    """Whether api.md has a directive for ``name`` (as ``module.name`` or re-exported under another module)."""
    return any(t == f"{module}.{name}" or (t.startswith("inferkit.") and t.rsplit(".", 1)[-1] == name) for t in TARGETS)


def _resolve(target: str) -> Any:
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                raise  # a dependency of an existing module is missing: a real failure
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(target)


@pytest.mark.parametrize("name", inferkit.__all__)
def test_every_public_name_is_in_the_api_reference(name: str) -> None:
    assert _documented("inferkit", name), f"inferkit.{name} has no autodoc/py directive in docs/api.md"


def test_every_aio_public_name_is_in_the_api_reference() -> None:
    aio = importlib.import_module("inferkit.aio")
    names = getattr(aio, "__all__", None)
    if names is None:
        pytest.skip("inferkit.aio has no __all__ yet")
    missing = [n for n in names if f"inferkit.aio.{n}" not in TARGETS]
    assert not missing, f"inferkit.aio names missing from docs/api.md: {missing}"


def test_every_error_class_is_in_the_api_reference() -> None:
    missing = [
        n for n in errors.__all__ if isinstance(getattr(errors, n), type) and not _documented("inferkit.errors", n)
    ]
    assert not missing, f"inferkit.errors classes missing from docs/api.md: {missing}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_api_target_imports(target: str) -> None:
    """Each directive names something that exists (aio modules not written yet are skipped, as in conf.py)."""
    if target.startswith("inferkit.aio."):
        module = ".".join(target.split(".")[:3])
        if target.count(".") >= 3 and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} does not exist yet")
    try:
        obj = _resolve(target)
    except (ImportError, AttributeError) as exc:
        if target.startswith("inferkit.aio."):
            pytest.skip(f"{target} is not available yet: {exc}")
        raise AssertionError(f"docs/api.md names {target}, which does not exist: {exc}") from exc
    assert obj is not None


# -- the error reference -------------------------------------------------------------------------------------------


def _error_rows() -> dict[str, str]:
    rows = {}
    for line in (DOCS / "errors.md").read_text().splitlines():
        match = re.match(r"^\| `(\w+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


ERROR_CLASSES = [n for n in errors.__all__ if isinstance(getattr(errors, n), type)]


@pytest.mark.parametrize("name", ERROR_CLASSES)
def test_every_error_class_has_a_row_with_its_status(name: str) -> None:
    rows = _error_rows()
    assert name in rows, f"docs/errors.md has no table row for {name}"
    cells = [c.strip() for c in rows[name].strip("|").split("|")]
    cls = getattr(errors, name)
    status = cls.__dict__.get("http_status")
    if status is not None:
        assert cells[1] == str(status), f"{name}: the HTTP status cell is {cells[1]!r}, expected {status}"
        for code in cls.__dict__.get("grpc_codes", ()):
            assert code in cells[2], f"{name}: gRPC code {code} missing from its row"
    else:
        assert not re.fullmatch(r"\d{3}", cells[1]), f"{name} has no HTTP status of its own, the row says {cells[1]}"


def test_the_error_tree_in_the_docs_names_every_class() -> None:
    text = (DOCS / "errors.md").read_text()
    tree = text.split("## The tree", 1)[1].split("##", 1)[0]
    named = set(re.findall(r"\b([A-Z]\w+)", tree))
    with_own_row = {"ClientRequestError", "ServerError"}
    missing = [
        n
        for n in ERROR_CLASSES
        if n not in named and n not in with_own_row and getattr(errors, n).__dict__.get("http_status") is None
    ]
    assert not missing, f"classes missing from the tree in docs/errors.md: {missing}"
