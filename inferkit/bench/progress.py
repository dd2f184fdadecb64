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
        bar: Any = None
        if self.kind == "tqdm":
            try:
                from tqdm import tqdm  # noqa: PLC0415 - optional dependency (the ``progress`` extra)
            except ImportError:
                self.kind = "plain"
            else:
                bar = tqdm(total=100, desc=label, unit="%", file=self.stream, leave=False, dynamic_ncols=True)
        try:
            while not self._stop.wait(0.2):
                done = tickets.fraction_done(time.perf_counter())
                count = sum(len(r.latencies) + sum(r.errors.values()) for r in list(recorders))
                status = "warm-up" if tickets.measure_start is None else f"{count} req"
                if bar is not None:
                    bar.n = round(done * 100)
                    bar.set_postfix_str(status, refresh=True)
                else:
                    self.stream.write(f"\r{label}: {done * 100:5.1f}% {status:<16}")
                    self.stream.flush()
        finally:
            if bar is not None:
                bar.close()
            else:
                self.stream.write("\r" + " " * 60 + "\r")
                self.stream.flush()

    def done(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(2.0)
            self._thread = None
