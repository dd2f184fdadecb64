"""The layer test: every module's "Must not import" line is enforced on what importing that module loads.

How it works:

* Modules are discovered by walking the ``inferkit`` package on disk (``pkgutil.iter_modules``, recursively;
  ``inferkit._proto`` is generated and skipped), so the test follows modules when they move.
* The rule is read statically from the module docstring (``ast``): the text after ``Must not import:`` (or
  ``Must not import at module level:`` / ``at import time:``) up to the end of its sentence. See ``parse_rule``
  for the grammar; the cases it must read are the lines in the tree today (``test_parse_rule_reads_*``).
* Each module is imported in a fresh interpreter (one subprocess per module) running ``_PROBE``: it records an
  import graph, "module X's import loaded/imported Y", where X is the module whose body was executing (the
  innermost ``<module>`` frame) when Y was imported. Both first loads (a meta path observer) and imports of
  modules already loaded (a wrapper around ``__import__`` and ``importlib.import_module``) are recorded, so a
  module is charged for its own imports even when an earlier module loaded them first.
* What importing module M loads is everything reachable from M in that graph, except M's own parent packages
  (importing ``inferkit.codec.tensors`` must run ``inferkit/__init__.py``; what that loads is the parent's
  business and is checked against the parent's own line). An import inside a function that is not called at
  import time is never executed, so lazy imports are allowed by construction.
* A violation names the module, the forbidden name and the shortest import chain that loaded it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import json
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path
from typing import Iterator

import pytest

PACKAGE = "inferkit"
SKIP_SUBTREES = ("inferkit._proto",)  # generated code

# Names a rule may use for a package whose import name differs.
ALIASES = {"protobuf": "google.protobuf"}

# Phrases the docstrings use for a group of modules. Modules that do not exist (yet, or any more) never match.
GLOSSARY = {
    "the sync transports": (
        "inferkit.rest_client",
        "inferkit.grpc_client",
        "inferkit._http",
        "inferkit._http_mux",
        "inferkit._transport",
        "inferkit._grpc_common",
    ),
}
GLOSSARY["the transports"] = (
    *GLOSSARY["the sync transports"],
    "inferkit.aio.rest_client",
    "inferkit.aio.grpc_client",
    "inferkit.aio._transport",
)

# Modules that have no "Must not import" line today. Each should get one (suggested wording in the comment) and
# then leave this list; the test fails when a listed module has a line or no longer exists, so the list only
# shrinks.
MISSING_RULE_ALLOWED: set[str] = set()

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\.\*)?$")
_RULE_START = re.compile(r"Must not import(?P<when> at (?:module level|import time|run time))?:\s*")
_QUALIFIER = re.compile(r"\s+at (?:module level|import time|run time)$")
_SPLIT_WORDS = re.compile(r"\s+or\s+|\s+and\s+|\s*/\s*")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A parsed "Must not import" line.

    ``forbidden``: names (a top-level package, a dotted module, or ``pkg.*`` for its submodules only).
    ``allowed``: set for the "anything but X" form; then only the standard library and these may load.
    ``ignored``: the items read as prose (kept so a reader can see what the parser did not enforce).
    """

    text: str
    forbidden: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None
    ignored: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Violation:
    module: str
    name: str  # the rule's name that matched (or the loaded module, for an allow-list rule)
    loaded: str  # the module that was loaded
    chain: tuple[str, ...]

    def __str__(self) -> str:
        via = " -> ".join(self.chain)
        shown = self.name if self.loaded == self.name else f"{self.name} ({self.loaded})"
        return f"{self.module} must not import {shown}, but importing it loads it: {via}"


# --------------------------------------------------------------------------------------------------- the parser


def _split_top(text: str, seps: str) -> Iterator[tuple[str, list[str]]]:
    """Split ``text`` at ``seps`` outside parentheses; stop at a sentence end (". ") outside parentheses.

    Yields (head, parens): the item's text outside parentheses and the texts of its top-level parentheses.
    """
    head, parens, depth, inner = "", [], 0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "(":
            if depth:
                inner += c
            depth += 1
        elif c == ")" and depth:
            depth -= 1
            if depth:
                inner += c
            else:
                parens.append(inner)
                inner = ""
        elif depth:
            inner += c
        elif c in seps:
            yield head, parens
            head, parens = "", []
        elif c == "." and (i + 1 == len(text) or text[i + 1].isspace()):
            break
        else:
            head += c
        i += 1
    yield head, parens


def _names(piece: str) -> tuple[list[str], bool]:
    """The names in one list item, and whether the item was read as names (not prose)."""
    piece = piece.strip().replace("``", "").replace("`", "")
    piece = re.sub(r"^(?:nor|or|and)\s+", "", piece)
    piece = _QUALIFIER.sub("", piece)
    piece = re.sub(r"^anything (?:from|in)\s+", "", piece)
    if piece in GLOSSARY:
        return list(GLOSSARY[piece]), True
    parts = [p.strip() for p in _SPLIT_WORDS.split(piece) if p.strip()]
    if parts and all(_NAME.match(p) for p in parts):
        return [ALIASES.get(p, p) for p in parts], True
    return [], False


def parse_rule(doc: str | None) -> Rule | None:
    """Read the "Must not import" line of a module docstring, or None when it has none."""
    if not doc:
        return None
    match = _RULE_START.search(doc)
    if match is None:
        return None
    paragraph = re.split(r"\n\s*\n", doc[match.end() :], maxsplit=1)[0]
    text = " ".join(paragraph.split())
    forbidden: set[str] = set()
    allowed: set[str] | None = None
    ignored: list[str] = []
    for head, parens in _split_top(text, ",;"):
        head = head.strip()
        if not head and not parens:
            continue
        anything_but = re.match(r"^anything but\s+(.*)$", head)
        if anything_but:
            allowed = set()
            for part in _SPLIT_WORDS.split(_QUALIFIER.sub("", anything_but.group(1))):
                names, ok = _names(part)
                if ok:
                    allowed.update(names)
                else:
                    ignored.append(part.strip())
            ignored.extend(f"({p})" for p in parens)
            continue
        names, ok = _names(head) if head else ([], False)
        forbidden.update(names)
        if head and not ok:
            ignored.append(head)
        # A parenthesis that is a list of names adds them ("the sync transports (requests, urllib3, ...)");
        # any other parenthesis is prose ("(messages and bytes in, messages and bytes out)").
        for inner in parens:
            items = [_names(item) for item, _ in _split_top(inner, ",;")]
            if items and all(ok for _, ok in items):
                for names, _ in items:
                    forbidden.update(names)
            else:
                ignored.append(f"({inner})")
    return Rule(
        text=text,
        forbidden=frozenset(forbidden),
        allowed=None if allowed is None else frozenset(allowed),
        ignored=tuple(ignored),
    )


# ------------------------------------------------------------------------------------------------ discovery


def discover(package: str = PACKAGE, path: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Every module of ``package`` (name -> file), found on disk without importing anything."""
    if path is None:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        roots = list(spec.submodule_search_locations)
    else:
        roots = [os.fspath(path)]
    found: dict[str, Path] = {}
    for root in roots:
        init = Path(root) / "__init__.py"
        if init.exists():
            found[package] = init
        for info in pkgutil.iter_modules([root]):
            name = f"{package}.{info.name}"
            if any(name == s or name.startswith(s + ".") for s in SKIP_SUBTREES):
                continue
            if info.ispkg:
                found.update(discover(name, Path(root) / info.name))
            else:
                found[name] = Path(root) / f"{info.name}.py"
    return found


def module_doc(path: Path) -> str | None:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))


def is_pure_namespace(path: Path) -> bool:
    """A package ``__init__`` with nothing but (at most) a docstring."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return not body


# ---------------------------------------------------------------------------------------------------- the probe

# Run as ``python -c _PROBE <module>``: imports <module> and prints one line ``@@probe@@ {json}`` with the import
# graph ("edges": importer -> imported names), the modules loaded at the end, and the import error, if any.
_PROBE = textwrap.dedent(
    r'''
    import builtins, importlib, importlib.util, json, sys, traceback

    _edges = {}

    def _importer():
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == "<module>":
                return frame.f_globals.get("__name__") or "?"
            frame = frame.f_back
        return "?"

    def _add(src, name):
        parts = name.split(".")
        bucket = _edges.setdefault(src, {})
        for i in range(1, len(parts) + 1):
            bucket[".".join(parts[:i])] = None

    class _Observer:
        """First loads: every import of a module not yet in sys.modules asks the meta path."""

        @staticmethod
        def find_spec(name, path=None, target=None):
            _add(_importer(), name)
            return None

    _orig_import = builtins.__import__

    def _import(name, globals=None, locals=None, fromlist=(), level=0):
        module = _orig_import(name, globals, locals, fromlist, level)
        try:
            absname = name
            if level:
                g = globals or {}
                package = g.get("__package__")
                if package is None:
                    package = g["__name__"] if "__path__" in g else g["__name__"].rpartition(".")[0]
                absname = importlib.util.resolve_name("." * level + name, package)
            src = _importer()
            _add(src, absname)
            items = fromlist or ()
            if "*" in items:
                items = getattr(sys.modules.get(absname), "__all__", ())
            for item in items:
                if f"{absname}.{item}" in sys.modules:
                    _add(src, f"{absname}.{item}")
        except Exception:
            pass
        return module

    _orig_import_module = importlib.import_module

    def _import_module(name, package=None):
        module = _orig_import_module(name, package)
        _add(_importer(), module.__name__)
        return module

    sys.meta_path.insert(0, _Observer)
    builtins.__import__ = _import
    importlib.import_module = _import_module

    error = None
    try:
        _orig_import_module(sys.argv[1])
    except BaseException as exc:
        error = {"type": type(exc).__name__, "name": getattr(exc, "name", None),
                 "text": "".join(traceback.format_exception(exc))}
    finally:
        sys.meta_path.remove(_Observer)
        builtins.__import__ = _orig_import
        importlib.import_module = _orig_import_module
    edges = {k: list(v) for k, v in _edges.items()}
    print("@@probe@@", json.dumps({"edges": edges, "modules": sorted(sys.modules), "error": error}))
    '''
)


@dataclasses.dataclass(frozen=True)
class Probe:
    module: str
    edges: dict[str, list[str]]
    modules: frozenset[str]
    error: dict[str, str] | None

    def loaded_by(self, stop: frozenset[str] = frozenset()) -> dict[str, str | None]:
        """What importing the module loads: loaded module -> the module that imported it (BFS, shortest chains).

        The module's parent packages are not entered; nor are modules for which ``stop`` says so (a name in it
        matches like a rule name).
        """
        root = self.module
        parts = root.split(".")
        parents = {".".join(parts[:i]) for i in range(1, len(parts))}
        seen: dict[str, str | None] = {root: None}
        queue = deque([root])
        while queue:
            node = queue.popleft()
            if node != root and stop and _matches_any(node, stop):
                continue
            for name in self.edges.get(node, ()):
                if name in seen or name in parents or name not in self.modules:
                    continue
                seen[name] = node
                queue.append(name)
        return seen

    def chain(self, tree: dict[str, str | None], name: str) -> tuple[str, ...]:
        out = [name]
        while tree[out[-1]] is not None:
            out.append(tree[out[-1]])  # type: ignore[arg-type]
        return tuple(reversed(out))


def _matches(module: str, name: str) -> bool:
    if name.endswith(".*"):
        return module.startswith(name[:-1])
    return module == name or module.startswith(name + ".")


def _matches_any(module: str, names: frozenset[str]) -> bool:
    return any(_matches(module, n) for n in names)


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names or module == "__main__"


@functools.cache
def probe(module: str, extra_path: tuple[str, ...] = (), timeout: float = 120) -> Probe:
    """Import ``module`` in a fresh interpreter and record what it loads (cached: one subprocess per module)."""
    env = dict(os.environ)
    paths = [*extra_path, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    # The tree under test first, whatever the working directory (the repository root holds tests/ and inferkit/).
    paths.insert(0, str(Path(__file__).resolve().parents[2]))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, module], capture_output=True, text=True, env=env, timeout=timeout
    )
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("@@probe@@ ")), None)
    if line is None:
        raise AssertionError(f"the import probe for {module} failed (exit {proc.returncode}):\n{proc.stderr}")
    data = json.loads(line[len("@@probe@@ ") :])
    return Probe(module, data["edges"], frozenset(data["modules"]), data["error"])


def check(module: str, rule: Rule, extra_path: tuple[str, ...] = ()) -> list[Violation]:
    """The violations of ``rule`` by importing ``module`` in a fresh interpreter."""
    result = probe(module, extra_path)
    if result.error is not None:
        raise ImportError(f"importing {module} failed:\n{result.error['text']}", name=result.error.get("name"))
    violations: list[Violation] = []
    parts = module.split(".")
    own = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # a rule naming the module itself is moot
    if rule.allowed is not None:
        tree = result.loaded_by(stop=rule.allowed)
        for name in tree:
            if name == module or _is_stdlib(name) or _matches_any(name, rule.allowed):
                continue
            violations.append(Violation(module, name, name, result.chain(tree, name)))
        # only the first module of each chain is interesting: the rest is what it pulled in
        firsts = {v.loaded for v in violations}
        violations = [v for v in violations if not any(c in firsts for c in v.chain[1:-1])]
    tree = result.loaded_by()
    for name in sorted(rule.forbidden - own):
        hits = [m for m in tree if m != module and _matches(m, name)]
        if hits:
            first = min(hits, key=lambda m: len(result.chain(tree, m)))
            violations.append(Violation(module, name, first, result.chain(tree, first)))
    return violations


# ------------------------------------------------------------------------------------------------------ the tests

MODULES = discover()
RULES = {name: parse_rule(module_doc(path)) for name, path in MODULES.items()}

# Known violations of modules other engineers own (module -> reason). A listed module that passes fails the test
# (strict xfail), so the list is kept honest.
KNOWN_VIOLATIONS: dict[str, str] = {}


def _layer_params() -> list[object]:
    params = []
    for name in sorted(MODULES):
        rule = RULES[name]
        if rule is None:
            continue
        marks = []
        if name in KNOWN_VIOLATIONS:
            marks.append(pytest.mark.xfail(reason=KNOWN_VIOLATIONS[name], strict=True))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("module", _layer_params())
def test_module_respects_its_must_not_import_line(module: str) -> None:
    rule = RULES[module]
    assert rule is not None
    try:
        violations = check(module, rule)
    except ImportError as exc:
        if exc.name and not exc.name.startswith(PACKAGE):
            pytest.skip(f"{module} needs {exc.name}, which is not installed")
        raise
    assert not violations, "\n".join(map(str, violations))


def test_every_module_has_a_must_not_import_line() -> None:
    missing = sorted(
        name
        for name, path in MODULES.items()
        if RULES[name] is None and not is_pure_namespace(path) and name not in MISSING_RULE_ALLOWED
    )
    assert not missing, f"modules without a 'Must not import:' line in their docstring: {missing}"
    stale = sorted(name for name in MISSING_RULE_ALLOWED if name not in MODULES or RULES[name] is not None)
    assert not stale, f"remove from MISSING_RULE_ALLOWED (they have a line now, or are gone): {stale}"


def test_every_rule_names_something() -> None:
    """A line the parser reads as prose only would silently check nothing."""
    empty = sorted(n for n, r in RULES.items() if r is not None and not r.forbidden and r.allowed is None)
    assert not empty, f"'Must not import' lines with no module name the parser can read: {empty}"


def test_every_inferkit_name_in_a_rule_exists() -> None:
    """A rule naming a module that moved away checks nothing: fail so the line is updated with the move."""
    glossary = {n for names in GLOSSARY.values() for n in names}
    stale = []
    for module, rule in sorted(RULES.items()):
        if rule is None:
            continue
        written = (rule.forbidden | (rule.allowed or frozenset())) - glossary
        for name in sorted(written):
            base = name[:-2] if name.endswith(".*") else name
            if base.split(".")[0] == PACKAGE and base not in MODULES and base not in SKIP_SUBTREES:
                stale.append(f"{module}: {name}")
    assert not stale, f"'Must not import' lines name modules that do not exist: {stale}"


CODEC_NEVER = ("requests", "urllib3", "aiohttp", "grpc")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("inferkit.codec.")))
def test_codec_layer_rule(module: str) -> None:
    """DESIGN rule 1, independent of the docstrings: the codec never imports requests, urllib3, aiohttp or grpc,
    and only its ``grpc_*`` modules may load protobuf."""
    never = set(CODEC_NEVER)
    if not module.rpartition(".")[2].startswith("grpc_"):
        never.add("google.protobuf")
    violations = check(module, Rule(text="DESIGN rule 1", forbidden=frozenset(never)))
    assert not violations, "\n".join(map(str, violations))


# ------------------------------------------------------------------------------------------ the parser, on the tree

# Each line as it is in the tree today, and (after "=>") what the parser must read from it; "$sync" and "$all" stand
# for the glossary's "the sync transports" and "the transports".
_PARSE_TABLE = """
Must not import: requests, urllib3, aiohttp, grpc, protobuf.
=> requests urllib3 aiohttp grpc google.protobuf

Must not import: requests, urllib3, aiohttp, grpc, protobuf. Bytes and dicts in, bytes and dicts out.
=> requests urllib3 aiohttp grpc google.protobuf

Must not import: requests, urllib3, aiohttp, grpc, protobuf. ``ml_dtypes`` is imported lazily, only for BF16.
=> requests urllib3 aiohttp grpc google.protobuf

``import inferkit``. Must not import: requests, urllib3, aiohttp, grpc.
=> requests urllib3 aiohttp grpc

Must not import: grpc, requests, urllib3, aiohttp (messages and bytes in, messages and bytes out).
=> grpc requests urllib3 aiohttp

Must not import at module level: grpc, aiohttp, inferkit.rest_client, inferkit.grpc_client, inferkit.aio.
=> grpc aiohttp inferkit.rest_client inferkit.grpc_client inferkit.aio

in how they sleep. Must not import: requests, urllib3, aiohttp, grpc (auth objects for ``requests`` are passed
through untouched).
=> requests urllib3 aiohttp grpc

Must not import: ray (nothing here needs it: Ray calls the class; ``infer_dataset`` only calls methods of the
dataset it is given), nor the transports at import time (the client is built on the worker, on first use).
=> ray $all

Must not import: requests, urllib3, aiohttp, grpc (the work goes through ``self.infer``), nor tqdm at import time
(it loads when ``progress=True``; it is the ``progress`` extra).
=> requests urllib3 aiohttp grpc tqdm

Must not import: requests, urllib3, aiohttp, inferkit.rest_client, inferkit._http, inferkit.grpc_client,
inferkit.aio; nor grpc / protobuf at module level.
=> requests urllib3 aiohttp inferkit.rest_client inferkit._http inferkit.grpc_client inferkit.aio grpc google.protobuf

Layering: bench -> factory, clients (sync, aio), codec. Must not import at module level: grpc, aiohttp, tqdm,
matplotlib, ``inferkit.aio`` (each loads only when the options ask for it, with an error naming the extra).
=> grpc aiohttp tqdm matplotlib inferkit.aio

Messages are built and read by the codec (``inferkit.codec.grpc_v2``). Must not import at module level: grpc,
protobuf, requests, urllib3, aiohttp, inferkit.aio.
=> grpc google.protobuf requests urllib3 aiohttp inferkit.aio

Must not import: requests, urllib3, aiohttp, grpc, any client module (inferkit.rest_client, inferkit.grpc_client,
inferkit._http, inferkit.aio.*).
=> requests urllib3 aiohttp grpc inferkit.rest_client inferkit.grpc_client inferkit._http inferkit.aio.*

unlinked by it. Must not import: requests, urllib3, aiohttp, grpc, protobuf (numpy and the standard library only).
=> requests urllib3 aiohttp grpc google.protobuf

Must not import at module level: aiohttp, grpc (they load in ``start()``, so ``import inferkit.testing`` is cheap
and a missing extra gives an ImportError naming it).
=> aiohttp grpc

Must not import: aiohttp, grpc, protobuf (the transports in ``_rest`` and ``_grpc`` do).
=> aiohttp grpc google.protobuf

Must not import at module level: grpc or protobuf (``import inferkit.grpc_client`` works without the
``grpc`` extra; the constructor raises an ImportError naming ``pip install 'inferkit[grpc]'``), requests,
urllib3, aiohttp, or anything from ``inferkit.aio``.
=> grpc google.protobuf requests urllib3 aiohttp inferkit.aio

Must not import at module level: grpc, aiohttp, the sync transports, inferkit.aio.rest_client,
inferkit.aio.grpc_client.
=> grpc aiohttp $sync inferkit.aio.rest_client inferkit.aio.grpc_client

Must not import: the sync transports (``inferkit.rest_client``, ``inferkit._http``, ``inferkit.grpc_client``).
=> $sync

Must not import: the sync transports (requests, urllib3, ``inferkit.rest_client``, ``inferkit.grpc_client``),
aiohttp or grpc (the work goes through ``self.infer``), nor tqdm at import time.
=> $sync requests urllib3 aiohttp grpc tqdm

Must not import: requests, urllib3, aiohttp, inferkit.rest_client, inferkit._http, inferkit.grpc_client; grpc is
imported on first use (an ImportError names ``pip install 'inferkit[grpc]'``).
=> requests urllib3 aiohttp inferkit.rest_client inferkit._http inferkit.grpc_client
"""


def _parse_cases() -> list[tuple[str, set[str]]]:
    shorthand = {"$sync": GLOSSARY["the sync transports"], "$all": GLOSSARY["the transports"]}
    cases = []
    for block in _PARSE_TABLE.strip().split("\n\n"):
        doc, _, expected = block.rpartition("\n=> ")
        names = {n for word in expected.split() for n in shorthand.get(word, (word,))}
        cases.append((doc, names))
    return cases


PARSE_CASES = _parse_cases()


@pytest.mark.parametrize(("doc", "expected"), PARSE_CASES)
def test_parse_rule_reads_the_lines_in_the_tree(doc: str, expected: set[str]) -> None:
    rule = parse_rule(doc)
    assert rule is not None and rule.allowed is None
    assert set(rule.forbidden) == expected, rule


def test_parse_rule_reads_the_allow_list_form() -> None:
    rule = parse_rule("Must not import: anything but numpy.")
    assert rule is not None and rule.allowed == {"numpy"} and not rule.forbidden
    rule = parse_rule(
        "Must not import: anything but ``inferkit._proto`` and the standard library at run time (no grpc, no other\n"
        "inferkit module); ``google.protobuf`` is imported for type checking only."
    )
    assert rule is not None and rule.allowed == {"inferkit._proto"} and not rule.forbidden
    assert parse_rule("Nothing to see.") is None and parse_rule(None) is None


def test_parse_rule_stops_at_the_paragraph() -> None:
    rule = parse_rule("Must not import: grpc\n\nrequests, urllib3.")
    assert rule is not None and rule.forbidden == {"grpc"}


# ------------------------------------------------------------------------------- the checker, on a planted violation


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A tiny package with one violation through a chain, one lazy import, and a heavy parent package."""
    files = {
        "fakelib/__init__.py": "",
        "fakelib/core.py": "",
        "pkgx/__init__.py": '"""The parent: loads pkgx.heavy."""\nfrom pkgx import heavy\n',
        "pkgx/heavy.py": '"""Must not import: pkgx.bad."""\nimport fakelib.core\n',
        "pkgx/middle.py": '"""Must not import: fakelib."""\nfrom . import heavy as _h\nimport json\n',
        "pkgx/bad.py": '"""Must not import: fakelib, json.\n\nThe chain is bad -> middle -> heavy -> fakelib."""\n'
        "from pkgx import middle\n",
        "pkgx/lazy.py": '"""Must not import: fakelib, pkgx.heavy.*, pkgx.bad."""\n\n'
        "def later():\n    import fakelib\n    from pkgx import bad\n",
        "pkgx/sub/__init__.py": "",
        "pkgx/sub/allow.py": '"""Must not import: anything but numpy."""\n'
        "import os\nimport numpy\nimport pkgx.middle\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_checker_reports_a_planted_violation_with_its_chain(planted: Path) -> None:
    modules = discover("pkgx", planted / "pkgx")
    assert set(modules) == {"pkgx", "pkgx.heavy", "pkgx.middle", "pkgx.bad", "pkgx.lazy", "pkgx.sub", "pkgx.sub.allow"}
    rules = {n: parse_rule(module_doc(p)) for n, p in modules.items()}
    found = {n: check(n, r, (str(planted),)) for n, r in rules.items() if r is not None}

    # bad -> middle -> heavy -> fakelib, though pkgx/__init__ loaded heavy (and so fakelib) first; json directly.
    assert [(v.name, v.chain) for v in found["pkgx.bad"]] == [
        ("fakelib", ("pkgx.bad", "pkgx.middle", "pkgx.heavy", "fakelib")),
        ("json", ("pkgx.bad", "pkgx.middle", "json")),
    ]
    assert "pkgx.bad must not import fakelib, but importing it loads it: pkgx.bad -> pkgx.middle" in str(
        found["pkgx.bad"][0]
    )
    assert [v.chain for v in found["pkgx.middle"]] == [("pkgx.middle", "pkgx.heavy", "fakelib")]
    # heavy is clean: pkgx.bad is never loaded by it.
    assert found["pkgx.heavy"] == []
    # lazy imports inside a function are not charged; the parent package's imports are not charged either.
    assert found["pkgx.lazy"] == []
    # the allow-list form: the standard library and numpy pass; pkgx.middle is the first foreign module.
    assert [(v.loaded, v.chain) for v in found["pkgx.sub.allow"]] == [
        ("pkgx.middle", ("pkgx.sub.allow", "pkgx.middle"))
    ]
