"""``inferkit bench``: a load generator for any Open Inference Protocol (v2) server, built on inferkit's clients.

Turns options into one inference request (from flags or the model's metadata), drives it at a sweep of
concurrency levels (closed loop) or at fixed request rates (open loop, with a scheduler), on threads (the sync
clients) or on one asyncio loop (``inferkit.aio``), and reports each step: throughput, latency percentiles and
errors by class, as a table, JSON, CSV and an optional PNG plot.

How a step runs: a warm-up phase (``--warmup N`` requests or ``--warmup Ns`` seconds, not recorded), then the
measured phase, bounded by ``--requests`` and/or ``--duration`` (whichever comes first). In rate mode the request
``k`` is due at ``start + k / rate``; its latency counts from that due time, so a client that falls behind shows
it in its latencies instead of silently sending less (no coordinated omission).

The package re-exports the public names of its modules, bottom layer first (each imports only those above it):

* :mod:`~inferkit.bench.options`: :class:`BenchOptions`, :class:`InputSpec`, :class:`BenchError`, value parsers;
* :mod:`~inferkit.bench.inputs`: what to send (:func:`resolve_inputs`, :func:`build_request`);
* :mod:`~inferkit.bench.stream`: ``--stream``: one ``generate_stream`` request timed event by event, and the
  stream figures of a step (time to first event, time between events, events/s);
* :mod:`~inferkit.bench.step`: one step, on threads or asyncio, and its :class:`StepResult`;
* :mod:`~inferkit.bench.progress`: the running step's progress display;
* :mod:`~inferkit.bench.report`: :class:`BenchReport` and its outputs (table, JSON, CSV, plot);
* :mod:`~inferkit.bench.run`: :func:`run_bench`, a whole run;
* :mod:`~inferkit.bench.command`: the ``inferkit bench`` flags and :func:`run_command`.

Layering: bench -> factory, clients (sync, aio), codec; ``inferkit.cli`` -> bench.
Must not import at module level: grpc, aiohttp, tqdm, matplotlib, inferkit.aio (each loads only when the
options ask for it, with an error naming the extra).
"""

from __future__ import annotations

from inferkit.bench.command import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, add_arguments, options_from_args, run_command
from inferkit.bench.inputs import build_request, make_data, resolve_inputs
from inferkit.bench.options import DEFAULT_PAYLOAD, BenchError, BenchOptions, InputSpec, parse_levels, parse_payload
from inferkit.bench.report import (
    BenchReport,
    format_errors,
    format_header,
    format_table,
    system_info,
    write_csv,
    write_json,
    write_plot,
)
from inferkit.bench.run import run_bench
from inferkit.bench.step import StepResult

__all__ = [
    "DEFAULT_PAYLOAD",
    "EXIT_ERRORS",
    "EXIT_OK",
    "EXIT_USAGE",
    "BenchError",
    "BenchOptions",
    "BenchReport",
    "InputSpec",
    "StepResult",
    "add_arguments",
    "build_request",
    "format_errors",
    "format_header",
    "format_table",
    "make_data",
    "options_from_args",
    "parse_levels",
    "parse_payload",
    "resolve_inputs",
    "run_bench",
    "run_command",
    "system_info",
    "write_csv",
    "write_json",
    "write_plot",
]
