"""The KServe SDK's async clients (``kserve.InferenceRESTClient`` / ``InferenceGRPCClient``) timed on a small infer.

Runs INSIDE the interop harness's kserve venv (``kserve`` pulls in its whole server stack and pins its own protobuf,
so it is kept out of the benchmark's own environment); ``benchmarks/run_all.py`` starts it there and reads the one
JSON line it prints. Imports kserve and numpy only (not inferkit, not tritonclient).

Measures, against a running server serving ``add_sub`` (2 x INT32 [1,16] in, OUTPUT0/OUTPUT1 out):

- sequential: ``await client.infer(...)`` one after the other: wall time and client CPU (``process_time``) per call;
- concurrency: N asyncio workers looping on one client for ``--duration`` seconds: completed requests per second.

Usage (normally via run_all.py)::

    <kserve venv>/bin/python benchmarks/kserve_client_bench.py --http-url http://127.0.0.1:8000 \\
        --grpc-address 127.0.0.1:8001 --levels 1,8,32,128 --duration 2 --seq 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from importlib.metadata import version
from typing import Any, Awaitable, Callable

import numpy as np

Call = Callable[[], Awaitable[Any]]


def make_request(kserve: Any) -> Any:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    x0 = kserve.InferInput("INPUT0", [1, 16], "INT32")
    x0.set_data_from_numpy(a, binary_data=True)
    x1 = kserve.InferInput("INPUT1", [1, 16], "INT32")
    x1.set_data_from_numpy(b, binary_data=True)
    return kserve.InferRequest("add_sub", [x0, x1])


async def sequential(call: Call, n: int) -> dict[str, float]:
    for _ in range(min(50, n)):
        await call()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"latency_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}


async def closed_loop(call: Call, concurrency: int, duration: float) -> dict[str, float]:
    done = 0
    errors = 0
    end = 0.0

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < end:
            try:
                await call()
                done += 1
            except Exception:  # noqa: BLE001 - counted; a benchmark keeps going
                errors += 1

    await asyncio.gather(*(call() for _ in range(concurrency)))  # warm-up: every connection opened
    c0, t0 = time.process_time(), time.perf_counter()
    end = t0 + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"rps": done / wall, "errors": errors, "cpu_us": (time.process_time() - c0) / max(done, 1) * 1e6}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import kserve

    request = make_request(kserve)
    out: dict[str, Any] = {"kserve": version("kserve")}
    rest = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", retries=0, timeout=60))
    grpc_client = kserve.InferenceGRPCClient(args.grpc_address, timeout=60, retries=2)

    async def rest_call() -> Any:
        return (await rest.infer(args.http_url, request, model_name="add_sub")).outputs[0].as_numpy()

    async def grpc_call() -> Any:
        return (await grpc_client.infer(request)).outputs[0].as_numpy()

    expected = np.arange(16, dtype=np.int32).reshape(1, 16) + 1
    for name, call in (("rest", rest_call), ("grpc", grpc_call)):
        try:
            np.testing.assert_array_equal(await call(), expected)
            entry: dict[str, Any] = {"sequential": await sequential(call, args.seq), "concurrency": {}}
            for level in args.levels:
                entry["concurrency"][str(level)] = await closed_loop(call, level, args.duration)
        except Exception as exc:  # noqa: BLE001 - reported in the document instead of a number
            entry = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out[name] = entry
    await rest.close()
    await grpc_client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-url", required=True)
    parser.add_argument("--grpc-address", required=True)
    parser.add_argument("--levels", default="1,8,32,128")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--seq", type=int, default=500)
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
