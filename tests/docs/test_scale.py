"""docs/scale.md: every Python snippet runs (against the reference server where it calls one), and the table of
defaults states what the code does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from inferkit import RESTConfig, RetryPolicy, Timeout
from inferkit.testing import ReferenceServer

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "scale.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", PAGE, re.S)
OBJECTS = {"RESTConfig": RESTConfig(), "Timeout": Timeout(), "RetryPolicy": RetryPolicy()}


def test_the_page_has_snippets() -> None:
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index: int, reference_server: ReferenceServer) -> None:
    code = SNIPPETS[index].replace("http://127.0.0.1:8000", reference_server.http_url)
    namespace: dict[str, object] = {}
    exec(compile(code, f"scale.md[{index}]", "exec"), namespace)  # noqa: S102 - our own documentation
    if "labels" in namespace:
        assert namespace["labels"] == [b"setosa"]
    if "outcome" in namespace:
        assert isinstance(namespace["outcome"], list)  # the call answered


def test_defaults_table_matches_the_code() -> None:
    table = PAGE.split("## Defaults", 1)[1]
    rows = re.findall(r"^\| `(\w+)\.(\w+)` \| ([^|]+) \|$", table, re.M)
    assert len(rows) >= 15
    for owner, name, stated in rows:
        value = ast.literal_eval(stated.strip().removesuffix(" s"))
        assert getattr(OBJECTS[owner], name) == value, f"{owner}.{name}: the page says {stated.strip()}"
