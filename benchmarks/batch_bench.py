"""Batch-job benchmark: ``infer_many`` (sync and async) against each other and the hand-written loops it replaces.

The server is ``inferkit serve benchmarks.bench_models:make_models`` in its own process (so its CPU does not
compete with the client's GIL; it still shares the machine's cores). Two parts:

1. **Throughput** (``add_sub``, INT32 [1,16] x 2, binary tensors; answered at once, so the client's cost per
   request is what differs). Per transport (REST, gRPC), the same requests through:

   * sync ``client.infer_many(requests, concurrency=C)`` (ordered, and unordered) and a hand-written
     ``ThreadPoolExecutor(C)`` loop (``list(pool.map(client.infer, requests))``);
   * the aio client's ``infer_many`` at the same concurrency (ordered, unordered) and ``asyncio.gather`` with a
     ``Semaphore(C)``.

   All six variants run interleaved (A B C D E F A B C ...; the asyncio ones on one event loop in this thread),
   so drift on a shared machine hits them alike. Reported: median requests/s and client CPU per request
   (``time.process_time`` of this process, all threads) over ``--runs`` runs, and ratios; the target is sync
   ``infer_many`` >= 0.9x the aio client's ``infer_many``.

2. **Hedging** (``tail``: 1 ms per call, 80 ms for every 50th call the server receives, so a hedged copy of a
   delayed request is normally fast). Per client (sync and aio, REST and gRPC), ``infer_many(ordered=False)``
   with hedging off, and with ``hedge_after`` = p95 of the undelayed latency (measured in a calibration run with
   hedging off: the latencies under half the injected delay) and ``hedge_budget=0.1``. Per-request latency is
   from the moment the request's first copy is handed to ``client.infer`` (a wrapper notes it; time spent
   waiting for a free slot is not latency) to the moment ``infer_many`` yields its ``(index, response)`` pair
   (unordered: as soon as it completes, so no head-of-line wait is counted, but the driver's hand-off is).
   Reported: medians over ``--hedge-runs`` of p50 / p95 / p99 / max, requests/s, and the extra-request rate
   (calls of ``client.infer`` beyond one per request, i.e. hedge copies sent).

Usage::

    python benchmarks/batch_bench.py            # full: about 5 minutes on 2 cores
    python benchmarks/batch_bench.py --quick    # about a minute; noisier
    python benchmarks/batch_bench.py --part throughput --transport rest --runs 9
    python benchmarks/batch_bench.py --part profile    # where the sync path loses: CPU and context switches
    python benchmarks/batch_bench.py --tls --part throughput    # the same over HTTPS and gRPC with TLS
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from inferkit import InferInput, InferRequest, RESTConfig  # noqa: E402
from inferkit.aio import batching as aio_batching  # noqa: E402
from inferkit.batching import infer_many  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from bench_models import TAIL_DELAY_S, TAIL_EVERY  # noqa: E402


# -- server ----------------------------------------------------------------------------------------------------
class Server:
    """``inferkit serve benchmarks.bench_models:make_models`` in a child process, on free ports.

    With ``tls``: the same models over HTTPS and gRPC with TLS (this script again, ``--serve-tls``: a trustme
    certificate authority made for the run; its certificate is :attr:`ca`, for the clients to trust).
    """

    def __init__(self, tls: bool = False) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.ca: bytes | None = None
        if tls:
            fd, ca_path = tempfile.mkstemp(suffix=".pem")
            os.close(fd)
            cmd = [sys.executable, os.path.abspath(__file__), "--serve-tls", ca_path]
        else:
            cmd = [sys.executable, "-m", "inferkit.cli", "serve", "benchmarks.bench_models:make_models"]
            cmd += ["--http-port", "0", "--grpc-port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.http_url = self.grpc_url = ""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            words = line.split()
            if words[:1] == ["REST"]:
                self.http_url = words[1]
            elif words[:1] == ["gRPC"]:
                self.grpc_url = words[1]
            elif line.startswith("Ctrl-C"):
                if tls:
                    with open(ca_path, "rb") as f:
                        self.ca = f.read()
                    os.unlink(ca_path)
                return
        self.stop()
        raise SystemExit("inferkit serve did not start (see its output above)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # inferkit serve stops its server on SIGTERM
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- requests and clients --------------------------------------------------------------------------------------
def add_sub_requests(n: int) -> list[InferRequest]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    out = []
    for _ in range(n):
        x = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
        y = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
        out.append(InferRequest("add_sub", [x, y]))  # type: ignore[list-item]
    return out


def tail_requests(n: int) -> list[InferRequest]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    return [
        InferRequest("tail", [InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)])  # type: ignore[list-item]
        for _ in range(n)
    ]


def _rest_config(server: Server, concurrency: int) -> RESTConfig:
    if server.ca is None:
        return RESTConfig(pool_maxsize=max(concurrency, 10))
    context = ssl.create_default_context(cadata=server.ca.decode())
    return RESTConfig(pool_maxsize=max(concurrency, 10), verify=context)


def _grpc_tls(server: Server) -> dict[str, Any]:
    return {} if server.ca is None else {"use_ssl": True, "root_certificates": server.ca}


def sync_client(transport: str, server: Server, concurrency: int) -> Any:
    if transport == "rest":
        from inferkit import InferenceRESTClient

        return InferenceRESTClient(server.http_url, _rest_config(server, concurrency))
    from inferkit import InferenceGRPCClient

    return InferenceGRPCClient(server.grpc_url, **_grpc_tls(server))


def aio_client(transport: str, server: Server, concurrency: int) -> Any:
    if transport == "rest":
        from inferkit.aio import InferenceRESTClient

        return InferenceRESTClient(server.http_url, _rest_config(server, concurrency))
    from inferkit.aio import InferenceGRPCClient

    return InferenceGRPCClient(server.grpc_url, **_grpc_tls(server))


def serve_tls(ca_path: str) -> None:
    """``--serve-tls``: the benchmark's models over TLS until SIGTERM, announced as ``inferkit serve`` does."""
    import threading

    import trustme
    from bench_models import make_models

    from inferkit.testing import ReferenceServer, ServerTLS

    ca = trustme.CA()
    ca.cert_pem.write_to_path(ca_path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ReferenceServer(make_models(), tls=ServerTLS.from_trustme(ca)) as server:
        print(f"  REST  {server.http_url}\n  gRPC  {server.grpc_url}\nCtrl-C to stop", flush=True)
        stop.wait()


async def aclose(client: Any) -> None:
    await client.close()


# -- part 1: throughput ----------------------------------------------------------------------------------------
Sample = tuple[float, float]  # (requests/s, client CPU microseconds per request)


def timed_run(run: Callable[[], int]) -> Sample:
    cpu0, t0 = time.process_time(), time.perf_counter()
    count = run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return count / wall, cpu / count * 1e6


def throughput_variants(
    loop: asyncio.AbstractEventLoop, sclient: Any, aclient: Any, requests: list[InferRequest], c: int, pool: Any
) -> dict[str, Callable[[], int]]:
    def on_loop(coro_fn: Callable[[], Awaitable[int]]) -> Callable[[], int]:
        return lambda: loop.run_until_complete(coro_fn())

    async def gather_semaphore() -> int:
        sem = asyncio.Semaphore(c)

        async def one(request: InferRequest) -> Any:
            async with sem:
                return await aclient.infer(request)

        return len(await asyncio.gather(*(one(r) for r in requests)))

    async def aio_many(ordered: bool) -> int:
        count = 0
        async with aclient.infer_many(requests, concurrency=c, ordered=ordered) as results:
            async for _ in results:
                count += 1
        return count

    return {
        "sync infer_many ordered": lambda: sum(1 for _ in sclient.infer_many(requests, concurrency=c)),
        "sync infer_many unordered": lambda: sum(1 for _ in sclient.infer_many(requests, concurrency=c, ordered=False)),
        "sync ThreadPoolExecutor loop": lambda: len(list(pool.map(sclient.infer, requests))),
        "aio infer_many ordered": on_loop(lambda: aio_many(True)),
        "aio infer_many unordered": on_loop(lambda: aio_many(False)),
        "aio gather + Semaphore": on_loop(gather_semaphore),
    }


def throughput_part(server: Server, transport: str, n: int, runs: int, c: int) -> dict[str, Any]:
    requests = add_sub_requests(n)
    loop = asyncio.new_event_loop()
    sclient = sync_client(transport, server, c)
    aclient = aio_client(transport, server, c)
    pool = ThreadPoolExecutor(c)  # long-lived, as a hand-written job would keep one
    try:
        variants = throughput_variants(loop, sclient, aclient, requests, c, pool)
        for run in variants.values():
            run()  # warm-up: connections, threads, first-call paths
        samples: dict[str, list[Sample]] = {name: [] for name in variants}
        for _ in range(runs):
            for name, run in variants.items():
                samples[name].append(timed_run(run))
    finally:
        pool.shutdown()
        sclient.close()
        loop.run_until_complete(aclose(aclient))
        loop.close()
    return {
        name: {
            "rps": statistics.median(s[0] for s in values),
            "cpu_us": statistics.median(s[1] for s in values),
            "rps_runs": [s[0] for s in values],
        }
        for name, values in samples.items()
    }


def report_throughput(transport: str, res: dict[str, Any], n: int, runs: int, c: int) -> None:
    base = res["aio infer_many ordered"]
    print(f"\nthroughput, {transport}: {n} add_sub requests per run, concurrency {c}, median of {runs} runs")
    print(f"  {'variant':<30}{'req/s':>9}{'vs aio infer_many':>19}{'CPU us/req':>12}{'vs aio':>8}")
    for name, r in res.items():
        print(
            f"  {name:<30}{r['rps']:>9,.0f}{r['rps'] / base['rps']:>18.2f}x"
            f"{r['cpu_us']:>12,.0f}{r['cpu_us'] / base['cpu_us']:>7.2f}x"
        )

    def paired(a: str, b: str) -> str:
        ratios = [x / y for x, y in zip(res[a]["rps_runs"], res[b]["rps_runs"])]
        return f"{statistics.median(ratios):.2f}x (runs {min(ratios):.2f}-{max(ratios):.2f})"

    print(
        f"  sync infer_many / aio infer_many (ordered):   {paired('sync infer_many ordered', 'aio infer_many ordered')}"
    )
    print(
        f"  sync infer_many / aio infer_many (unordered): "
        f"{paired('sync infer_many unordered', 'aio infer_many unordered')}"
    )
    print(
        f"  sync infer_many / aio gather + Semaphore:     {paired('sync infer_many ordered', 'aio gather + Semaphore')}"
    )
    print(
        f"  sync infer_many / ThreadPoolExecutor loop:    "
        f"{paired('sync infer_many ordered', 'sync ThreadPoolExecutor loop')}"
    )
    print(
        f"  aio infer_many / gather + Semaphore:          {paired('aio infer_many ordered', 'aio gather + Semaphore')}"
    )


# -- part 2: hedging -------------------------------------------------------------------------------------------
class Recorder:
    """Wraps ``infer``: notes when each request's first copy starts, and counts calls (hedge copies included)."""

    def __init__(self, requests: list[InferRequest]) -> None:
        self.requests = requests
        self.starts: dict[int, float] = {}

    def started(self, request: Any) -> None:
        # dict.setdefault is atomic under the GIL: a hedge copy started later never moves the start time.
        self.starts.setdefault(id(request), time.perf_counter())

    def latencies(self, ends: list[tuple[int, float]]) -> np.ndarray[Any, Any]:
        return np.array([end - self.starts[id(self.requests[i])] for i, end in ends])


def sync_hedge_run(client: Any, requests: list[InferRequest], c: int, hedge_after: float | None) -> dict[str, Any]:
    rec = Recorder(requests)
    calls: list[None] = []

    def infer(request: Any, **kwargs: Any) -> Any:
        rec.started(request)
        calls.append(None)  # list.append is atomic: counts every copy, from any thread
        return client.infer(request, **kwargs)

    ends: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    for index, _ in infer_many(
        infer, requests, concurrency=c, ordered=False, hedge_after=hedge_after, hedge_budget=0.1
    ):
        ends.append((index, time.perf_counter()))
    wall = time.perf_counter() - t0
    return summarize(rec.latencies(ends), len(calls), len(requests), wall)


async def aio_hedge_run(client: Any, requests: list[InferRequest], c: int, hedge_after: float | None) -> dict[str, Any]:
    rec = Recorder(requests)
    calls = 0

    async def infer(request: Any, **kwargs: Any) -> Any:
        nonlocal calls
        rec.started(request)
        calls += 1
        return await client.infer(request, **kwargs)

    ends: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    many = aio_batching.infer_many(
        infer, requests, concurrency=c, ordered=False, hedge_after=hedge_after, hedge_budget=0.1
    )
    async with many as results:
        async for index, _ in results:
            ends.append((index, time.perf_counter()))
    wall = time.perf_counter() - t0
    return summarize(rec.latencies(ends), calls, len(requests), wall)


def summarize(lat: np.ndarray[Any, Any], calls: int, n: int, wall: float) -> dict[str, Any]:
    ms = lat * 1e3
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "rps": n / wall,
        "extra": (calls - n) / n,
        "undelayed_p95": float(np.percentile(ms[ms < TAIL_DELAY_S * 1e3 / 2], 95)),
    }


def hedge_part(server: Server, kind: str, transport: str, n: int, runs: int, c: int) -> dict[str, Any]:
    requests = tail_requests(n)
    if kind == "sync":
        client = sync_client(transport, server, c)
        loop = None

        def run(hedge_after: float | None) -> dict[str, Any]:
            return sync_hedge_run(client, requests, c, hedge_after)

    else:
        loop = asyncio.new_event_loop()
        client = aio_client(transport, server, c)

        def run(hedge_after: float | None) -> dict[str, Any]:
            assert loop is not None
            return loop.run_until_complete(aio_hedge_run(client, requests, c, hedge_after))

    try:
        run(None)  # warm-up
        hedge_after = run(None)["undelayed_p95"] / 1e3  # calibration: p95 of the undelayed latency
        samples: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for _ in range(runs):
            samples["off"].append(run(None))
            samples["on"].append(run(hedge_after))
    finally:
        if loop is None:
            client.close()
        else:
            loop.run_until_complete(aclose(client))
            loop.close()
    out: dict[str, Any] = {"hedge_after_ms": hedge_after * 1e3}
    for mode, values in samples.items():
        out[mode] = {key: statistics.median(v[key] for v in values) for key in values[0]}
    return out


def report_hedging(results: dict[str, dict[str, Any]], n: int, runs: int, c: int) -> None:
    print(
        f"\nhedging: {n} 'tail' requests per run (1 ms; every {TAIL_EVERY}th call {TAIL_DELAY_S * 1e3:.0f} ms), "
        f"concurrency {c}, unordered, hedge_budget=0.1, medians of {runs} runs; latencies in ms"
    )
    print(
        f"  {'client':<10}{'hedging':<18}{'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}{'req/s':>8}"
        f"{'extra req':>10}{'p99 after/before':>18}"
    )
    for label, r in results.items():
        off, on = r["off"], r["on"]
        print(
            f"  {label:<10}{'off':<18}{off['p50']:>7.1f}{off['p95']:>7.1f}{off['p99']:>7.1f}{off['max']:>7.1f}"
            f"{off['rps']:>8,.0f}{off['extra']:>9.1%}"
        )
        after = f"after {r['hedge_after_ms']:.1f} ms"
        print(
            f"  {'':<10}{after:<18}{on['p50']:>7.1f}{on['p95']:>7.1f}{on['p99']:>7.1f}{on['max']:>7.1f}"
            f"{on['rps']:>8,.0f}{on['extra']:>9.1%}{on['p99'] / off['p99']:>17.2f}x"
        )


# -- part 3: profile (where the sync path loses) ----------------------------------------------------------------
def profile_part(server: Server, transport: str, n: int, runs: int) -> None:
    """CPU and context switches per request: one at a time, and by the number in flight, sync against aio."""
    import resource  # noqa: PLC0415 - Unix only; only this part needs it

    requests = add_sub_requests(n)
    loop = asyncio.new_event_loop()
    sclient, aclient = sync_client(transport, server, 32), aio_client(transport, server, 32)
    pool = ThreadPoolExecutor(32)

    async def aio_sequential() -> int:
        for request in requests[: n // 3]:
            await aclient.infer(request)
        return n // 3

    async def aio_many(c: int) -> int:
        return sum([1 async for _ in aclient.infer_many(requests, concurrency=c)])

    variants: dict[str, Callable[[], int]] = {
        "sync, one at a time": lambda: sum(1 for r in requests[: n // 3] if sclient.infer(r)),
        "aio, one at a time": lambda: loop.run_until_complete(aio_sequential()),
    }
    for c in (4, 8, 32):
        variants[f"sync infer_many c={c}"] = functools.partial(
            lambda c: sum(1 for _ in sclient.infer_many(requests, concurrency=c)), c
        )
    variants["sync ThreadPoolExecutor c=32"] = lambda: len(list(pool.map(sclient.infer, requests)))
    for c in (8, 32):
        variants[f"aio infer_many c={c}"] = functools.partial(lambda c: loop.run_until_complete(aio_many(c)), c)
    try:
        for run in variants.values():
            run()
        print(f"\nprofile, {transport}: median of {runs} runs; context switches of this process (all threads)")
        print(f"  {'variant':<30}{'req/s':>8}{'CPU us/req':>12}{'voluntary cs/req':>18}{'involuntary':>13}")
        for name, run in variants.items():
            rows = []
            for _ in range(runs):
                r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
                count = run()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                nv, niv = r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw
                rows.append((count / wall, cpu / count * 1e6, nv / count, niv / count))
            rps, cpu_us, vol, invol = (statistics.median(row[i] for row in rows) for i in range(4))
            print(f"  {name:<30}{rps:>8,.0f}{cpu_us:>12,.0f}{vol:>18.2f}{invol:>13.2f}")
    finally:
        pool.shutdown()
        sclient.close()
        loop.run_until_complete(aclose(aclient))
        loop.close()


# -- main ------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="requests per throughput run")
    parser.add_argument("--runs", type=int, default=5, help="throughput runs per variant")
    parser.add_argument("--hedge-n", type=int, default=2500, help="requests per hedging run")
    parser.add_argument("--hedge-runs", type=int, default=5, help="hedging runs per client and mode")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--transport", nargs="+", default=["rest", "grpc"], choices=["rest", "grpc"])
    parser.add_argument("--client", nargs="+", default=["sync", "aio"], choices=["sync", "aio"], help="hedging part")
    parser.add_argument(
        "--part", nargs="+", default=["throughput", "hedging"], choices=["throughput", "hedging", "profile"]
    )
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (about a minute)")
    parser.add_argument("--tls", action="store_true", help="HTTPS and gRPC with TLS (a trustme certificate)")
    parser.add_argument("--serve-tls", metavar="CA_PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_tls:
        serve_tls(args.serve_tls)
        return
    if args.quick:
        args.n, args.runs, args.hedge_n, args.hedge_runs = 600, 3, 1000, 2

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    server = Server(tls=args.tls)
    try:
        print(
            f"batch_bench: server {server.http_url} {server.grpc_url} (pid {server.proc.pid}); "
            f"{os.cpu_count()} cores, load average {load:.2f} at start"
        )
        if "throughput" in args.part:
            for transport in args.transport:
                res = throughput_part(server, transport, args.n, args.runs, args.concurrency)
                report_throughput(transport, res, args.n, args.runs, args.concurrency)
        if "hedging" in args.part:
            results = {}
            for kind in args.client:
                for transport in args.transport:
                    results[f"{kind} {transport}"] = hedge_part(
                        server, kind, transport, args.hedge_n, args.hedge_runs, args.concurrency
                    )
            report_hedging(results, args.hedge_n, args.hedge_runs, args.concurrency)
        if "profile" in args.part:
            for transport in args.transport:
                profile_part(server, transport, 1500 if not args.quick else 600, 5 if not args.quick else 3)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
