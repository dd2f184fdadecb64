"""Batch-job benchmark: ``infer_many`` against the hand-written loops it replaces, in one run.

What it measures (median over ``--runs`` interleaved runs, and ratios to the hand-written loop): throughput in
requests/s, and client CPU time per request (``time.process_time`` of this process, all threads), which shows the
bookkeeping cost even when a busy shared machine makes wall-clock throughput noisy.

1. sync, per transport (REST, gRPC): ``client.infer_many(requests, concurrency=C)`` (ordered, and unordered)
   vs a hand-written ``ThreadPoolExecutor(C)`` loop over the same client (``list(pool.map(client.infer, ...))``).
   Target: infer_many >= 0.9x the hand-written loop.
2. async (REST): ``infer_many`` of :mod:`inferkit.aio.batching` vs ``asyncio.gather`` with a ``Semaphore(C)``
   over the same ``inferkit.aio.InferenceRESTClient``.

The reference server (add_sub, INT32 [1,16] x 2, binary tensors) runs in a separate process, so its CPU does not
compete with the client's GIL (it still shares the machine's cores). Runs alternate between the variants so that
drift on a shared machine hits both alike.

Usage::

    python benchmarks/batch_bench.py [--n 2000] [--runs 5] [--concurrency 32] [--transport rest grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inferkit import InferInput, InferRequest, RESTConfig  # noqa: E402
from inferkit.aio import batching as aio_batching  # noqa: E402
from inferkit.batching import infer_many  # noqa: E402

SERVER_CODE = """
import sys
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model
server = ReferenceServer([add_sub_model()], grpc=True, max_workers=16).start()
print(server.http_url, server.grpc_url, flush=True)
sys.stdin.read()
server.stop()
"""


def start_server() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        raise SystemExit(f"reference server did not start: {line!r}")
    return proc, line[0], line[1]


def stop_server(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def make_requests(n: int) -> list[InferRequest]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    out = []
    for _ in range(n):
        x = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
        y = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
        out.append(InferRequest("add_sub", [x, y]))  # type: ignore[list-item]
    return out


Sample = tuple[float, float]  # (requests/s, client CPU microseconds per request)


def throughput(fn: Callable[[], int]) -> Sample:
    cpu0, t0 = time.process_time(), time.perf_counter()
    count = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return count / wall, cpu / count * 1e6


def medians(samples: dict[str, list[Sample]]) -> dict[str, Sample]:
    return {
        name: (statistics.median(s[0] for s in values), statistics.median(s[1] for s in values))
        for name, values in samples.items()
    }


def compare(variants: dict[str, Callable[[], int]], runs: int) -> dict[str, Sample]:
    """Median requests/s and client CPU per request for each variant; runs interleaved (A B C A B C ...)."""
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up: connections, threads, first-call paths
    for _ in range(runs):
        for name, fn in variants.items():
            samples[name].append(throughput(fn))
    return medians(samples)


# -- sync ------------------------------------------------------------------------------------------------------
def sync_variants(client: Any, requests: list[InferRequest], concurrency: int) -> dict[str, Callable[[], int]]:
    pool = ThreadPoolExecutor(concurrency)  # a long-lived pool, as a hand-written job would keep one

    def hand_written() -> int:
        return len(list(pool.map(client.infer, requests)))

    def many_ordered() -> int:
        return sum(1 for _ in infer_many(client.infer, requests, concurrency=concurrency))

    def many_unordered() -> int:
        return sum(1 for _ in infer_many(client.infer, requests, concurrency=concurrency, ordered=False))

    return {
        "ThreadPoolExecutor loop": hand_written,
        "infer_many ordered": many_ordered,
        "infer_many unordered": many_unordered,
    }


def make_sync_client(transport: str, http_url: str, grpc_url: str, concurrency: int) -> Any:
    if transport == "rest":
        from inferkit.rest_client import InferenceRESTClient

        return InferenceRESTClient(http_url, RESTConfig(pool_maxsize=max(concurrency, 10)))
    from inferkit.grpc_client import InferenceGRPCClient

    return InferenceGRPCClient(grpc_url)


# -- async -----------------------------------------------------------------------------------------------------
def make_async_client(http_url: str, concurrency: int) -> tuple[str, Any]:
    from inferkit.aio.rest_client import InferenceRESTClient

    return "inferkit.aio.InferenceRESTClient", InferenceRESTClient(
        http_url, RESTConfig(pool_maxsize=max(concurrency, 10))
    )


async def async_compare(
    http_url: str, requests: list[InferRequest], concurrency: int, runs: int
) -> tuple[str, dict[str, Sample]]:
    label, client = make_async_client(http_url, concurrency)
    async with client:

        async def gather_semaphore() -> int:
            sem = asyncio.Semaphore(concurrency)

            async def one(request: InferRequest) -> Any:
                async with sem:
                    return await client.infer(request)

            return len(await asyncio.gather(*(one(r) for r in requests)))

        async def many(ordered: bool) -> int:
            count = 0
            async for _ in aio_batching.infer_many(client.infer, requests, concurrency=concurrency, ordered=ordered):
                count += 1
            return count

        variants = {
            "gather + Semaphore": gather_semaphore,
            "infer_many ordered": lambda: many(True),
            "infer_many unordered": lambda: many(False),
        }
        samples: dict[str, list[Sample]] = {name: [] for name in variants}
        for fn in variants.values():
            await fn()
        for _ in range(runs):
            for name, fn in variants.items():
                cpu0, t0 = time.process_time(), time.perf_counter()
                count = await fn()
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                samples[name].append((count / wall, cpu / count * 1e6))
        return label, medians(samples)


def report(title: str, results: dict[str, Sample]) -> None:
    base_rate, base_cpu = next(iter(results.values()))
    print(f"\n{title}")
    print(f"  {'variant':<26}{'req/s':>10}{'ratio':>8}{'client CPU us/req':>20}{'ratio':>8}")
    for name, (rate, cpu) in results.items():
        print(f"  {name:<26}{rate:>10,.0f}{rate / base_rate:>7.2f}x{cpu:>20,.0f}{cpu / base_cpu:>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="requests per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--transport", nargs="+", default=["rest", "grpc"], choices=["rest", "grpc"])
    parser.add_argument("--no-async", action="store_true")
    args = parser.parse_args()

    proc, http_url, grpc_url = start_server()
    try:
        requests = make_requests(args.n)
        print(
            f"infer_many vs hand-written loops: {args.n} add_sub requests per run, concurrency {args.concurrency}, "
            f"median of {args.runs} interleaved runs; reference server in pid {proc.pid}"
        )
        for transport in args.transport:
            client = make_sync_client(transport, http_url, grpc_url, args.concurrency)
            with client:
                results = compare(sync_variants(client, requests, args.concurrency), args.runs)
            report(f"sync {transport}", results)
        if not args.no_async:
            label, results = asyncio.run(async_compare(http_url, requests, args.concurrency, args.runs))
            report(f"async rest ({label})", results)
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
