"""The pages that state facts checked against their source: README and quick start commands, the quick start
code, the dependency ranges of docs/compatibility.md, the reliability table, and the toctree."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from inferkit.testing import ReferenceServer

from . import reliability_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
QUICKSTART = (DOCS / "quickstart.md").read_text()
SCREEN_LINES = 40  # "the first screen" of the README


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def _marked_block(text: str, marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```\s*<!-- /{marker} -->", text, re.S)
    assert match, f"no <!-- {marker} --> bash block"
    return match.group(1).strip()


def test_readme_first_screen_has_the_demo_and_the_test_command() -> None:
    first_screen = "\n".join(README.splitlines()[:SCREEN_LINES])
    assert "inferkit demo" in first_screen
    assert _marked_block(README, "test-command") in first_screen
    assert "python -m pytest" in _marked_block(README, "test-command")


def test_quickstart_shows_the_readme_commands_verbatim() -> None:
    readme_demo = next(b for b in _bash_blocks(README) if "inferkit demo" in b)
    assert _marked_block(QUICKSTART, "demo-command") == readme_demo
    assert _marked_block(QUICKSTART, "test-command") == _marked_block(README, "test-command")


def test_quickstart_python_runs_against_the_reference_server(reference_server: ReferenceServer) -> None:
    blocks = re.findall(r"```python\n(.*?)```", QUICKSTART, re.S)
    assert blocks, "the quick start has no Python example"
    code = blocks[0].replace("http://127.0.0.1:8000", reference_server.http_url)
    namespace: dict[str, object] = {}
    exec(compile(code, "quickstart.md", "exec"), namespace)  # noqa: S102 - our own documentation
    response = namespace["response"]
    assert response.as_numpy("label").tolist() == [b"setosa", b"versicolor", b"virginica"]  # type: ignore[attr-defined]


def _lines(value: str) -> list[str]:
    return [r.strip() for r in value.split("\n") if r.strip() and not r.strip().startswith("#")]


def _requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return _lines(cfg["options"]["install_requires"]) + _lines(cfg["options.extras_require"]["all"])


def _test_requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return _lines(cfg["options.extras_require"]["test"])


def _block(page: str, marker: str) -> str:
    assert f"<!-- {marker} -->" in page, f"docs/compatibility.md has no <!-- {marker} --> block"
    return page.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]


def test_compatibility_page_states_the_ranges_of_setup_cfg() -> None:
    page = (DOCS / "compatibility.md").read_text()
    block = _block(page, "dependency-ranges")
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    python = cfg["options"]["python_requires"].strip()
    assert f"`{python}`" in block, f"python_requires {python} is not on docs/compatibility.md"
    # backoff is declared in install_requires but imported nowhere in inferkit: not a range users need to know.
    stale = [r for r in _requirements() if f"`{r}`" not in block and not r.startswith("backoff")]
    assert not stale, f"docs/compatibility.md does not state these setup.cfg ranges: {stale}"


def test_compatibility_page_states_the_ranges_of_the_test_extra() -> None:
    page = (DOCS / "compatibility.md").read_text()
    stated = _block(page, "dependency-ranges") + _block(page, "test-dependency-ranges")
    stale = [r for r in _test_requirements() if f"`{r}`" not in stated]
    assert not stale, f"docs/compatibility.md does not state these ranges of setup.cfg's test extra: {stale}"
    # and nothing the test extra lost: every range of the test block is a requirement of the extra
    listed = re.findall(r"^\|[^|]*\| `([^`]+)` \|", _block(page, "test-dependency-ranges"), re.M)
    assert listed and sorted(set(listed) - set(_test_requirements())) == []


@pytest.mark.parametrize("requirement", _test_requirements())
def test_the_test_extra_is_installed(requirement: str) -> None:
    """The suite's optional tests (Flask and Django views, bench --plot, tritonclient comparisons...) skip when their
    package is missing; this makes a missing or out-of-range test dependency a failure instead of a silent skip."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    from packaging.requirements import Requirement  # noqa: PLC0415 - pytest depends on packaging

    req = Requirement(requirement)
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed: pip install -e '.[test]' (setup.cfg's test extra)")
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} is not in {req.specifier}"


def test_reliability_table_matches_the_fault_cases() -> None:
    pytest.importorskip("tests.reliability.cases")
    assert reliability_table.current() == reliability_table.render(), (
        "docs/reliability.md differs from tests/reliability/cases.py: run `python -m tests.docs.reliability_table`"
    )


def test_every_page_is_in_a_toctree() -> None:
    index = (DOCS / "index.md").read_text()
    entries = set(re.findall(r"^([\w/]+)$", index, re.M))
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.md") if "_build" not in p.parts}
    pages -= {"index"}
    assert not pages - entries, f"pages not in the index toctree: {sorted(pages - entries)}"
