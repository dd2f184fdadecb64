"""A whole ``inferkit bench`` run: the client, the request, every step in turn, the report.

Owns: :func:`run_bench` (threads and the sync clients, or one asyncio loop and ``inferkit.aio``), the client
made for a run (shared by every worker), what each request does (``infer`` of the request built from the inputs,
or with ``--stream`` a whole ``generate_stream`` of the payload), the checks of the options before anything is
sent, and the error that says why the model's metadata could not be read.

Must not import at module level: grpc, aiohttp, tqdm, matplotlib, ``inferkit.aio`` and the clients (each loads
only when the options ask for it, with an error naming the extra).
"""

from __future__ import annotations

import asyncio
import importlib
import math
import sys
import time
from typing import Any, Callable, TextIO

from inferkit.bench.inputs import build_request, resolve_inputs
from inferkit.bench.options import BenchError, BenchOptions, InputSpec
from inferkit.bench.progress import _Progress
from inferkit.bench.report import BenchReport, system_info
from inferkit.bench.step import (
    StepResult,
    _Recorder,
    _run_step_async,
    _run_step_threads,
    _summarize,
    _Tickets,
    async_infer_sender,
    infer_sender,
)
from inferkit.bench.stream import async_stream_sender, stream_sender

__all__ = ["run_bench"]


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
    except ValueError as exc:  # a URL the client cannot use (no host, a query...): the client's message says why
        raise BenchError(f"--url {options.url!r}: {exc}") from None


def _prepare(options: BenchOptions, metadata: dict[str, Any] | None) -> tuple[list[InputSpec], Any]:
    """The inputs and the request of an ``infer`` run (a stream run sends its payload: neither)."""
    if options.stream:
        return [], None
    specs = resolve_inputs(metadata, options.shapes, options.datatypes, options.batch_size, options.model)
    return specs, build_request(options, specs)


def _need_metadata(options: BenchOptions) -> bool:
    """A stream run reads it too: an unknown model or a server down is then one clear line, before any step."""
    return options.stream or not (options.shapes and all(name in options.datatypes for name in options.shapes))


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
    if not (math.isfinite(options.timeout) and options.timeout > 0):
        raise BenchError(f"--timeout {options.timeout!r}: expected a number of seconds > 0")
    if options.retries < 0:
        raise BenchError(f"--retries {options.retries!r}: expected an integer >= 0")
    if options.seed < 0:
        raise BenchError(f"--seed {options.seed!r}: expected an integer >= 0")
    if options.stream and (options.shapes or options.datatypes or options.batch_size != 1 or options.data != "random"):
        raise BenchError(
            "--shape, --datatype, --batch-size and --data are for infer; with --stream the --payload says what to send"
        )
    if options.payload is not None and not options.stream:
        raise BenchError("--payload is what --stream sends: add --stream (or drop --payload to benchmark infer)")
    if options.payload is not None and not isinstance(options.payload, dict):
        raise BenchError(f"--payload: expected a JSON object (a dict), got {type(options.payload).__name__}")
    _check_url(options.url)


def _check_url(url: str) -> None:
    """The factories' rule (no scheme means ``http://``); the message names the URL and what is accepted."""
    from inferkit._factory_common import ACCEPTED, scheme_of  # noqa: PLC0415 - no client, no transport

    try:
        scheme_of(url)
    except ValueError as exc:
        raise BenchError(f"--url: {exc}") from None
    if not url.split("://", 1)[-1].strip("/"):
        raise BenchError(f"--url {url!r} has no host:port; use {ACCEPTED}, e.g. http://127.0.0.1:8000")


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

    A step in which every request failed ends the run (``report.stopped_after`` names it) unless
    ``options.keep_going`` is set.

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
        specs, request = _prepare(options, metadata)
        send = stream_sender(options, client) if options.stream else infer_sender(options, client, request)
        report = BenchReport(options, system_info(), specs)
        for level in options.levels():
            tickets = _Tickets(options, time.perf_counter)
            recorders: list[_Recorder] = []
            shower.run(_step_label(options, level), tickets, recorders)
            try:
                _run_step_threads(options, send, level, tickets, recorders)
            finally:
                shower.done()
            if not _record(report, _summarize(options, level, tickets, recorders), on_step):
                break
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
        specs, request = _prepare(options, metadata)
        if options.stream:
            send = async_stream_sender(options, client)
        else:
            send = async_infer_sender(options, client, request)
        report = BenchReport(options, system_info(), specs)
        for level in options.levels():
            tickets = _Tickets(options, time.perf_counter)
            recorders: list[_Recorder] = []
            shower.run(_step_label(options, level), tickets, recorders)
            try:
                await _run_step_async(options, send, level, tickets, recorders)
            finally:
                shower.done()
            if not _record(report, _summarize(options, level, tickets, recorders), on_step):
                break
        return report
    finally:
        await client.close()


def _record(report: BenchReport, step: StepResult, on_step: Callable[[StepResult], None] | None) -> bool:
    """Add a finished step to the report (and tell ``on_step``); False when the run stops after it: every
    request of the step failed and ``--keep-going`` was not given."""
    report.steps.append(step)
    if on_step is not None:
        on_step(step)
    if _all_failed(step) and not report.options.keep_going:
        report.stopped_after = step.label
        return False
    return True


def _all_failed(step: StepResult) -> bool:
    """Every measured request of the step failed: the next steps would fail the same way, for longer."""
    return step.requests > 0 and step.ok == 0


def _metadata_error(options: BenchOptions, exc: Exception) -> str:
    fix = "" if options.stream else ", or give every input with --shape NAME:DIMS --datatype NAME:TYPE"
    return (
        f"cannot read the metadata of model {options.model!r} at {options.url}: {type(exc).__name__}: {exc}. "
        f"Check --url and --model{fix}"
    )


def _step_label(options: BenchOptions, level: float) -> str:
    return f"rate {level:g}/s" if options.mode == "rate" else f"concurrency {int(level)}"
