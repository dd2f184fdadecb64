"""``inferkit bench`` on the command line: its flags, the options they make, and the run with its exit status.

Owns: :func:`add_arguments` (perf_analyzer's flag names where they exist), :func:`options_from_args` and
:func:`run_command` (table on stdout, files written, exit status 0, 1 or 2). ``inferkit.cli`` calls them.

Must not import: ``inferkit.cli`` (it imports this package), grpc, aiohttp, tqdm, matplotlib at module level.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TextIO

from inferkit.bench.options import (
    BenchError,
    BenchOptions,
    _parse_named,
    _parse_warmup,
    _shape,
    parse_levels,
    parse_payload,
)
from inferkit.bench.report import format_header, format_table, write_csv, write_json, write_plot
from inferkit.bench.run import run_bench

__all__ = ["EXIT_ERRORS", "EXIT_OK", "EXIT_USAGE", "add_arguments", "options_from_args", "run_command"]

EXIT_OK = 0
EXIT_ERRORS = 1  # a step's error rate exceeded --max-error-rate
EXIT_USAGE = 2  # bad options, server unreachable, model unknown (nothing was measured), or a file not written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``inferkit bench`` flags (perf_analyzer's names where they exist)."""
    parser.add_argument(
        "-u",
        "--url",
        default="http://127.0.0.1:8000",
        help="http(s)://host:port (REST), grpc(s)://host:port (gRPC); no scheme means http:// (default %(default)s)",
    )
    parser.add_argument("-m", "--model", required=True, help="model name")
    parser.add_argument("--model-version", help="model version (default: the server's policy)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", help="concurrency levels, e.g. 1,2,4,8 (closed loop; default 1)")
    load.add_argument("--concurrency-range", metavar="START:END[:STEP]", help="e.g. 1:128:x2 or 4:16:4")
    load.add_argument("--request-rate", metavar="RATE[,RATE...]", help="fixed request rate(s) per second (open loop)")
    load.add_argument("--request-rate-range", metavar="START:END[:STEP]", help="request rates, e.g. 100:400:100")
    parser.add_argument("--async", dest="use_async", action="store_true", help="asyncio with inferkit.aio")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="benchmark generate_stream (LLM token streams): time to first event, time between events, events/s",
    )
    parser.add_argument(
        "--payload",
        metavar="JSON|@FILE",
        help='--stream: the generate payload (default {"text_input": "Write a short story...", "max_tokens": 64})',
    )
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
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="run every step even after one in which every request failed (default: stop there)",
    )
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
        keep_going=args.keep_going,
        stream=args.stream,
        payload=parse_payload(args.payload) if args.payload is not None else None,
    )


_OUTPUTS = (("json_path", "--json", "JSON report"), ("csv_path", "--csv", "CSV"), ("plot_path", "--plot", "plot"))


def _check_outputs(args: argparse.Namespace) -> None:
    """Each report file can be created: its directory exists and it is not a directory (before a long run)."""
    for attr, flag, _ in _OUTPUTS:
        path = getattr(args, attr, None)
        if not path:
            continue
        if os.path.isdir(path):
            raise BenchError(f"{flag} {path!r} is a directory; give a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise BenchError(f"{flag} {path!r}: the directory {folder!r} does not exist")


def run_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``inferkit bench``: run, print the table, write the files; returns the exit status (0, 1 or 2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        options = options_from_args(args)
        _check_outputs(args)
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
    status = EXIT_OK
    if report.stopped_after is not None:
        print(
            f"inferkit bench: every request of step {report.stopped_after} failed, so the run stopped there "
            "(--keep-going runs every step)",
            file=err,
        )
    writers = {"json_path": write_json, "csv_path": write_csv, "plot_path": write_plot}
    for attr, _, what in _OUTPUTS:
        path = getattr(args, attr)
        if not path:
            continue
        try:
            writers[attr](report, path)
        except BenchError as exc:  # nothing to plot: said, and the other files are still written
            print(f"inferkit bench: {exc}", file=err)
        except OSError as exc:
            print(f"inferkit bench: cannot write the {what} to {path}: {exc.strerror or exc}", file=err)
            status = EXIT_USAGE
        else:
            print(f"inferkit bench: wrote the {what} to {path}", file=err)
    failed = report.failed_steps
    if failed:
        labels = ", ".join(s.label for s in failed)
        print(
            f"inferkit bench: error rate above {options.max_error_rate:g} at step(s) {labels}",
            file=err,
        )
        return status or EXIT_ERRORS
    return status
