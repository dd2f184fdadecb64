"""The progress display of ``inferkit bench``: the running step as a tqdm bar, a plain ``\\r`` line, or nothing.

Owns: ``_Progress`` (polled from a daemon thread; tqdm only when chosen and installed).

Must not import: tqdm at module level (the ``progress`` extra), grpc, aiohttp, matplotlib.
"""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any, TextIO

from inferkit.bench.step import _Recorder, _Tickets

__all__: list[str] = []


class _Progress:
    """Shows the running step: a tqdm bar, a plain ``\\r`` line, or nothing (polled from a daemon thread)."""

    def __init__(self, kind: str, stream: TextIO) -> None:
        self.kind = kind
        self.stream = stream
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @staticmethod
    def choose(requested: str, stream: TextIO) -> str:
        if requested != "auto":
            return requested
        if not (hasattr(stream, "isatty") and stream.isatty()):
            return "none"
        try:
            importlib.import_module("tqdm")
        except ImportError:
            return "plain"
        return "tqdm"

    def run(self, label: str, tickets: _Tickets, recorders: list[_Recorder]) -> None:
        if self.kind == "none":
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(label, tickets, recorders), daemon=True)
        self._thread.start()

    def _loop(self, label: str, tickets: _Tickets, recorders: list[_Recorder]) -> None:
        # The bar counts what bounds the step: requests (with --requests; tqdm's rate is then requests per
        # second) or seconds (--duration only; no rate, "seconds per second" means nothing).
        by_count = tickets.requests is not None
        bar: Any = None
        if self.kind == "tqdm":
            try:
                from tqdm import tqdm  # noqa: PLC0415 - optional dependency (the ``progress`` extra)
            except ImportError:
                self.kind = "plain"
            else:
                common = {"desc": label, "file": self.stream, "leave": False, "dynamic_ncols": True}
                if by_count:
                    bar = tqdm(total=tickets.requests, unit="req", **common)
                else:
                    fmt = "{l_bar}{bar}| {n:.1f}/{total:.1f} s{postfix}"
                    bar = tqdm(total=tickets.duration, unit="s", bar_format=fmt, **common)
        try:
            while not self._stop.wait(0.2):
                now = time.perf_counter()
                count = sum(len(r.latencies) + sum(r.errors.values()) for r in list(recorders))
                started = tickets.measure_start
                elapsed = 0.0 if started is None else min(now - started, tickets.duration or now - started)
                if bar is not None:
                    bar.n = count if by_count else round(elapsed, 1)
                    bar.set_postfix_str("warm-up" if started is None else ("" if by_count else f"{count} req"))
                else:
                    done = tickets.fraction_done(now)
                    status = "warm-up" if started is None else f"{count} req in {elapsed:.1f} s"
                    self.stream.write(f"\r{label}: {done * 100:5.1f}% {status:<24}")
                    self.stream.flush()
        finally:
            if bar is not None:
                bar.close()
            else:
                self.stream.write("\r" + " " * 70 + "\r")
                self.stream.flush()

    def done(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(2.0)
            self._thread = None
