"""Async client benchmark: inferkit.aio vs tritonclient.http.aio and tritonclient.grpc.aio, in one run.

What it measures (medians over ``--runs`` runs, interleaved stack by stack so machine noise hits all alike; ratios
are tritonclient time / inferkit time, so > 1 means inferkit is faster):

1. 100 concurrent small infers (add_sub, 2 x INT32[1,16]) via ``asyncio.gather`` on one client: wall time per batch.
2. Sequential small infers (``await`` one after the other): time per call.

For REST and gRPC. The server runs in another process (a reference server started here, or ``--url`` /
``--grpc-url`` for a running server, e.g. Triton, that serves ``add_sub`` INT32 [-1, 16]).

Usage::

    python benchmarks/aio_bench.py
    python benchmarks/aio_bench.py --url http://127.0.0.1:8000 --grpc-url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inferkit import InferInput, InferRequest, RESTConfig  # noqa: E402
from inferkit.aio import InferenceGRPCClient, InferenceRESTClient  # noqa: E402

SERVER_CODE = """
import sys
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model
server = ReferenceServer([add_sub_model()], grpc=True, max_workers=16).start()
print(server.http_url, server.grpc_address, flush=True)
sys.stdin.read()
server.stop()
"""

Call = Callable[[], Awaitable[Any]]


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
    if len(line) != 2 or not line[0].startswith("http"):
        proc.kill()
        raise SystemExit(f"reference server did not start: {line!r}")
    return proc, line[0], line[1]


def arrays() -> tuple[np.ndarray, np.ndarray]:
    return np.arange(16, dtype=np.int32).reshape(1, 16), np.full((1, 16), 3, dtype=np.int32)


async def make_stacks(url: str, grpc_target: str) -> tuple[dict[str, Call], list[Callable[[], Awaitable[None]]]]:
    """One client per stack, each with a zero-argument coroutine function doing one small infer."""
    import tritonclient.grpc.aio as tga
    import tritonclient.http.aio as tha

    a, b = arrays()
    request = InferRequest(
        "add_sub",
        [
            InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a),
            InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b),
        ],
    )
    ik_rest = InferenceRESTClient(url, RESTConfig(binary_data=True))
    ik_grpc = InferenceGRPCClient(grpc_target)
    tc_rest = tha.InferenceServerClient(urlsplit(url).netloc, conn_limit=128)
    tc_grpc = tga.InferenceServerClient(grpc_target)

    def tc_inputs(module: Any) -> list[Any]:
        x0, x1 = module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")
        x0.set_data_from_numpy(a)
        x1.set_data_from_numpy(b)
        return [x0, x1]

    tc_rest_inputs, tc_grpc_inputs = tc_inputs(tha), tc_inputs(tga)

    async def ik_rest_call() -> Any:
        return (await ik_rest.infer(request)).as_numpy("OUTPUT0")

    async def ik_grpc_call() -> Any:
        return (await ik_grpc.infer(request)).as_numpy("OUTPUT0")

    async def tc_rest_call() -> Any:
        return (await tc_rest.infer("add_sub", tc_rest_inputs)).as_numpy("OUTPUT0")

    async def tc_grpc_call() -> Any:
        return (await tc_grpc.infer("add_sub", tc_grpc_inputs)).as_numpy("OUTPUT0")

    stacks = {
        "REST inferkit.aio": ik_rest_call,
        "REST tritonclient.http.aio": tc_rest_call,
        "gRPC inferkit.aio": ik_grpc_call,
        "gRPC tritonclient.grpc.aio": tc_grpc_call,
    }
    expected = a + b
    for name, call in stacks.items():  # warm up: connections, binary detection, first-call costs
        for _ in range(20):
            np.testing.assert_array_equal(await call(), expected, err_msg=name)
        await asyncio.gather(*(call() for _ in range(100)))
    return stacks, [ik_rest.close, ik_grpc.close, tc_rest.close, tc_grpc.close]


async def gather_batch(call: Call, n: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(call() for _ in range(n)))
    return time.perf_counter() - t0


async def sequential(call: Call, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - t0) / n


async def run(url: str, grpc_target: str, runs: int, concurrency: int, seq: int) -> None:
    stacks, closers = await make_stacks(url, grpc_target)
    try:
        batches: dict[str, list[float]] = {name: [] for name in stacks}
        singles: dict[str, list[float]] = {name: [] for name in stacks}
        order = list(stacks.items())
        for r in range(runs):
            # Interleaved: every stack in every round. The order rotates from round to round: the first gRPC batch
            # after a REST phase pays for waking its idle channel, which a fixed order would always charge to one
            # stack.
            if r:
                order = order[1:] + order[:1]
            for name, call in order:
                batches[name].append(await gather_batch(call, concurrency))
                singles[name].append(await sequential(call, seq))
    finally:
        for close in closers:
            await close()
    report(f"1. {concurrency} concurrent small infers via asyncio.gather (wall time per batch)", batches, "ms", 1e3)
    report("2. sequential small infers (time per call)", singles, "us", 1e6)


def report(title: str, results: dict[str, list[float]], unit: str, scale: float) -> None:
    print(f"\n{title}")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"   {name:<30}{value * scale:>10.1f} {unit}")
    for proto in ("REST", "gRPC"):
        ik = medians[f"{proto} inferkit.aio"]
        tc = next(v for k, v in medians.items() if k.startswith(proto) and "tritonclient" in k)
        print(f"   {proto}: tritonclient / inferkit = {tc / ik:.2f}  (> 1: inferkit faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server's REST URL; default: start a reference server")
    parser.add_argument("--grpc-url", help="a running server's gRPC host:port (with --url)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sequential", type=int, default=300, help="sequential calls per run")
    args = parser.parse_args()
    proc = None
    if args.url:
        if not args.grpc_url:
            raise SystemExit("--url needs --grpc-url too")
        url, grpc_target = args.url, args.grpc_url.split("://", 1)[-1]
    else:
        proc, url, grpc_target = start_server()
    try:
        print(f"server: {url} / {grpc_target}; python {sys.version.split()[0]}; runs={args.runs}")
        asyncio.run(run(url, grpc_target, args.runs, args.concurrency, args.sequential))
    finally:
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


if __name__ == "__main__":
    main()
