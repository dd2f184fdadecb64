"""Every Python block of the migration guides (docs/migration/*.md) runs against the reference server.

A block may be preceded by a marker comment that names it and says how it runs::

    <!-- snippet: NAME -->                          runs; CHECKS[NAME] then checks what it computed
    <!-- snippet: NAME; needs: tritonclient -->     runs when that module imports (the other library's code)
    <!-- snippet: NAME; skip: REASON -->            not run (it is only compiled), with the reason shown

A block without a marker runs too. Every block that runs must send at least one request to the server, so a block
that silently does nothing fails; and every name in CHECKS must be on a page, so a check cannot be orphaned.
The URLs of the pages (``http://localhost:8000``, ``localhost:8000`` and ``localhost:8001`` for gRPC) are replaced
with the reference server's.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from inferkit.testing import ReferenceServer

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "migration").glob("*.md"))
BLOCK = re.compile(r"(?:<!--\s*snippet:\s*(?P<marker>[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


@dataclass(frozen=True)
class Snippet:
    page: str
    index: int
    code: str
    name: str | None = None
    needs: str | None = None
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.name or self.index}"


def _parse_marker(marker: str) -> dict[str, str]:
    name, *options = (part.strip() for part in marker.split(";"))
    fields = {"name": name}
    for option in options:
        key, sep, value = option.partition(":")
        if not sep or key.strip() not in ("needs", "skip") or not value.strip():
            raise AssertionError(f"bad snippet marker option {option!r} (use `needs: module` or `skip: reason`)")
        fields[key.strip()] = value.strip()
    return fields


def _snippets(page: Path) -> list[Snippet]:
    text = page.read_text()
    found = []
    for index, match in enumerate(BLOCK.finditer(text)):
        fields = _parse_marker(match["marker"]) if match["marker"] else {}
        found.append(Snippet(page.name, index, match["code"], **fields))
    assert len(found) == text.count("```python"), f"{page.name}: a ```python block was not parsed"
    return found


SNIPPETS = [s for page in PAGES for s in _snippets(page)]


# -- what the named blocks must have computed ----------------------------------------------------------------------


def _add_sub(result: str, output: str, expected: Callable[[Any, Any], Any]) -> Callable[[dict[str, Any]], None]:
    def check(ns: dict[str, Any]) -> None:
        a = ns["a"]
        b = ns.get("b", a)  # the shared memory blocks send `a` twice
        np.testing.assert_array_equal(ns[result].as_numpy(output), expected(a, b))

    return check


def _iris(ns: dict[str, Any]) -> None:
    assert ns["response"].as_numpy("label").tolist() == [b"setosa"]


def _metadata(ns: dict[str, Any]) -> None:
    assert [i["name"] for i in ns["metadata"]["inputs"]] == ["INPUT0", "INPUT1"]


def _both(*checks: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def check(ns: dict[str, Any]) -> None:
        for one in checks:
            one(ns)

    return check


def _v1(ns: dict[str, Any]) -> None:
    assert [p["label"] for p in ns["reply"]["predictions"]] == ["setosa", "virginica"]


def _sequence(ns: dict[str, Any]) -> None:
    assert ns["sums"] == [5, 11] and ns["verbose"] == 0


ADD = _add_sub("response", "OUTPUT0", lambda a, b: a + b)
SUB = _add_sub("response", "OUTPUT1", lambda a, b: a - b)
CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "tritonclient-http": _add_sub("result", "OUTPUT0", lambda a, b: a + b),
    "inferkit-http": ADD,
    "tritonclient-grpc": _both(_add_sub("result", "OUTPUT1", lambda a, b: a - b), _metadata),
    "inferkit-grpc": _both(SUB, _metadata),
    "tritonclient-shm": _add_sub("result", "OUTPUT0", lambda a, b: a + b),
    "inferkit-shm": ADD,
    "kserve-rest": _iris,
    "inferkit-rest": _iris,
    "inferkit-aio": _iris,
    "inferkit-v1": _v1,
    "tritonclient-sequence": _sequence,
    "inferkit-sequence": _sequence,
}


def _localize(code: str, server: ReferenceServer) -> str:
    http_address = server.http_url.split("://", 1)[1]
    code = code.replace("http://localhost:8000", server.http_url).replace("localhost:8000", http_address)
    return code.replace("localhost:8001", server.grpc_address)


# -- the tests -----------------------------------------------------------------------------------------------------


def test_the_pages_have_snippets() -> None:
    assert {p.name for p in PAGES} >= {"tritonclient.md", "kserve.md"}
    for page in PAGES:
        assert [s for s in SNIPPETS if s.page == page.name], f"{page.name} has no ```python block"


def test_every_check_names_a_snippet() -> None:
    names = [s.name for s in SNIPPETS if s.name]
    assert len(names) == len(set(names)), f"two snippets have the same name: {sorted(names)}"
    assert sorted(set(CHECKS) - set(names)) == [], "checks for snippets that no page has"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.id)
def test_snippet_runs(
    snippet: Snippet,
    reference_server: ReferenceServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = compile(_localize(snippet.code, reference_server), snippet.id, "exec")  # a skipped block still compiles
    if snippet.skip:
        pytest.skip(f"{snippet.id} is marked skip: {snippet.skip}")
    if snippet.needs:
        try:
            importlib.import_module(snippet.needs)
        except ImportError:
            pytest.skip(f"{snippet.id} needs {snippet.needs}, which is not installed")
    namespace: dict[str, Any] = {"__name__": f"snippet_{snippet.index}"}
    exec(code, namespace)  # noqa: S102 - our own documentation
    assert reference_server.count() > 0, f"{snippet.id} sent no request to the server (is its URL localhost:8000?)"
    assert capsys.readouterr().out, f"{snippet.id} printed nothing"
    check = CHECKS.get(snippet.name or "")
    if check is not None:
        check(namespace)
