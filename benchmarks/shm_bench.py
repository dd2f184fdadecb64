"""Shared memory benchmark: a 64 MiB FP32 round trip through system shared memory vs binary REST vs gRPC.

The same identity request (64 MiB in, 64 MiB out) is sent by inferkit's sync clients four ways, in one run:

* ``rest_binary``: binary tensor framing over HTTP (the body carries the tensor both ways);
* ``grpc``: raw contents over gRPC;
* ``rest_shm`` / ``grpc_shm``: input and output in registered system shared memory regions; only parameters travel
  on the socket. The time includes writing the input into the region (``region.set``, one memcpy) and getting the
  output as a zero-copy view of the output region (as the other modes return a view of the received bytes).

Servers: inferkit's reference server in a separate process, and Triton (from the interop harness's cached venv,
via benchmarks/servers.py) when available and not disabled with ``--no-triton``. Regions are registered once;
modes are interleaved round by round so that machine noise hits them alike. Reports medians (ms per round trip)
and each mode's ratio to ``rest_binary``. Every region is unlinked at the end, also on error.

    python benchmarks/shm_bench.py [--mib 64] [--rounds 7] [--no-triton]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from inferkit import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, InferRequestedOutput  # noqa: E402
from inferkit.shm import SharedMemoryRegion  # noqa: E402

SERVER_CODE = """
import sys
from inferkit.testing import ReferenceServer
from inferkit.testing.models import identity_model
server = ReferenceServer([identity_model("identity_fp32", "FP32")], grpc=True).start()
print(server.http_url, server.grpc_address, flush=True)
sys.stdin.read()
server.stop()
"""

MODES = ("rest_binary", "grpc", "rest_shm", "grpc_shm")


def start_reference() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_ROOT
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        raise SystemExit(f"reference server did not start: {line!r}")
    return proc, line[0], line[1]


def bench_server(
    label: str, http_url: str, grpc_address: str, model: str, in_name: str, out_name: str, shape: list[int], rounds: int
) -> dict[str, float]:
    arr = np.random.default_rng(0).random(shape, dtype=np.float32)
    nbytes = arr.nbytes
    rest = InferenceRESTClient(http_url)
    grpc = InferenceGRPCClient(grpc_address)
    src = SharedMemoryRegion(nbytes, name="bench_in")
    dst = SharedMemoryRegion(nbytes, name="bench_out")
    try:
        rest.unregister_system_shared_memory()  # a region left by an interrupted run
        rest.register_system_shared_memory(src.name, src.key, nbytes)
        rest.register_system_shared_memory(dst.name, dst.key, nbytes)

        def body_request() -> InferRequest:
            x = InferInput(in_name, shape, "FP32").set_data_from_numpy(arr)
            return InferRequest(model, [x], outputs=[InferRequestedOutput(out_name)])

        def shm_request() -> InferRequest:
            x = src.infer_input(in_name, arr)  # one memcpy into the region
            return InferRequest(model, [x], outputs=[dst.requested_output(out_name)])

        def check_view(response: Any) -> np.ndarray:
            out = response.get_output(out_name)
            return dst.as_numpy(out.datatype, out.shape)

        calls: dict[str, Callable[[], np.ndarray]] = {
            "rest_binary": lambda: rest.infer(body_request()).as_numpy(out_name),
            "grpc": lambda: grpc.infer(body_request()).as_numpy(out_name),
            "rest_shm": lambda: check_view(rest.infer(shm_request())),
            "grpc_shm": lambda: check_view(grpc.infer(shm_request())),
        }
        for mode, fn in calls.items():  # warm up, and check every mode returns the data
            if not np.array_equal(fn(), arr):
                raise SystemExit(f"{label}: {mode} returned wrong data")
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for mode in MODES:
                t0 = time.perf_counter()
                result = calls[mode]()
                times[mode].append((time.perf_counter() - t0) * 1000)
                del result
        return {m: statistics.median(v) for m, v in times.items()}
    finally:
        try:
            rest.unregister_system_shared_memory()
        finally:
            src.destroy()
            dst.destroy()
            rest.close()
            grpc.close()


def report(label: str, medians: dict[str, float], mib: int) -> None:
    base = medians["rest_binary"]
    print(f"\n{label}: {mib} MiB FP32 in + {mib} MiB out, median ms per round trip")
    print(f"  {'mode':<12} {'ms':>9} {'vs rest_binary':>15}")
    for mode in MODES:
        print(f"  {mode:<12} {medians[mode]:>9.1f} {medians[mode] / base:>14.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-triton", action="store_true")
    args = parser.parse_args()
    count = args.mib * (1 << 20) // 4

    proc, http_url, grpc_address = start_reference()
    try:
        medians = bench_server(
            "reference", http_url, grpc_address, "identity_fp32", "INPUT0", "OUTPUT0", [count], args.rounds
        )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    report("reference server (separate process)", medians, args.mib)

    if args.no_triton:
        return
    sys.path.insert(0, os.path.join(_ROOT, "benchmarks"))
    from servers import real_server, server_available  # noqa: PLC0415

    ok, why = server_available("triton")
    if not ok:
        print(f"\nTriton skipped: {why}")
        return
    with real_server("triton") as triton:
        model, in_name, out_name = triton.identity("FP32")
        medians = bench_server(
            "triton", triton.http_url, triton.grpc_address, model, in_name, out_name, [1, count], args.rounds
        )
    report("Triton 2.51 (python backend)", medians, args.mib)


if __name__ == "__main__":
    main()
