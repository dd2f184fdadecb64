"""The tritonclient migration guide names every public method of tritonclient's ``InferenceServerClient``.

docs/migration/tritonclient.md has a table with one row per method of the four tritonclient clients (http, grpc
and their aio modules). A tritonclient release that adds a method fails here until the table says what to use;
and every inferkit method a row names must exist on inferkit's clients (streams: the gRPC ones).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inferkit import InferenceGRPCClient, InferenceRESTClient

PAGE = Path(__file__).resolve().parents[2] / "docs" / "migration" / "tritonclient.md"
SECTION = "## Every `InferenceServerClient` method"
ROW = re.compile(r"^\| `(?P<theirs>\w+)` \| (?P<where>[^|]+) \| (?P<ours>.+) \|$")


def _rows() -> dict[str, str]:
    text = PAGE.read_text()
    assert SECTION in text, f"{PAGE.name} lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            assert match["theirs"] not in rows, f"{match['theirs']} has two rows"
            rows[match["theirs"]] = match["ours"]
    return rows


def _tritonclient_methods() -> set[str]:
    modules = []
    for name in ("tritonclient.http", "tritonclient.grpc", "tritonclient.http.aio", "tritonclient.grpc.aio"):
        modules.append(pytest.importorskip(name))
    return {n for m in modules for n in dir(m.InferenceServerClient) if not n.startswith("_")}


def test_every_tritonclient_method_has_a_row() -> None:
    missing = sorted(_tritonclient_methods() - set(_rows()))
    assert not missing, f"tritonclient methods the migration table does not name: {missing}"


def test_every_row_names_a_tritonclient_method() -> None:
    extra = sorted(set(_rows()) - _tritonclient_methods())
    assert not extra, f"rows for methods tritonclient does not have: {extra}"


def test_the_inferkit_methods_named_exist() -> None:
    for theirs, ours in _rows().items():
        if ours.startswith("not "):
            continue
        first = re.match(r"`([a-z_]+)\(", ours)
        if first is None:
            continue  # a setting (RESTConfig(...)) or a codec function, not a client method
        name = first[1]
        assert hasattr(InferenceRESTClient, name) or hasattr(InferenceGRPCClient, name), (
            f"the row for {theirs} names {name}(), which inferkit's clients do not have"
        )
