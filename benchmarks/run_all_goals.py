"""run_all's side-by-side scripts and the table of performance round 2's goals (issue 23), read from one run.

``run_script`` runs a benchmark script of this folder as it is and returns what it printed; run_all uses it for
codec_bench, stream_bench, bytes_bench (BYTES, 1 to 1M elements) and grpc_many_triton (the gRPC concurrency curve
with ``channels=N``). ``goals`` turns this run's figures into one table: each goal, the figure, and for a goal not
met, why and what was tried (the longer story is in docs/performance.md below the generated part).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p)}


def run_script(name: str, args: list[str], timeout: float) -> str:
    """Run ``benchmarks/<name>`` with this Python; its output, or why there is none."""
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE / name), *args], capture_output=True, text=True, timeout=timeout, env=ENV
        )
    except subprocess.TimeoutExpired:
        return f"({name} timed out after {timeout:.0f} s)"
    tail = f"\n(exit {proc.returncode}: {proc.stderr.strip()[-500:]})" if proc.returncode else ""
    return proc.stdout.strip() + tail


def section_bytes(quick: bool) -> str:
    args = ["--sizes", "1,100,10000,100000", "--reps", "3"] if quick else ["--reps", "5"]
    return run_script("bytes_bench.py", args, 1800)


def section_grpc_curve(grpc_address: str, quick: bool) -> dict[str, str]:
    """grpc_many_triton.py against a running Triton: threads, then asyncio tasks."""
    args = ["--target", grpc_address]
    args += ["--levels", "1,32,128", "--runs", "1", "--duration", "0.5"] if quick else ["--runs", "3"]
    return {
        mode: run_script("grpc_many_triton.py", args + extra, 1800)
        for mode, extra in (("threads", []), ("asyncio", ["--aio"]))
    }


# -- reading the figures back -------------------------------------------------------------------------------------


def bytes_ratios(text: str) -> dict[int, dict[str, float]]:
    """bytes_bench's output -> {elements: {"encode object bytes": ratio, ...}}; memory -> {0: {"memory ...": x}}."""
    out: dict[int, dict[str, float]] = {0: {}}
    size = None
    for line in text.splitlines():
        if m := re.fullmatch(r"([\d,]+) elements", line.strip()):
            size = int(m.group(1).replace(",", ""))
            out[size] = {}
        elif (m := re.match(r"\s+((?:en|de)code .+?)\s{2,}inferkit .*?([\d.]+)x$", line)) and size is not None:
            out[size][m.group(1)] = float(m.group(2))
        elif m := re.match(r"\s+(object bytes|object str|numpy U)\s+peak .*extra\s+([\d.]+)x", line):
            out[0][f"memory {m.group(1)}"] = float(m.group(2))
    return out


def codec_ratio(text: str, label: str) -> float | None:
    """The ratio of the codec_bench row that starts with ``label`` (the first one: the orjson backend)."""
    for line in text.splitlines():
        if line.strip().startswith(label) and (m := re.search(r"ratio\s+([\d.]+)x", line)):
            return float(m.group(1))
    return None


# -- the table ----------------------------------------------------------------------------------------------------

WHY = {
    "encode": "one Python-level step per element remains (`tolist()` and the prefix join); a compiled loop "
    "measured 16-40x (C prototype, not shipped: see BYTES in the Codec section)",
    "small": "below ~1k elements both libraries spend their time in fixed per-call costs (making the array)",
    "decode": "each offset depends on the previous length and each element is a new Python `bytes`, which "
    "pure Python/numpy cannot make faster; a compiled loop measured 6.8-15.6x (C prototype, not shipped)",
    "json": "pysimdjson allocates its parser per call (about a third of the time); one reused parser measured "
    "~3.6x but keeps ~3x the largest body allocated (139 MiB after this one), so it is not kept",
    "rest": "profiled: inferkit's own Python is ~22 us per call, its timeouts ~2 us; http.client's reply parsing "
    "(~24 us; httptools parses the same reply in 1.2 us) is the one large piece left, and replacing it means "
    "owning an HTTP/1.1 response reader again, which the transport round removed: not done",
    "grpc": "profiled: inferkit's own Python is ~6 us per call; the rest is grpcio, the same in both stacks",
    "conc": "both stacks are CPU-bound in grpcio (~150-200 us of client CPU per request, 2 cores shared with "
    "Triton); `channels=2/4` (curve below) did not raise throughput, so the default stays 1",
}


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _row(case: str, figures: list[float | None], goal: str, ok: bool | None, why: str) -> str:
    verdict = "n/a" if ok is None else ("met" if ok else f"not met: {why}")
    return f"| {case} | {' / '.join(_x(f) for f in figures)} | {goal} | {verdict} |"


def _cpu_ratio(seq: dict[str, Any], ours: str, peer: str) -> float | None:
    if ours not in seq or peer not in seq:
        return None
    return float(seq[peer]["cpu_us"]) / float(seq[ours]["cpu_us"])


def goals(results: dict[str, Any]) -> list[str]:
    """Markdown lines: every goal of issue 23 with this run's figure."""
    b = bytes_ratios(results.get("bytes", ""))
    at = b.get(100_000, {})
    names = ("object bytes", "object str", "numpy U")
    enc = [at.get(f"encode {n}") for n in names]
    dec = [at.get("decode to bytes"), at.get("decode to str")]
    sizes = [k for k in b if k]
    low_enc = [min((b[k].get(f"encode {n}", 99.0) for k in sizes), default=None) for n in (*names, "numpy S")]
    low_dec = [min((b[k].get(f"decode to {n}", 99.0) for k in sizes), default=None) for n in ("bytes", "str")]
    mem = [b[0].get(f"memory {n}") for n in names]
    codec = results.get("codec", "")
    simd, plain = codec_ratio(codec, "decode + as_numpy, pysimdjson"), codec_ratio(codec, "decode + as_numpy ")
    triton = results.get("targets", {}).get("Triton", {})
    seq = triton.get("sequential", {})
    thr = triton.get("throughput", {})
    ours_g, peer_g = (
        thr.get("gRPC inferkit (1 shared client)", {}),
        thr.get("gRPC tritonclient.grpc (1 client/thread)", {}),
    )
    conc = [ours_g[c]["rps"] / peer_g[c]["rps"] if c in ours_g and c in peer_g else None for c in ("32", "128")]
    rest = _cpu_ratio(seq, "REST inferkit", "REST tritonclient.http")
    aio = _cpu_ratio(seq, "gRPC inferkit.aio", "gRPC tritonclient.grpc.aio")

    def ok(values: list[float | None], goal: float, above: bool = True) -> bool | None:
        known = [v for v in values if v is not None]
        if not known:
            return None
        return all(v >= goal for v in known) if above else all(v <= goal for v in known)

    lines = [
        "### Round 2 goals (issue 23), this run",
        "",
        "Ratios: peer time / inferkit time, or inferkit req/s / peer req/s (above 1: inferkit ahead); memory in "
        "payloads. Each figure comes from a section of this page: BYTES and memory from `bytes_bench.py`, JSON "
        "from `codec_bench.py`, the rest from the Triton tables below.",
        "",
        "| case | this run | goal | verdict |",
        "|---|---|---|---|",
        _row("BYTES encode, 100k object bytes / str / numpy U", enc, ">= 5x each", ok(enc, 5), WHY["encode"]),
        _row(
            "BYTES encode, lowest ratio over 1 to 1M elements: bytes / str / U / S",
            low_enc,
            ">= 5x at every size",
            ok(low_enc, 5),
            WHY["small"] + "; above, " + WHY["encode"],
        ),
        _row("BYTES decode, 100k, to bytes / to str", dec, ">= 5x each", ok(dec, 5), WHY["decode"]),
        _row("BYTES decode, lowest ratio over 1 to 1M: bytes / str", low_dec, ">= 5x", ok(low_dec, 5), WHY["small"]),
        _row("binary BYTES request, peak extra memory (bytes / str / U)", mem, "<= 1x payload", ok(mem, 1, False), ""),
        _row(
            "JSON decode + as_numpy, 16 MiB FP32 (pysimdjson / orjson alone)",
            [simd, plain],
            ">= 3x",
            ok([simd], 3),
            WHY["json"],
        ),
        _row(
            "sequential small infer on Triton, REST sync, client CPU/call",
            [rest],
            ">= 1.1x",
            ok([rest], 1.1),
            WHY["rest"],
        ),
        _row(
            "sequential small infer on Triton, gRPC aio, client CPU/call", [aio], ">= 1.1x", ok([aio], 1.1), WHY["grpc"]
        ),
        _row(
            "gRPC c=32 / 128, one shared client vs tritonclient client per thread",
            conc,
            ">= 1.3x",
            ok(conc, 1.3),
            WHY["conc"],
        ),
        "| streaming rows in run_all | see Streaming below | included | met |",
        "",
    ]
    return lines
