"""Sync REST ``infer_many`` on real Triton against tritonclient with a client per thread, at one concurrency.

The check the transport redesign is held to: one shared inferkit client's ``infer_many(concurrency=C)`` against
tritonclient.http with C threads, each making its own client inside its thread (its gevent client must stay on the
thread that made it; run_all.py does the same), the same add_sub requests, interleaved runs, medians. The aio
client's ``infer_many`` is there for the CPU comparison. Client set-up happens before the clock starts.

Usage::

    python benchmarks/many_triton.py                  # c=32, 4000 requests x 5 runs
    python benchmarks/many_triton.py --concurrency 8 --n 2000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
for _p in (str(HERE.parent), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import rest_bench  # noqa: E402
import servers  # noqa: E402

from inferkit import InferInput, InferRequest, RESTConfig  # noqa: E402
from inferkit.rest_client import InferenceRESTClient  # noqa: E402

Work = Callable[[], int]


def request() -> InferRequest:
    a, b = rest_bench.small_arrays()
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
    return InferRequest("add_sub", [x0, x1])


def timed(work: Work) -> tuple[float, float]:
    """(requests/s, client CPU us per request) of ``work()``, which returns how many requests it made."""
    c0, t0 = time.process_time(), time.perf_counter()
    done = work()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return done / wall, cpu / done * 1e6


def inferkit_many(url: str, n: int, c: int) -> Work:
    client = InferenceRESTClient(url, RESTConfig(binary_data=True, pool_maxsize=max(c, 10)))
    req = request()
    list(client.infer_many([req] * c, concurrency=c))  # connections opened before timing

    def work() -> int:
        got = sum(1 for _ in client.infer_many([req] * n, concurrency=c))
        client.close()
        return got

    return work


def aio_many(url: str, n: int, c: int) -> Work:
    from inferkit.aio import InferenceRESTClient as AioClient

    req = request()

    def work() -> int:
        async def main() -> int:
            async with AioClient(url, RESTConfig(binary_data=True, pool_maxsize=max(c, 10))) as client:
                return len([r async for r in client.infer_many([req] * n, concurrency=c)])

        return asyncio.run(main())

    return work


def triton_threads(url: str, n: int, c: int) -> Work:
    import tritonclient.http as th

    a, b = rest_bench.small_arrays()
    per = n // c
    ready = threading.Barrier(c + 1)
    go = threading.Event()

    def run() -> None:
        client = th.InferenceServerClient(urlsplit(url).netloc)
        x0, x1 = th.InferInput("INPUT0", [1, 16], "INT32"), th.InferInput("INPUT1", [1, 16], "INT32")
        x0.set_data_from_numpy(a)
        x1.set_data_from_numpy(b)
        client.infer("add_sub", [x0, x1])  # connected before timing
        ready.wait(120)
        go.wait(120)
        for _ in range(per):
            client.infer("add_sub", [x0, x1])
        client.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(c)]
    for t in threads:
        t.start()
    ready.wait(120)

    def work() -> int:
        go.set()
        for t in threads:
            t.join(600)
        return per * c

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ok, why = servers.server_available("triton")
    if not ok:
        sys.exit(f"Triton is not available here: {why}")
    makers = {
        "inferkit infer_many": inferkit_many,
        "inferkit.aio infer_many": aio_many,
        "tritonclient.http": triton_threads,
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in makers}
    with servers.real_server("triton") as srv:
        for r in range(args.runs):
            order = list(makers.items())
            order = order[r % len(order) :] + order[: r % len(order)]  # rotates: drift hits every stack alike
            for name, make in order:
                results[name].append(timed(make(srv.http_url, args.n, args.concurrency)))
    print(f"Triton, add_sub, concurrency {args.concurrency}, {args.n} requests x {args.runs} runs (medians)")
    med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
    for name, (rps, cpu) in med.items():
        print(f"  {name:26}{rps:>9,.0f} req/s{cpu:>9.0f} us CPU/req")
    ik, aio, tc = med["inferkit infer_many"], med["inferkit.aio infer_many"], med["tritonclient.http"]
    print(f"  infer_many / tritonclient (client per thread): {ik[0] / tc[0]:.2f}x throughput")
    print(f"  infer_many CPU / aio infer_many CPU: {ik[1] / aio[1]:.2f}x")


if __name__ == "__main__":
    main()
