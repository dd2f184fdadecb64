"""Render the fault matrix of tests/reliability/cases.py as the Markdown table of docs/reliability.md.

``python -m tests.docs.reliability_table`` rewrites the table in place (between the ``fault-table`` markers);
``tests/docs/test_pages.py`` fails when the page and the cases differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
START, END = "<!-- fault-table -->", "<!-- /fault-table -->"


def _fault(fault: Any) -> str:
    if fault.action == "status":
        text = f"HTTP {fault.status}"
        if fault.retry_after is not None:
            text += f" + Retry-After {fault.retry_after:g} s"
    elif fault.action == "grpc_status":
        text = f"gRPC {fault.code}"
    elif fault.action in ("delay", "trickle"):
        text = f"{fault.action} {fault.seconds:g} s"
    else:
        text = fault.action.replace("_", " ")
    times = "always" if fault.times is None else "once" if fault.times == 1 else f"{fault.times} times"
    return f"{text}, {times}"


def _policy(policy: dict[str, Any], timeout: float | None, request: str) -> str:
    parts = [f"{k}={v!r}" for k, v in policy.items()]
    parts.append("no timeout" if timeout is None else f"timeout {timeout:g} s")
    if request == "sequence":
        parts.append("sequence request")
    return ", ".join(parts)


def _outcome(outcome: Any) -> str:
    if outcome.attempts < 0:
        return "n/a"
    result = "success" if outcome.error is None else f"`{outcome.error.__name__}`"
    return f"{result} after {outcome.attempts}"


def render() -> str:
    """The table (without markers) for the current cases."""
    from tests.reliability.cases import CASES  # noqa: PLC0415 - the suite is the source of truth

    lines = [
        "| case | fault on `infer` | client settings | REST | gRPC | note |",
        "|---|---|---|---|---|---|",
    ]
    for case in CASES:
        fault = "; ".join(_fault(f) for f in case.faults) or "none"
        grpc = _outcome(case.outcome("grpc"))
        note = case.note.replace("|", "\\|")
        lines.append(
            f"| `{case.id}` | {fault} | {_policy(case.policy, case.timeout, case.request)} | "
            f"{_outcome(case.rest)} | {grpc} | {note} |"
        )
    return "\n".join(lines)


def current() -> str:
    text = PAGE.read_text()
    match = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    if match is None:
        raise AssertionError(f"{PAGE} has no {START} ... {END} block")
    return match.group(1)


def write() -> None:
    text = PAGE.read_text()
    block = f"{START}\n{render()}\n{END}"
    PAGE.write_text(re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S))


if __name__ == "__main__":
    write()
    sys.exit(0)
