"""Soak: RSS and file descriptors of one long-lived client over many requests (default 100,000 per client kind).

The reference server runs in a separate process (so only the client's memory is measured). For each client kind
(sync REST, sync gRPC, aio REST, aio gRPC) the script sends ``--requests`` small infers (add_sub, 2 x INT32[1,16])
from ``--threads`` threads sharing one client (aio: ``--concurrency`` tasks), samples this process's RSS
(``/proc/self/status``) every 5% of the run, and reports RSS after warm-up (the 10% mark), at the end, the peak,
the growth ratio end / warm-up (the issue's bar: within 10%, i.e. <= 1.10), open file descriptors before the
client was made and after it was closed, errors, and throughput. A raw ``http.client`` loop on one keep-alive
connection is run the same way as the floor for RSS drift (it allocates nothing per request that survives).

Usage::

    python benchmarks/soak.py                       # 100,000 requests per kind, all kinds
    python benchmarks/soak.py --requests 20000 --kinds sync_rest,sync_grpc --threads 8
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy  # noqa: E402

SERVER_CODE = """
import sys
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model
server = ReferenceServer([add_sub_model()], grpc=True, max_workers=16).start()
print(server.http_url, server.grpc_address, flush=True)
sys.stdin.read()
server.stop()
"""

KINDS = ("raw_http", "sync_rest", "sync_grpc", "aio_rest", "aio_grpc")


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


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def make_request(seed: int = 0) -> InferRequest:
    a = (np.arange(16, dtype=np.int32) + seed).reshape(1, 16)
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(np.ones((1, 16), dtype=np.int32))
    return InferRequest("add_sub", [x0, x1])


class Sampler:
    """RSS samples at every 5% of the run (thread-safe counter of completed requests)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.step = max(1, total // 20)
        self.done = 0
        self.errors = 0
        self.first_error = ""
        self.samples: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def tick(self, ok: bool, err: BaseException | None = None) -> None:
        with self._lock:
            self.done += 1
            if not ok:
                self.errors += 1
                if not self.first_error and err is not None:
                    self.first_error = f"{type(err).__name__}: {err}"[:300]
            if self.done % self.step == 0:
                self.samples.append((self.done, rss_kib()))


def run_threads(call: Callable[[int], Any], total: int, threads: int, sampler: Sampler) -> None:
    def work(worker: int) -> None:
        per = total // threads + (1 if worker < total % threads else 0)  # exactly ``total`` in all
        for i in range(per):
            try:
                call(worker * (total // threads + 1) + i)
                sampler.tick(True)
            except Exception as exc:  # noqa: BLE001 - counted
                sampler.tick(False, exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def soak(kind: str, http_url: str, grpc_address: str, total: int, threads: int, concurrency: int) -> dict[str, Any]:
    gc.collect()
    fds_before = open_fds()
    sampler = Sampler(total)
    policy = RetryPolicy(max_retries=2, backoff_initial=0.01)
    request = make_request()
    t0 = time.perf_counter()
    if kind == "raw_http":
        from inferkit.codec import rest_v2  # noqa: PLC0415

        encoded = rest_v2.encode_infer_request(request, binary=True)
        headers = {"Content-Type": "application/octet-stream", **dict(encoded.headers)}
        host = http_url.split("//", 1)[1]
        local = threading.local()

        def call(i: int) -> Any:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(host, timeout=30)
            conn.request("POST", "/v2/models/add_sub/infer", body=encoded.body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"status {reply.status}: {data[:200]!r}")

        run_threads(call, total, threads, sampler)
    elif kind in ("sync_rest", "sync_grpc"):
        if kind == "sync_rest":
            from inferkit.rest_client import InferenceRESTClient  # noqa: PLC0415

            client: Any = InferenceRESTClient(http_url, RESTConfig(retry=policy, binary_data=True))
        else:
            from inferkit.grpc_client import InferenceGRPCClient  # noqa: PLC0415

            client = InferenceGRPCClient(grpc_address, retry=policy, timeout=30)
        try:
            run_threads(lambda i: client.infer(request).as_numpy("OUTPUT0"), total, threads, sampler)
        finally:
            client.close()
    else:

        async def main() -> None:
            if kind == "aio_rest":
                from inferkit.aio import InferenceRESTClient as AioREST  # noqa: PLC0415

                aclient: Any = AioREST(http_url, RESTConfig(retry=policy, binary_data=True))
            else:
                from inferkit.aio import InferenceGRPCClient as AioGRPC  # noqa: PLC0415

                aclient = AioGRPC(grpc_address, retry=policy, timeout=30)

            async def worker(n: int) -> None:
                for _ in range(total // concurrency + (1 if n < total % concurrency else 0)):
                    try:
                        (await aclient.infer(request)).as_numpy("OUTPUT0")
                        sampler.tick(True)
                    except Exception as exc:  # noqa: BLE001 - counted
                        sampler.tick(False, exc)

            try:
                await asyncio.gather(*(worker(n) for n in range(concurrency)))
            finally:
                await aclient.close()

        asyncio.run(main())
    elapsed = time.perf_counter() - t0
    gc.collect()
    time.sleep(0.5)  # let closed sockets and grpc's background threads settle before counting fds
    fds_after = open_fds()
    samples = sampler.samples
    warm = samples[1][1] if len(samples) > 1 else (samples[0][1] if samples else 0)  # the 10% mark
    end = samples[-1][1] if samples else 0
    return {
        "kind": kind,
        "requests": sampler.done,
        "errors": sampler.errors,
        "first_error": sampler.first_error,
        "req_per_s": sampler.done / elapsed if elapsed else 0.0,
        "rss_warm_mib": warm / 1024,
        "rss_end_mib": end / 1024,
        "rss_peak_mib": max((s[1] for s in samples), default=0) / 1024,
        "growth": end / warm if warm else float("nan"),
        "fds_before": fds_before,
        "fds_after": fds_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="requests per client kind")
    parser.add_argument("--threads", type=int, default=4, help="threads sharing one sync client")
    parser.add_argument("--concurrency", type=int, default=64, help="tasks sharing one aio client")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    proc, http_url, grpc_address = start_server()
    results = []
    try:
        print(f"soak: {args.requests} requests per kind; server pid {proc.pid} (separate process)")
        print(
            f"{'kind':<10}{'req':>8}{'err':>5}{'req/s':>8}{'RSS@10%':>10}{'RSS end':>10}{'peak':>8}"
            f"{'growth':>8}{'fds before/after':>18}"
        )
        for kind in kinds:
            r = soak(kind, http_url, grpc_address, args.requests, args.threads, args.concurrency)
            results.append(r)
            print(
                f"{r['kind']:<10}{r['requests']:>8}{r['errors']:>5}{r['req_per_s']:>8.0f}"
                f"{r['rss_warm_mib']:>8.1f}MB{r['rss_end_mib']:>8.1f}MB{r['rss_peak_mib']:>6.1f}MB"
                f"{r['growth']:>8.3f}{r['fds_before']:>10}/{r['fds_after']:<7}",
                flush=True,
            )
            if r["first_error"]:
                print(f"   first error: {r['first_error']}")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    bad = [r["kind"] for r in results if r["errors"] or r["growth"] > 1.10 or r["fds_after"] > r["fds_before"]]
    print("verdict:", "OK (zero errors, RSS within 10%, fds back to baseline)" if not bad else f"CHECK {bad}")


if __name__ == "__main__":
    main()
