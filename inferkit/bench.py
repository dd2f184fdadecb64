"""``inferkit bench``: a load generator for any Open Inference Protocol (v2) server, built on inferkit's clients.

Owns: turning options into one inference request (from flags or the model's metadata), driving it at a sweep of
concurrency levels (closed loop) or at fixed request rates (open loop, with a scheduler), on threads (the sync
clients) or on one asyncio loop (``inferkit.aio``), and reporting each step: throughput, latency percentiles and
errors by class, as a table, JSON, CSV and an optional PNG plot.

How a step runs: a warm-up phase (``--warmup N`` requests or ``--warmup Ns`` seconds, not recorded), then the
measured phase, bounded by ``--requests`` and/or ``--duration`` (whichever comes first). In rate mode the request
``k`` is due at ``start + k / rate``; its latency counts from that due time, so a client that falls behind shows
it in its latencies instead of silently sending less (no coordinated omission).

Layering: bench -> factory, clients (sync, aio), codec. Must not import at module level: grpc, aiohttp, tqdm,
matplotlib, ``inferkit.aio`` (each loads only when the options ask for it, with an error naming the extra).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib
import io
import json
import math
import os
import platform
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence, TextIO

import numpy as np

from inferkit._version import __version__

__all__ = [
    "BenchError",
    "BenchOptions",
    "BenchReport",
    "InputSpec",
    "StepResult",
    "add_arguments",
    "build_request",
    "options_from_args",
    "parse_levels",
    "resolve_inputs",
    "run_bench",
    "run_command",
    "system_info",
    "write_csv",
    "write_json",
    "write_plot",
]

EXIT_OK = 0
EXIT_ERRORS = 1  # a step's error rate exceeded --max-error-rate
EXIT_USAGE = 2  # bad options, server unreachable, model unknown: nothing was measured


class BenchError(ValueError):
    """The benchmark cannot run as asked (bad options, unknown input, metadata unavailable); says what to do."""


# -- options ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One input tensor to send: name, datatype and a concrete shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class BenchOptions:
    """Everything a run needs (the CLI flags, as a value usable from Python).

    Attributes:
        url: ``http(s)://host:port`` (REST) or ``grpc(s)://host:port`` (gRPC).
        model: Model name.
        model_version: Model version (the server's policy when None).
        concurrency: Concurrency levels of a closed-loop sweep (ignored when ``request_rates`` is set).
        request_rates: Fixed request rates (requests per second) of an open-loop run, one step each.
        use_async: Drive the load from one asyncio loop with ``inferkit.aio`` instead of threads.
        shapes: Input name -> shape; when given, exactly these inputs are sent.
        datatypes: Input name -> datatype (overrides the metadata).
        batch_size: Replaces every ``-1`` of a shape taken from the metadata.
        data: ``"random"`` or ``"zeros"``.
        warmup_requests: Requests sent before measuring each step (not recorded).
        warmup_seconds: Seconds of load before measuring each step (not recorded).
        requests: Measured requests per step (None: bounded by ``duration`` only).
        duration: Measured seconds per step (None: bounded by ``requests`` only).
        max_inflight: Rate mode: most requests outstanding at once (worker threads, or tasks for asyncio).
        timeout: Per-request timeout in seconds.
        retries: Client retries per request (0 by default, so that every failure is counted).
        max_error_rate: A step whose errors / requests exceeds this fails the run (exit status 1).
        seed: Seed of the random input data.
    """

    url: str
    model: str
    model_version: Optional[str] = None
    concurrency: tuple[int, ...] = (1,)
    request_rates: tuple[float, ...] = ()
    use_async: bool = False
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    batch_size: int = 1
    data: str = "random"
    warmup_requests: int = 0
    warmup_seconds: float = 0.0
    requests: Optional[int] = None
    duration: Optional[float] = 5.0
    max_inflight: int = 256
    timeout: float = 60.0
    retries: int = 0
    max_error_rate: float = 0.0
    seed: int = 0

    @property
    def transport(self) -> str:
        """``"grpc"`` or ``"rest"``, from the URL's scheme."""
        return "grpc" if self.url.split("://", 1)[0].lower() in ("grpc", "grpcs") else "rest"

    @property
    def mode(self) -> str:
        """``"rate"`` (open loop) or ``"concurrency"`` (closed loop)."""
        return "rate" if self.request_rates else "concurrency"

    def levels(self) -> tuple[float, ...]:
        """The steps to run, in order."""
        return tuple(self.request_rates) if self.request_rates else tuple(float(c) for c in self.concurrency)


def parse_levels(text: str, *, integer: bool = True, what: str = "--concurrency") -> tuple[float, ...]:
    """``"1,2,4"`` or a range ``"start:end[:step]"`` (step ``2`` adds 2, ``x2`` doubles) -> the levels.

    Raises:
        BenchError: A malformed list, a non-positive level, or a range that goes nowhere.
    """
    cast: Callable[[str], float] = (lambda s: float(int(s))) if integer else float
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) not in (2, 3):
                raise ValueError
            start, end = cast(parts[0]), cast(parts[1])
            step_text = parts[2] if len(parts) == 3 else "1"
            geometric = step_text[:1] in ("x", "*")
            step = float(step_text[1:]) if geometric else cast(step_text)
            if (geometric and step <= 1) or (not geometric and step <= 0) or end < start:
                raise ValueError
            levels: list[float] = []
            value = start
            while value <= end + 1e-9 and len(levels) < 10_000:
                levels.append(value)
                value = value * step if geometric else value + step
            if geometric and integer:
                levels = sorted({float(round(v)) for v in levels})
        else:
            levels = [cast(part) for part in text.split(",") if part.strip()]
    except ValueError:
        kind = "integers" if integer else "numbers"
        raise BenchError(
            f"{what} {text!r}: expected {kind} like 1,2,4 or a range start:end[:step] (step x2 doubles)"
        ) from None
    if not levels or any(not math.isfinite(v) or v <= 0 for v in levels):
        raise BenchError(f"{what} {text!r}: every level must be > 0")
    return tuple(levels)


def _parse_warmup(text: str) -> tuple[int, float]:
    """``"20"`` -> 20 requests; ``"2s"`` / ``"1.5s"`` -> seconds."""
    t = text.strip().lower()
    try:
        if t.endswith("s"):
            seconds = float(t[:-1])
            if seconds < 0 or not math.isfinite(seconds):
                raise ValueError
            return 0, seconds
        count = int(t)
        if count < 0:
            raise ValueError
        return count, 0.0
    except ValueError:
        raise BenchError(f"--warmup {text!r}: expected a number of requests (20) or of seconds (2s)") from None


def _parse_named(values: Sequence[str] | None, flag: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or ():
        name, sep, value = item.rpartition(":")
        if not sep or not name or not value:
            raise BenchError(f"{flag} {item!r}: expected NAME:VALUE (e.g. {flag} INPUT0:1,16)")
        try:
            out[name] = convert(value)
        except ValueError as exc:
            raise BenchError(f"{flag} {item!r}: {exc}") from None
    return out


def _shape(text: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in text.split(",") if d.strip())
    if not dims or any(d < 0 for d in dims):
        raise ValueError("a shape is comma-separated dimensions >= 0, e.g. 1,16")
    return dims


# -- inputs ----------------------------------------------------------------------------------------------------


def resolve_inputs(
    metadata: dict[str, Any] | None,
    shapes: dict[str, tuple[int, ...]],
    datatypes: dict[str, str],
    batch_size: int = 1,
    model: str = "",
) -> list[InputSpec]:
    """Decide what to send.

    With ``--shape`` flags, exactly the inputs they name are sent (datatype from ``--datatype`` or the metadata).
    Without, every input of the metadata is sent, each ``-1`` of its shape replaced by ``batch_size``.

    Raises:
        BenchError: An input that the metadata does not list, or whose shape or datatype is unknown.
    """
    from inferkit.codec.datatypes import check_datatype  # noqa: PLC0415 - keeps option parsing import-light

    meta_inputs = {t["name"]: t for t in (metadata or {}).get("inputs", [])}
    known = ", ".join(meta_inputs) or "(no metadata)"
    for name in list(shapes) + list(datatypes):
        if metadata is not None and name not in meta_inputs:
            raise BenchError(f"model {model!r} has no input {name!r}; its inputs: {known}")
    for name in datatypes:
        if shapes and name not in shapes:
            raise BenchError(f"model {model!r}, --datatype {name}: give its shape too (--shape {name}:D0,D1,...)")
    names = list(shapes) if shapes else list(meta_inputs)
    if not names:
        raise BenchError(f"model {model!r}: no inputs to send; give them with --shape NAME:DIMS --datatype NAME:TYPE")
    specs = []
    for name in names:
        meta = meta_inputs.get(name, {})
        datatype = datatypes.get(name) or meta.get("datatype")
        if not datatype:
            raise BenchError(f"model {model!r}, input {name!r}: unknown datatype; give it with --datatype {name}:TYPE")
        try:
            datatype = check_datatype(str(datatype).upper())
        except Exception as exc:  # the codec's message names the datatypes it knows
            raise BenchError(f"model {model!r}, input {name!r}: {exc}") from None
        if name in shapes:
            shape = tuple(shapes[name])
        else:
            shape = tuple(batch_size if int(d) < 0 else int(d) for d in meta.get("shape", []))
        specs.append(InputSpec(name, datatype, shape))
    return specs


def make_data(spec: InputSpec, data: str, rng: np.random.Generator) -> np.ndarray:
    """An array for ``spec``: ``"random"`` (small values that no integer model overflows on) or ``"zeros"``."""
    from inferkit.codec.datatypes import datatype_to_dtype  # noqa: PLC0415

    shape = spec.shape
    if spec.datatype == "BYTES":
        count = int(np.prod(shape))
        if data == "zeros":
            return np.array([b""] * count, dtype=object).reshape(shape)
        letters = rng.integers(97, 123, (count, 8), dtype=np.uint8)
        return np.array([row.tobytes() for row in letters], dtype=object).reshape(shape)
    dtype = np.dtype(np.float32) if spec.datatype == "BF16" else datatype_to_dtype(spec.datatype)
    if data == "zeros":
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        return rng.integers(0, 64, shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def build_request(options: BenchOptions, specs: Sequence[InputSpec]) -> Any:
    """One InferRequest with data for every spec; built once and sent by every worker (read-only)."""
    from inferkit import InferInput, InferRequest  # noqa: PLC0415

    rng = np.random.default_rng(options.seed)
    inputs = [InferInput(s.name, list(s.shape), s.datatype) for s in specs]
    for tensor, spec in zip(inputs, specs):
        tensor.set_data_from_numpy(make_data(spec, options.data, rng))
    return InferRequest(options.model, inputs, model_version=options.model_version)


# -- one step --------------------------------------------------------------------------------------------------

_STOP, _WARMUP, _MEASURE = -1, 0, 1


class _Tickets:
    """Hands out request slots for one step: warm-up ones first, then measured ones, then stop.

    ``take(now)`` is called before each request (``now`` is the due time in rate mode); thread-safe.
    """

    def __init__(self, options: BenchOptions, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._warm_left = options.warmup_requests
        self._warm_until = clock() + options.warmup_seconds if options.warmup_seconds else None
        self._measure_left = options.requests
        self._duration = options.duration
        self.measure_start: float | None = None
        self.measure_end: float | None = None
        self.issued = 0  # measured requests handed out
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def take(self, now: float | None = None) -> int:
        with self._lock:
            if self.stopped:
                return _STOP
            t = self._clock() if now is None else now
            if self._warm_left > 0:
                self._warm_left -= 1
                return _WARMUP
            if self._warm_until is not None and t < self._warm_until:
                return _WARMUP
            if self.measure_start is None:
                self.measure_start = t
                if self._duration is not None:
                    self.measure_end = t + self._duration
            if self.measure_end is not None and t >= self.measure_end:
                self.stopped = True
                return _STOP
            if self._measure_left is not None:
                if self._measure_left <= 0:
                    self.stopped = True
                    return _STOP
                self._measure_left -= 1
            self.issued += 1
            return _MEASURE

    def fraction_done(self, now: float) -> float:
        """0..1 progress of the measured phase (the larger of count and time fractions)."""
        if self.measure_start is None:
            return 0.0
        done = 0.0
        if self.measure_end is not None and self._duration:
            done = (now - self.measure_start) / self._duration
        if self._measure_left is not None:
            total = self.issued + self._measure_left
            done = max(done, self.issued / total if total else 1.0)
        return min(1.0, max(0.0, done))


class _Recorder:
    """Results of one worker (no lock: each worker has its own; merged after the step)."""

    __slots__ = ("latencies", "errors", "last_end", "lags")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.last_end = 0.0
        self.lags: list[float] = []

    def done(self, kind: int, start: float, end: float, error: BaseException | None) -> None:
        if kind != _MEASURE:
            return
        self.last_end = max(self.last_end, end)
        if error is None:
            self.latencies.append(end - start)
        else:
            self.errors[type(error).__name__] += 1


@dataclass
class StepResult:
    """One step's figures. Latencies are of successful requests, in milliseconds.

    Attributes:
        mode: ``"concurrency"`` or ``"rate"``.
        level: The concurrency (closed loop) or the target request rate (open loop).
        requests: Measured requests completed (successes and errors).
        ok: Successful requests.
        errors: Error class name -> count.
        seconds: Measured wall time, from the first measured request's start to the last one's end.
        throughput: Successful requests per second.
        p50_ms, p90_ms, p99_ms, max_ms, mean_ms: Latency percentiles.
        error_rate: errors / requests.
        send_lag_p99_ms: Rate mode: 99th percentile of how late requests were sent after their due time.
    """

    mode: str
    level: float
    requests: int
    ok: int
    errors: dict[str, int]
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    error_rate: float
    send_lag_p99_ms: Optional[float] = None

    @property
    def label(self) -> str:
        if self.mode == "rate":
            return f"{self.level:g}/s"
        return f"{int(self.level)}"


def _summarize(options: BenchOptions, level: float, tickets: _Tickets, recorders: Sequence[_Recorder]) -> StepResult:
    lat = np.array([x for r in recorders for x in r.latencies], dtype=np.float64) * 1e3
    errors: Counter[str] = Counter()
    for r in recorders:
        errors.update(r.errors)
    n_err = sum(errors.values())
    ok = int(lat.size)
    total = ok + n_err
    start = tickets.measure_start or 0.0
    end = max((r.last_end for r in recorders), default=start)
    seconds = max(end - start, 1e-9) if total else 0.0
    if ok:
        p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
        mx, mean = float(lat.max()), float(lat.mean())
    else:
        p50 = p90 = p99 = mx = mean = float("nan")
    lags = [x for r in recorders for x in r.lags]
    lag = float(np.percentile(np.array(lags) * 1e3, 99)) if lags else None
    return StepResult(
        mode=options.mode,
        level=level,
        requests=total,
        ok=ok,
        errors=dict(sorted(errors.items())),
        seconds=seconds,
        throughput=ok / seconds if seconds else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        max_ms=mx,
        mean_ms=mean,
        error_rate=n_err / total if total else 0.0,
        send_lag_p99_ms=lag,
    )


def _interval(rate: float) -> float:
    return 1.0 / rate


def _run_step_threads(
    options: BenchOptions, client: Any, request: Any, level: float, tickets: _Tickets, recorders: list[_Recorder]
) -> None:
    clock = time.perf_counter

    def call(rec: _Recorder, kind: int, start: float) -> None:
        error: BaseException | None = None
        try:
            client.infer(request, timeout=options.timeout)
        except Exception as exc:  # every failure is a figure of the step, by class
            error = exc
        rec.done(kind, start, clock(), error)

    if options.mode == "concurrency":

        def worker(rec: _Recorder) -> None:
            while True:
                kind = tickets.take()
                if kind == _STOP:
                    return
                call(rec, kind, clock())

        recorders.extend(_Recorder() for _ in range(int(level)))
        threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in recorders]
        for t in threads:
            t.start()
        _join_all(threads, tickets)
        return

    # Open loop: the scheduler (this thread) hands each due request to a pool; latency counts from the due time.
    local = threading.local()
    interval = _interval(level)

    def job(kind: int, due: float) -> None:
        rec = getattr(local, "rec", None)
        if rec is None:
            rec = local.rec = _Recorder()
            with lock:
                recorders.append(rec)
        if kind == _MEASURE:
            rec.lags.append(max(0.0, clock() - due))
        call(rec, kind, due)

    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=options.max_inflight, thread_name_prefix="inferkit-bench")
    try:
        base = clock()
        k = 0
        while True:
            due = base + k * interval
            kind = tickets.take(due)
            if kind == _STOP:
                break
            delay = due - clock()
            if delay > 0:
                time.sleep(delay)
            pool.submit(job, kind, due)
            k += 1
    except BaseException:
        tickets.stop()
        raise
    finally:
        pool.shutdown(wait=True)


def _join_all(threads: Sequence[threading.Thread], tickets: _Tickets) -> None:
    try:
        for t in threads:
            while t.is_alive():  # short joins keep Ctrl-C responsive; requests are bounded by their timeout
                t.join(0.2)
    except BaseException:
        tickets.stop()
        for t in threads:
            t.join(1.0)
        raise


async def _run_step_async(
    options: BenchOptions, client: Any, request: Any, level: float, tickets: _Tickets, recorders: list[_Recorder]
) -> None:
    clock = time.perf_counter

    async def call(rec: _Recorder, kind: int, start: float) -> None:
        error: BaseException | None = None
        try:
            await client.infer(request, timeout=options.timeout)
        except Exception as exc:  # every failure is a figure of the step, by class
            error = exc
        rec.done(kind, start, clock(), error)

    if options.mode == "concurrency":

        async def worker(rec: _Recorder) -> None:
            while True:
                kind = tickets.take()
                if kind == _STOP:
                    return
                await call(rec, kind, clock())

        recorders.extend(_Recorder() for _ in range(int(level)))
        try:
            await asyncio.gather(*(worker(r) for r in recorders))
        finally:
            tickets.stop()
        return

    rec = _Recorder()
    recorders.append(rec)
    limit = asyncio.Semaphore(options.max_inflight)
    pending: set[asyncio.Task[None]] = set()
    interval = _interval(level)

    async def job(kind: int, due: float) -> None:
        async with limit:
            if kind == _MEASURE:
                rec.lags.append(max(0.0, clock() - due))
            await call(rec, kind, due)

    try:
        base = clock()
        k = 0
        while True:
            due = base + k * interval
            kind = tickets.take(due)
            if kind == _STOP:
                break
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(job(kind, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += 1
        if pending:
            await asyncio.gather(*pending)
    finally:
        tickets.stop()
        for task in pending:
            task.cancel()


# -- progress --------------------------------------------------------------------------------------------------


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


# -- the run ---------------------------------------------------------------------------------------------------


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
    """A whole run: the options, the machine, the inputs sent, and one StepResult per step."""

    options: BenchOptions
    system: dict[str, Any]
    inputs: list[InputSpec]
    steps: list[StepResult] = field(default_factory=list)

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
        }


def _make_client(options: BenchOptions) -> Any:
    """A client shared by every worker of the run (inferkit's clients are thread-safe / loop-safe)."""
    needed = max(int(max(options.concurrency, default=1)), options.max_inflight)
    if options.use_async:
        try:
            aio = importlib.import_module("inferkit.aio")
            factory = aio.InferenceClientFactory
        except (ImportError, AttributeError) as exc:
            raise BenchError(f"--async needs inferkit.aio, which is not available here: {exc}") from exc
    else:
        from inferkit.factory import InferenceClientFactory as factory  # noqa: PLC0415, N813
    try:
        if options.transport == "grpc":
            return factory.get_grpc_client(options.url, timeout=options.timeout, retries=options.retries)
        from inferkit.config import RESTConfig  # noqa: PLC0415

        config = RESTConfig(retries=options.retries, timeout=options.timeout, pool_maxsize=needed)
        return factory.get_rest_client(options.url, config)
    except ImportError as exc:  # the client names the extra to install (grpc, aio)
        raise BenchError(str(exc)) from exc


def _prepare(options: BenchOptions, client: Any, metadata: dict[str, Any] | None) -> tuple[list[InputSpec], Any]:
    specs = resolve_inputs(metadata, options.shapes, options.datatypes, options.batch_size, options.model)
    return specs, build_request(options, specs)


def _need_metadata(options: BenchOptions) -> bool:
    return not (options.shapes and all(name in options.datatypes for name in options.shapes))


def _validate(options: BenchOptions) -> None:
    if options.requests is None and options.duration is None:
        raise BenchError("every step must be bounded: give --requests N and/or --duration SECONDS")
    if options.requests is not None and options.requests < 1:
        raise BenchError("--requests must be >= 1")
    if options.duration is not None and not options.duration > 0:
        raise BenchError("--duration must be > 0 seconds")
    if options.data not in ("random", "zeros"):
        raise BenchError(f"--data {options.data!r}: expected random or zeros")
    if options.batch_size < 1:
        raise BenchError("--batch-size must be >= 1")
    if options.max_inflight < 1:
        raise BenchError("--max-inflight must be >= 1")
    if not 0 <= options.max_error_rate <= 1:
        raise BenchError("--max-error-rate is a fraction between 0 and 1")
    if "://" not in options.url:
        raise BenchError(f"--url {options.url!r}: give a scheme, e.g. http://127.0.0.1:8000 or grpc://127.0.0.1:8001")


def run_bench(
    options: BenchOptions,
    *,
    progress: str = "none",
    stream: TextIO | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> BenchReport:
    """Run every step of ``options`` and return the report.

    Args:
        options: What to run.
        progress: ``"auto"`` (tqdm or plain on a terminal, nothing otherwise), ``"tqdm"``, ``"plain"`` or
            ``"none"``.
        stream: Where progress goes (default: stderr).
        on_step: Called with each step's result as soon as it is done.

    Raises:
        BenchError: Bad options, or the model's metadata could not be read (server down, unknown model).
    """
    _validate(options)
    stream = stream or sys.stderr
    shower = _Progress(_Progress.choose(progress, stream), stream)
    if options.use_async:
        return asyncio.run(_run_async(options, shower, on_step))
    client = _make_client(options)
    try:
        metadata = None
        if _need_metadata(options):
            try:
                metadata = client.get_model_metadata(options.model, options.model_version)
            except Exception as exc:  # unreachable server, unknown model: nothing can be measured
                raise BenchError(_metadata_error(options, exc)) from exc
        specs, request = _prepare(options, client, metadata)
        report = BenchReport(options, system_info(), specs)
        for level in options.levels():
            tickets = _Tickets(options, time.perf_counter)
            recorders: list[_Recorder] = []
            shower.run(_step_label(options, level), tickets, recorders)
            try:
                _run_step_threads(options, client, request, level, tickets, recorders)
            finally:
                shower.done()
            step = _summarize(options, level, tickets, recorders)
            report.steps.append(step)
            if on_step is not None:
                on_step(step)
        return report
    finally:
        client.close()


async def _run_async(
    options: BenchOptions, shower: _Progress, on_step: Callable[[StepResult], None] | None
) -> BenchReport:
    client = _make_client(options)
    try:
        metadata = None
        if _need_metadata(options):
            try:
                metadata = await client.get_model_metadata(options.model, options.model_version)
            except Exception as exc:
                raise BenchError(_metadata_error(options, exc)) from exc
        specs, request = _prepare(options, client, metadata)
        report = BenchReport(options, system_info(), specs)
        for level in options.levels():
            tickets = _Tickets(options, time.perf_counter)
            recorders: list[_Recorder] = []
            shower.run(_step_label(options, level), tickets, recorders)
            try:
                await _run_step_async(options, client, request, level, tickets, recorders)
            finally:
                shower.done()
            step = _summarize(options, level, tickets, recorders)
            report.steps.append(step)
            if on_step is not None:
                on_step(step)
        return report
    finally:
        await client.close()


def _metadata_error(options: BenchOptions, exc: Exception) -> str:
    return (
        f"cannot read the metadata of model {options.model!r} at {options.url}: {type(exc).__name__}: {exc}. "
        "Check --url and --model, or give every input with --shape NAME:DIMS --datatype NAME:TYPE"
    )


def _step_label(options: BenchOptions, level: float) -> str:
    return f"rate {level:g}/s" if options.mode == "rate" else f"concurrency {int(level)}"


# -- outputs ---------------------------------------------------------------------------------------------------

_COLUMNS = ("requests", "ok", "errors", "infer/s", "p50 ms", "p90 ms", "p99 ms", "max ms")


def format_header(report: BenchReport) -> str:
    """The lines above the table: server, model, mode, inputs, machine."""
    o, s = report.options, report.system
    load = " ".join(f"{x:.2f}" for x in s.get("loadavg") or ())
    inputs = ", ".join(f"{i.name} {i.datatype}{list(i.shape)}" for i in report.inputs)
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
            f"  inputs: {inputs} ({o.data})",
            f"  machine: nproc {s.get('nproc')}, load average {load}, "
            f"memory {s.get('mem_available_gib', '?')}/{s.get('mem_total_gib', '?')} GiB free",
        ]
    )


def format_table(report: BenchReport) -> str:
    """The results as a fixed-width table, one row per step."""
    first = "rate" if report.options.mode == "rate" else "concurrency"
    head = f"{first:>11} " + " ".join(f"{c:>9}" for c in _COLUMNS) + "  error classes"
    lines = [head, "-" * len(head)]
    for s in report.steps:
        classes = ", ".join(f"{k} x{v}" for k, v in s.errors.items())
        err = sum(s.errors.values())
        lines.append(
            f"{s.label:>11} {s.requests:>9} {s.ok:>9} {err:>9} {s.throughput:>9.1f} "
            f"{s.p50_ms:>9.2f} {s.p90_ms:>9.2f} {s.p99_ms:>9.2f} {s.max_ms:>9.2f}  {classes}".rstrip()
        )
    return "\n".join(lines)


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
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional (``plot`` extra)
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'inferkit[plot]'") from exc
    # Figure + Agg canvas directly: no pyplot, so no global backend state in the caller's process.
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = [s for s in report.steps if s.ok]
    x = [s.throughput for s in steps]
    ax.plot(x, [s.p50_ms for s in steps], marker="o", label="p50")
    ax.plot(x, [s.p99_ms for s in steps], marker="s", label="p99")
    for s in steps:
        ax.annotate(s.label, (s.throughput, s.p50_ms), textcoords="offset points", xytext=(4, 4), fontsize=8)
    o = report.options
    ax.set_title(f"{o.model} over {o.transport} ({'asyncio' if o.use_async else 'threads'}, {o.mode} sweep)")
    ax.set_xlabel("throughput (infer/s)")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


# -- command line ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``inferkit bench`` flags (perf_analyzer's names where they exist)."""
    parser.add_argument("-u", "--url", default="http://127.0.0.1:8000", help="http(s)://host:port or grpc://host:port")
    parser.add_argument("-m", "--model", required=True, help="model name")
    parser.add_argument("--model-version", help="model version (default: the server's policy)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", help="concurrency levels, e.g. 1,2,4,8 (closed loop; default 1)")
    load.add_argument("--concurrency-range", metavar="START:END[:STEP]", help="e.g. 1:128:x2 or 4:16:4")
    load.add_argument("--request-rate", metavar="RATE[,RATE...]", help="fixed request rate(s) per second (open loop)")
    load.add_argument("--request-rate-range", metavar="START:END[:STEP]", help="request rates, e.g. 100:400:100")
    parser.add_argument("--async", dest="use_async", action="store_true", help="asyncio with inferkit.aio")
    parser.add_argument("--shape", action="append", metavar="NAME:DIMS", help="input shape, e.g. INPUT0:1,16")
    parser.add_argument("--datatype", action="append", metavar="NAME:TYPE", help="input datatype, e.g. INPUT0:INT32")
    parser.add_argument("-b", "--batch-size", type=int, default=1, help="replaces -1 in metadata shapes (default 1)")
    parser.add_argument("--data", choices=("random", "zeros"), default="random", help="input data (default random)")
    parser.add_argument("--warmup", default="1s", help="per step, not recorded: N requests or Ns seconds (default 1s)")
    parser.add_argument("--requests", type=int, help="measured requests per step")
    parser.add_argument("--duration", type=float, help="measured seconds per step (default 5 unless --requests)")
    parser.add_argument("--max-inflight", type=int, default=256, help="rate mode: most outstanding requests")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds (default 60)")
    parser.add_argument("--retries", type=int, default=0, help="client retries per request (default 0)")
    parser.add_argument(
        "--max-error-rate", type=float, default=0.0, help="fail (exit 1) when a step's error fraction exceeds this"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input data")
    parser.add_argument("--json", dest="json_path", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--csv", dest="csv_path", metavar="FILE", help="write one CSV row per step")
    parser.add_argument("--plot", dest="plot_path", metavar="FILE", help="PNG of latency vs throughput (plot extra)")
    parser.add_argument(
        "--progress", choices=("auto", "tqdm", "plain", "none"), default="auto", help="progress display (stderr)"
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """The parsed flags as BenchOptions (raises BenchError on a bad value)."""
    rates: tuple[float, ...] = ()
    concurrency: tuple[float, ...] = (1.0,)
    if args.request_rate:
        rates = parse_levels(args.request_rate, integer=False, what="--request-rate")
    elif args.request_rate_range:
        rates = parse_levels(args.request_rate_range, integer=False, what="--request-rate-range")
    elif args.concurrency:
        concurrency = parse_levels(args.concurrency)
    elif args.concurrency_range:
        concurrency = parse_levels(args.concurrency_range, what="--concurrency-range")
    warm_n, warm_s = _parse_warmup(args.warmup)
    duration = args.duration if args.duration is not None else (None if args.requests else 5.0)
    return BenchOptions(
        url=args.url,
        model=args.model,
        model_version=args.model_version,
        concurrency=tuple(int(c) for c in concurrency),
        request_rates=rates,
        use_async=args.use_async,
        shapes=_parse_named(args.shape, "--shape", _shape),
        datatypes=_parse_named(args.datatype, "--datatype", lambda v: v.upper()),
        batch_size=args.batch_size,
        data=args.data,
        warmup_requests=warm_n,
        warmup_seconds=warm_s,
        requests=args.requests,
        duration=duration,
        max_inflight=args.max_inflight,
        timeout=args.timeout,
        retries=args.retries,
        max_error_rate=args.max_error_rate,
        seed=args.seed,
    )


def run_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``inferkit bench``: run, print the table, write the files; returns the exit status (0, 1 or 2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        options = options_from_args(args)
        if args.plot_path:  # fail before a long run, not after it
            try:
                importlib.import_module("matplotlib")
            except ImportError:
                raise BenchError("--plot needs matplotlib: pip install 'inferkit[plot]'") from None
        report = run_bench(options, progress=args.progress, stream=err)
    except BenchError as exc:
        print(f"inferkit bench: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("inferkit bench: interrupted", file=err)
        return 130
    print(format_header(report), file=out)
    print(format_table(report), file=out)
    if args.json_path:
        write_json(report, args.json_path)
    if args.csv_path:
        write_csv(report, args.csv_path)
    if args.plot_path:
        write_plot(report, args.plot_path)
    failed = report.failed_steps
    if failed:
        labels = ", ".join(s.label for s in failed)
        print(
            f"inferkit bench: error rate above {options.max_error_rate:g} at step(s) {labels}",
            file=err,
        )
        return EXIT_ERRORS
    return EXIT_OK
