"""``inferkit bench`` options: what a run needs, as a value usable from Python, and the parsing of its flags' values.

Owns: :class:`BenchOptions`, :class:`InputSpec`, :class:`BenchError` (the benchmark cannot run as asked; says what
to do) and the value parsers (:func:`parse_levels`, :func:`parse_payload`, the warm-up, ``NAME:VALUE`` and shape
parsers).

Must not import: the clients, the codec at module level, grpc, aiohttp, tqdm, matplotlib (stdlib only: option
parsing stays import-light), nor the other ``inferkit.bench`` modules (this is their bottom layer).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

__all__ = ["DEFAULT_PAYLOAD", "BenchError", "BenchOptions", "InputSpec", "parse_levels", "parse_payload"]

#: What ``--stream`` sends when no ``--payload`` is given (Triton's generate schema, as TensorRT-LLM and vLLM take it).
DEFAULT_PAYLOAD: dict[str, Any] = {
    "text_input": "Write a short story about a robot who learns to paint.",
    "max_tokens": 64,
}


class BenchError(ValueError):
    """The benchmark cannot run as asked (bad options, unknown input, metadata unavailable); says what to do."""


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
        keep_going: Run every step even after one in which every request failed (by default the run stops
            there: the next steps would fail the same way, for longer).
        stream: Benchmark ``generate_stream`` (server-sent events on REST, ModelStreamInfer on gRPC) with
            ``payload`` instead of ``infer``: each request is one whole stream, and the step also reports the time
            to first event, the time between events and events per second.
        payload: The generate payload of ``stream`` (None: :data:`DEFAULT_PAYLOAD`).
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
    keep_going: bool = False
    stream: bool = False
    payload: Optional[dict[str, Any]] = None

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


def parse_payload(text: str) -> dict[str, Any]:
    """``--payload``: a JSON object, or ``@FILE`` holding one.

    Raises:
        BenchError: Not JSON, not an object, or a file that cannot be read.
    """
    source = "--payload"
    if text.startswith("@"):
        source = f"--payload file {text[1:]!r}"
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise BenchError(f"{source}: cannot read it: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BenchError(f"{source}: not JSON ({exc}); e.g. --payload '{json.dumps(DEFAULT_PAYLOAD)}'") from None
    if not isinstance(value, dict):
        raise BenchError(f"{source}: expected a JSON object such as {json.dumps(DEFAULT_PAYLOAD)}")
    return value


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
