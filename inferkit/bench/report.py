"""The results of ``inferkit bench``: the report of a run and its outputs (table, JSON, CSV, PNG plot).

Owns: :func:`system_info` (the machine, printed with every report), :class:`BenchReport`, :func:`format_header`,
:func:`format_table`, :func:`format_errors`, :func:`write_json`, :func:`write_csv` and :func:`write_plot`.

Must not import: matplotlib at module level (the ``plot`` extra; it loads in :func:`write_plot`), grpc,
aiohttp, tqdm, the clients.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from inferkit._version import __version__
from inferkit.bench.options import DEFAULT_PAYLOAD, BenchError, BenchOptions, InputSpec
from inferkit.bench.step import StepResult

__all__ = [
    "BenchReport",
    "format_errors",
    "format_header",
    "format_table",
    "system_info",
    "write_csv",
    "write_json",
    "write_plot",
]


def system_info() -> dict[str, Any]:
    """``nproc``, load average, memory, Python and inferkit versions: printed with every report."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "inferkit": __version__,
    }
    try:
        with open("/proc/meminfo") as f:
            mem = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        info["mem_total_gib"] = round(mem["MemTotal"] / 2**30, 1)
        info["mem_available_gib"] = round(mem.get("MemAvailable", 0) / 2**30, 1)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    return info


@dataclass
class BenchReport:
    """A whole run: the options, the machine, the inputs sent, and one StepResult per step.

    ``stopped_after`` is the label of the step after which the run stopped because every request of it failed
    (None: every step ran).
    """

    options: BenchOptions
    system: dict[str, Any]
    inputs: list[InputSpec]
    steps: list[StepResult] = field(default_factory=list)
    stopped_after: Optional[str] = None

    @property
    def failed_steps(self) -> list[StepResult]:
        """Steps whose error rate exceeded ``max_error_rate``."""
        return [s for s in self.steps if s.error_rate > self.options.max_error_rate]

    def to_dict(self) -> dict[str, Any]:
        opts = asdict(self.options)
        opts["shapes"] = {k: list(v) for k, v in self.options.shapes.items()}
        return {
            "inferkit_bench": 1,
            "options": {**opts, "transport": self.options.transport, "mode": self.options.mode},
            "system": self.system,
            "inputs": [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in self.inputs],
            "steps": [{**asdict(s), "label": s.label} for s in self.steps],
            "failed_steps": [s.label for s in self.failed_steps],
            "stopped_after": self.stopped_after,
        }


_COLUMNS = ("requests", "ok", "errors", "infer/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
# --stream: requests/s and events/s, then time to first event (TTFE) and time between events (TBE) percentiles.
_STREAM_COLUMNS = ("requests", "ok", "errors", "req/s", "events/s", "TTFE p50", "p95", "p99", "TBE p50", "p95", "p99")


def format_header(report: BenchReport) -> str:
    """The lines above the table: server, model, mode, inputs, machine."""
    o, s = report.options, report.system
    load = " ".join(f"{x:.2f}" for x in s.get("loadavg") or ())
    if o.stream:
        payload = json.dumps(o.payload if o.payload is not None else DEFAULT_PAYLOAD)
        inputs = "generate_stream payload " + (payload if len(payload) <= 100 else payload[:97] + "...")
    else:
        inputs = ", ".join(f"{i.name} {i.datatype}{list(i.shape)}" for i in report.inputs) + f" ({o.data})"
    bound = " / ".join(
        x for x in (f"{o.requests} requests" if o.requests else "", f"{o.duration:g} s" if o.duration else "") if x
    )
    warm = f"{o.warmup_requests} requests" if o.warmup_requests else f"{o.warmup_seconds:g} s"
    return "\n".join(
        [
            f"inferkit bench {__version__}: {o.url} model {o.model!r}"
            + (f" version {o.model_version}" if o.model_version else ""),
            f"  {o.transport} via {'asyncio' if o.use_async else 'threads'}, {o.mode} mode; "
            f"each step: warm-up {warm}, then {bound}",
            f"  inputs: {inputs}",
            f"  machine: nproc {s.get('nproc')}, load average {load}, "
            f"memory {s.get('mem_available_gib', '?')}/{s.get('mem_total_gib', '?')} GiB free",
        ]
    )


def format_table(report: BenchReport) -> str:
    """The results as a fixed-width table, one row per step, then the first message of each error class."""
    first = "rate" if report.options.mode == "rate" else "concurrency"
    columns = _STREAM_COLUMNS if report.options.stream else _COLUMNS
    head = f"{first:>11} " + " ".join(f"{c:>9}" for c in columns) + "  error classes"
    lines = [head, "-" * len(head)]
    if report.options.stream:  # a line above the percentile columns says what they are
        lines.insert(
            0, (" " * 62 + "time to first event, ms".center(29) + " " + "time between events, ms".center(29)).rstrip()
        )
    for s in report.steps:
        classes = ", ".join(f"{k} x{v}" for k, v in s.errors.items())
        err = sum(s.errors.values())
        if report.options.stream:
            cells = (s.ttfe_p50_ms, s.ttfe_p95_ms, s.ttfe_p99_ms, s.tbe_p50_ms, s.tbe_p95_ms, s.tbe_p99_ms)
            lines.append(
                f"{s.label:>11} {s.requests:>9} {s.ok:>9} {err:>9} {s.throughput:>9.1f} {s.events_per_s or 0:>9.1f} "
                + " ".join(f"{_ms(x):>9}" for x in cells)
                + f"  {classes}".rstrip()
            )
            continue
        lines.append(
            f"{s.label:>11} {s.requests:>9} {s.ok:>9} {err:>9} {s.throughput:>9.1f} "
            f"{s.p50_ms:>9.2f} {s.p90_ms:>9.2f} {s.p99_ms:>9.2f} {s.max_ms:>9.2f}  {classes}".rstrip()
        )
    return "\n".join(lines + format_errors(report))


def _ms(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.2f}"


def format_errors(report: BenchReport) -> list[str]:
    """Each error class with its first message (what to fix is usually in it), and the steps it occurred in."""
    seen: dict[tuple[str, str], list[str]] = {}
    for s in report.steps:
        for name in s.errors:
            seen.setdefault((name, s.error_messages.get(name, "")), []).append(s.label)
    if not seen:
        return []
    lines = ["errors (first message of each class):"]
    for (name, message), labels in seen.items():
        where = "step" if len(labels) == 1 else "steps"
        lines.append(f"  {name} ({where} {', '.join(labels)}): {message}")
    return lines


def write_json(report: BenchReport, path: str) -> None:
    """The report as JSON (NaN latencies of all-error steps become null)."""
    data = _nan_to_none(report.to_dict())
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


CSV_FIELDS = (
    "mode",
    "level",
    "requests",
    "ok",
    "error_count",
    "error_rate",
    "seconds",
    "throughput",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "send_lag_p99_ms",
    "events",
    "events_per_s",
    "ttfe_p50_ms",
    "ttfe_p95_ms",
    "ttfe_p99_ms",
    "tbe_p50_ms",
    "tbe_p95_ms",
    "tbe_p99_ms",
    "errors",
)


def write_csv(report: BenchReport, path: str) -> None:
    """One row per step; ``errors`` is ``Class:count;...``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for s in report.steps:
        row = {k: v for k, v in asdict(s).items() if k in CSV_FIELDS}
        row["error_count"] = sum(s.errors.values())
        row["errors"] = ";".join(f"{k}:{v}" for k, v in s.errors.items())
        writer.writerow(row)
    with open(path, "w", newline="") as f:
        f.write(buf.getvalue())


def write_plot(report: BenchReport, path: str) -> None:
    """A PNG of latency (p50 and p99) against throughput, each point labelled with its step.

    Raises:
        ImportError: matplotlib is missing (names the ``plot`` extra).
        BenchError: No step had a successful request: there is nothing to plot (no file is written).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional (``plot`` extra)
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'inferkit[plot]'") from exc
    steps = [s for s in report.steps if s.ok]
    if not steps:
        raise BenchError("no plot written: no step had a successful request, so there is no latency to plot")
    # Figure + Agg canvas directly: no pyplot, so no global backend state in the caller's process.
    o = report.options
    title = f"{o.model} over {o.transport} ({'asyncio' if o.use_async else 'threads'}, {o.mode} sweep)"
    if o.stream:  # time to first event against requests/s, time between events against events/s
        fig = Figure(figsize=(11, 4.5), dpi=100)
        panels = [
            ("requests/s", "time to first event (ms)", "throughput", ("ttfe_p50_ms", "ttfe_p99_ms")),
            ("events/s", "time between events (ms)", "events_per_s", ("tbe_p50_ms", "tbe_p99_ms")),
        ]
        fig.suptitle(f"generate_stream: {title}")
    else:
        fig = Figure(figsize=(7, 4.5), dpi=100)
        panels = [("throughput (infer/s)", "latency (ms)", "throughput", ("p50_ms", "p99_ms"))]
    FigureCanvasAgg(fig)
    for i, (xlabel, ylabel, xkey, (low, high)) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        x = [getattr(s, xkey) or 0.0 for s in steps]
        y50 = [_nan(getattr(s, low)) for s in steps]
        ax.plot(x, y50, marker="o", label="p50")
        ax.plot(x, [_nan(getattr(s, high)) for s in steps], marker="s", label="p99")
        for s, xi, yi in zip(steps, x, y50):
            ax.annotate(s.label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if not o.stream:
            ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
