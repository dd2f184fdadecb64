"""REST client benchmark: inferkit vs tritonclient.http vs a raw ``http.client`` loop (the floor), in one run.

What it measures (medians over ``--runs`` runs; ratios against the other stacks):

1. Sequential small infer (add_sub, 2 x INT32[1,16], binary tensors): client CPU per call (``time.process_time``
   in this process; the server runs in another process, so its CPU is not counted) and latency per call.
   The raw loop posts the very body inferkit builds, with ``http.client`` on one keep-alive connection.
2. 16 threads: one inferkit client shared by all threads vs tritonclient with one client per thread: throughput.
3. A 64 MiB FP32 binary round trip (identity model): time per call and peak extra Python memory (tracemalloc)
   over the input array, inferkit vs tritonclient.

Usage::

    python benchmarks/rest_bench.py                 # starts a reference server in a subprocess
    python benchmarks/rest_bench.py --url http://127.0.0.1:8000  # a running server (e.g. Triton) that serves
                                                    # models "add_sub" (INT32 [-1,16]) and "identity" (FP32 [-1])
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inferkit import InferInput, InferRequest, RESTConfig  # noqa: E402
from inferkit.codec import rest_v2  # noqa: E402
from inferkit.rest_client import InferenceRESTClient  # noqa: E402

SERVER_CODE = """
import sys
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model, identity_model
server = ReferenceServer([add_sub_model(), identity_model()], grpc=False, max_workers=16).start()
print(server.http_url, flush=True)
sys.stdin.read()
server.stop()
"""


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"reference server did not start: {url!r}")
    return proc, url


def small_arrays() -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    return a, np.ones((1, 16), dtype=np.int32)


def measure_sequential(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """(client CPU us per call, median latency us)."""
    for _ in range(50):
        fn()
    lat = []
    gc.collect()
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / n * 1e6
    return cpu, statistics.median(lat) * 1e6


def inferkit_small(url: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    client = InferenceRESTClient(url, RESTConfig(binary_data=True))
    a, b = small_arrays()
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
    request = InferRequest("add_sub", [x0, x1])

    def call() -> Any:
        return client.infer(request).as_numpy("OUTPUT0")

    return call, client.close


def triton_small(url: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    import tritonclient.http as th

    client = th.InferenceServerClient(urlsplit(url).netloc)
    a, b = small_arrays()
    x0 = th.InferInput("INPUT0", [1, 16], "INT32")
    x0.set_data_from_numpy(a)
    x1 = th.InferInput("INPUT1", [1, 16], "INT32")
    x1.set_data_from_numpy(b)

    def call() -> Any:
        return client.infer("add_sub", [x0, x1]).as_numpy("OUTPUT0")

    return call, client.close


def raw_small(url: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    a, b = small_arrays()
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
    encoded = rest_v2.encode_infer_request(InferRequest("add_sub", [x0, x1]), binary=True)
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    path = parts.path.rstrip("/") + "/v2/models/add_sub/infer"
    headers = dict(encoded.headers)
    body = encoded.body

    def call() -> Any:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(resp.status)
        return data

    return call, conn.close


def urllib3_small(url: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    """The same POST through urllib3's public request API (``pool.urlopen``): what inferkit's sync transport would
    pay per call without its direct path (inferkit._transport.pool explains the choice)."""
    import urllib3

    a, b = small_arrays()
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
    encoded = rest_v2.encode_infer_request(InferRequest("add_sub", [x0, x1]), binary=True)
    parts = urlsplit(url)
    pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port, maxsize=1, block=True)
    path = parts.path.rstrip("/") + "/v2/models/add_sub/infer"
    headers = dict(encoded.headers)
    body = encoded.body
    timeout = urllib3.Timeout(connect=10, read=60)

    def call() -> Any:
        resp = pool.urlopen(
            "POST",
            path,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            timeout=timeout,
            preload_content=False,
            pool_timeout=10,
        )
        data = resp.read()
        resp.release_conn()
        if resp.status != 200:
            raise RuntimeError(resp.status)
        return data

    return call, pool.close


def run_sequential(url: str, n: int, runs: int) -> dict[str, tuple[float, float]]:
    makers = {
        "raw http.client": raw_small,
        "raw urllib3 urlopen": urllib3_small,
        "inferkit": inferkit_small,
        "tritonclient.http": triton_small,
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in makers}
    for _ in range(runs):
        for name, maker in makers.items():  # interleaved so machine noise hits all stacks alike
            call, close = maker(url)
            try:
                results[name].append(measure_sequential(call, n))
            finally:
                close()
    return {k: (statistics.median(c for c, _ in v), statistics.median(lat for _, lat in v)) for k, v in results.items()}


def run_threads(url: str, threads: int, per_thread: int, runs: int) -> dict[str, float]:
    def inferkit_run() -> float:
        client = InferenceRESTClient(url, RESTConfig(binary_data=True))
        a, b = small_arrays()
        x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
        x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
        request = InferRequest("add_sub", [x0, x1])
        client.infer(request)

        def work() -> None:
            for _ in range(per_thread):
                client.infer(request)

        try:
            return _timed_threads(work, threads) / (threads * per_thread)
        finally:
            client.close()

    def triton_run() -> float:
        import tritonclient.http as th

        def work() -> None:
            client = th.InferenceServerClient(urlsplit(url).netloc)
            a, b = small_arrays()
            x0 = th.InferInput("INPUT0", [1, 16], "INT32")
            x0.set_data_from_numpy(a)
            x1 = th.InferInput("INPUT1", [1, 16], "INT32")
            x1.set_data_from_numpy(b)
            for _ in range(per_thread):
                client.infer("add_sub", [x0, x1])
            client.close()

        return _timed_threads(work, threads) / (threads * per_thread)

    out: dict[str, list[float]] = {"inferkit (1 shared client)": [], "tritonclient.http (1 client/thread)": []}
    for _ in range(runs):
        out["inferkit (1 shared client)"].append(1.0 / inferkit_run())
        out["tritonclient.http (1 client/thread)"].append(1.0 / triton_run())
    return {k: statistics.median(v) for k, v in out.items()}


def _timed_threads(work: Callable[[], None], threads: int) -> float:
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=guarded) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join(600)
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} thread(s) failed: {errors[0]!r}")
    return elapsed


def run_large(url: str, mib: int, runs: int) -> dict[str, tuple[float, float]]:
    import tritonclient.http as th

    n = mib * (1 << 20) // 4
    data = np.random.default_rng(0).random(n, dtype=np.float32)
    nbytes = data.nbytes

    def ik_call(client: InferenceRESTClient) -> None:
        x = InferInput("INPUT0", [n], "FP32").set_data_from_numpy(data)
        out = client.infer(InferRequest("identity", [x])).as_numpy("OUTPUT0")
        assert out.shape == (n,)

    def tc_call(client: Any) -> None:
        x = th.InferInput("INPUT0", [n], "FP32")
        x.set_data_from_numpy(data)
        out = client.infer("identity", [x]).as_numpy("OUTPUT0")
        assert out.shape == (n,)

    ik = InferenceRESTClient(url, RESTConfig(binary_data=True, timeout=120))
    tc = th.InferenceServerClient(urlsplit(url).netloc, network_timeout=120.0, connection_timeout=120.0)
    results: dict[str, list[tuple[float, float]]] = {"inferkit": [], "tritonclient.http": []}
    try:
        for _ in range(runs):
            for name, fn, client in (("inferkit", ik_call, ik), ("tritonclient.http", tc_call, tc)):
                fn(client)  # warm up (connection, first-use allocations)
                gc.collect()
                t0 = time.perf_counter()
                fn(client)
                elapsed = time.perf_counter() - t0
                gc.collect()
                tracemalloc.start()
                fn(client)
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                results[name].append((elapsed, peak / nbytes))
    finally:
        ik.close()
        tc.close()
    return {k: (statistics.median(t for t, _ in v), statistics.median(m for _, m in v)) for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server; default: start a reference server in a subprocess")
    parser.add_argument("--n", type=int, default=3000, help="sequential calls per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-thread", type=int, default=400)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--skip", default="", help="comma list of sections to skip: seq,threads,large")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        print(f"server: {url}   (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
        if "seq" not in skip:
            seq = run_sequential(url, args.n, args.runs)
            floor = seq["raw http.client"][0]
            print(f"\n1. sequential small infer, {args.n} calls x {args.runs} runs (medians)")
            print(f"   {'stack':<22}{'client CPU/call':>18}{'x floor':>10}{'latency p50':>14}")
            for name, (cpu, lat) in seq.items():
                print(f"   {name:<22}{cpu:>15.1f} us{cpu / floor:>10.2f}{lat:>11.1f} us")
            ratio = seq["inferkit"][0] / seq["tritonclient.http"][0]
            print(f"   inferkit / tritonclient CPU: {ratio:.2f}")
        if "threads" not in skip:
            thr = run_threads(url, args.threads, args.per_thread, max(1, args.runs // 2 + 1))
            print(f"\n2. {args.threads} threads x {args.per_thread} small infers (median throughput)")
            for name, rps in thr.items():
                print(f"   {name:<40}{rps:>10.0f} req/s")
            values = list(thr.values())
            print(f"   inferkit / tritonclient: {values[0] / values[1]:.2f}")
        if "large" not in skip:
            big = run_large(url, args.mib, max(1, args.runs // 2))
            print(f"\n3. {args.mib} MiB FP32 binary round trip (identity)")
            print(f"   {'stack':<22}{'time':>10}{'peak extra memory':>22}")
            for name, (elapsed, mem) in big.items():
                print(f"   {name:<22}{elapsed * 1000:>7.0f} ms{mem:>15.2f} x payload")
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
