"""A cached virtual environment for one CI step, built atomically: print its path.

Owns: the engine and lowest-versions venvs of ``.ci/run`` (the interop servers' venvs are built by
tests/interop/harness.py in the same way). Must not import: anything outside the standard library (it runs before
any venv exists), nor inferkit.

    python .ci/venv.py TOX_ENV

tox.ini is the one place the requirements are written: the venv holds the tox env's ``deps`` (which also constrain
everything else, like tox's ``constrain_package_deps``), setup.cfg's ``install_requires`` and the env's ``extras``,
but not inferkit itself: the caller installs this checkout into it with ``pip install --no-deps -e .`` (seconds),
so the cached part never goes stale with the code. Its directory name is the env's name plus a hash of everything
it was built from (those lines and the interpreter), so a change of pins builds a new venv. A build happens in a
temporary directory that is renamed into place only when pip succeeded (a marker file is written last): an
interrupted build is never reused. Concurrent builds of one venv serialize on a lock file.

Environment: INFERKIT_CI_CACHE (default ``~/.cache/inferkit-ci``, beside the interop servers' venvs).
"""

from __future__ import annotations

import argparse
import configparser
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKER = ".inferkit-ci-complete"
FORMAT = "1"


def _lines(text: str) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def requirement_lines(env: str) -> tuple[list[str], list[str]]:
    """The requirement specifiers to install, and the tox env's own deps (the constraints)."""
    top = Path(__file__).resolve().parent.parent
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(top / "tox.ini")
    section = tox[f"testenv:{env}"]
    deps = _lines(section.get("deps", ""))
    extras = [e.strip() for e in section.get("extras", "").replace(",", "\n").splitlines() if e.strip()]
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(top / "setup.cfg")
    lines = deps + _lines(setup["options"]["install_requires"])
    for extra in extras:
        lines += _lines(setup["options.extras_require"][extra])
    return lines, deps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", help="a tox env of tox.ini (lowest, ray, spark)")
    args = parser.parse_args()
    lines, constraints = requirement_lines(args.env)
    blob = json.dumps({"format": FORMAT, "lines": lines, "python": sys.version, "exe": sys.executable}, sort_keys=True)
    root = Path(os.environ.get("INFERKIT_CI_CACHE") or Path.home() / ".cache" / "inferkit-ci").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{args.env}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    if (final / MARKER).is_file():
        print(final)
        return
    with open(root / f"{final.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run building the same venv: wait for it
        if not (final / MARKER).is_file():
            for stale in root.glob(f".{final.name}.building-*"):  # a build killed by a signal: never reused
                shutil.rmtree(stale, ignore_errors=True)
            build(final, lines, constraints)
    print(final)


def build(final: Path, lines: list[str], constraints: list[str]) -> None:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    log = final.parent / f"{final.name}.build.log"
    try:
        # pip refuses extras in a constraint (``ray[data]==2.60.0`` constrains ``ray``).
        (tmp / "constraints.txt").write_text("".join(re.sub(r"\[[^]]*\]", "", c) + "\n" for c in constraints))
        with open(log, "w") as out:
            for cmd in (
                [sys.executable, "-m", "venv", str(tmp)],
                [str(tmp / "bin" / "python"), "-m", "pip", "install", "--no-input", "-q", "--upgrade", "pip"],
                [
                    str(tmp / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "-c",
                    str(tmp / "constraints.txt"),
                    *lines,
                ],
            ):
                out.write(f"$ {' '.join(cmd)}\n")
                out.flush()
                env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
                if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode:
                    out.flush()
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                    sys.exit(f".ci/venv.py: building {final.name} failed at `{' '.join(cmd)}`:\n{tail}")
        (tmp / MARKER).write_text(json.dumps({"lines": lines, "seconds": round(time.monotonic() - started, 1)}))
        os.chmod(tmp, 0o755)
        if final.exists():  # a leftover without its marker (a build killed before the rename cannot leave one)
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f".ci/venv.py: built {final.name} in {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
