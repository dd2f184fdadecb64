"""gRPC benchmark: inferkit vs tritonclient.grpc vs a raw grpcio stub, in one run, against the reference server.

Measures (medians of several runs; ratios printed):

1. sequential small infer (add_sub, 2 x 1x16 INT32 in, 2 out): per-call wall time for inferkit, tritonclient and a
   raw grpcio stub calling with a prebuilt ``ModelInferRequest`` (the floor: protobuf serialize + parse only);
2. 64 MiB FP32 round trip (identity model): wall time and peak extra RSS of the client process, each run in a fresh
   subprocess (peak = ``VmHWM`` after resetting it via ``/proc/self/clear_refs``, minus the RSS before the call);
   inputs are created inside the measured region, as a user would;
3. building + serializing a 64 MiB FP32 ``ModelInferRequest``: inferkit ``serialize_infer_request`` vs
   tritonclient (``set_data_from_numpy`` + request message + ``SerializeToString``): time and peak extra memory;
4. decoding a 64 MiB reply into a numpy array: inferkit ``decode_infer_response`` over the received bytes vs
   tritonclient (``ModelInferResponse.FromString`` + ``InferResult.as_numpy``).

The server runs in its own process so its memory and CPU are not counted in the client's. RSS (not tracemalloc) is
used because protobuf's upb arenas and gRPC core allocate outside Python's allocator.

Usage: ``python benchmarks/grpc_bench.py [--calls 1000] [--rounds 5] [--big-runs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, _ROOT)
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}

BIG_ELEMS = 16 * 1024 * 1024  # 64 MiB of FP32
MIB = 1024 * 1024

SERVER_CODE = """
import sys
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model, identity_model
with ReferenceServer([add_sub_model(), identity_model("id_fp32", "FP32")], rest=False, max_workers=4) as s:
    print(s.grpc_port, flush=True)
    sys.stdin.read()
"""


# -- memory helpers (Linux) ----------------------------------------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    return _status("VmRSS")


def _measure(fn: Callable[[], Any]) -> dict[str, float]:
    base = _reset_peak()
    t0 = time.perf_counter()
    keep = fn()
    elapsed = time.perf_counter() - t0
    peak = _status("VmHWM")
    del keep
    return {"seconds": elapsed, "peak_extra_mib": (peak - base) / MIB}


# -- workers (one measurement per fresh process) -------------------------------------------------------------


def _worker(kind: str, client: str, port: int) -> dict[str, float]:
    addr = f"127.0.0.1:{port}"
    if kind == "roundtrip":
        arr = np.random.default_rng(0).random(BIG_ELEMS, dtype=np.float32)
        if client == "inferkit":
            from inferkit import InferInput, InferRequest
            from inferkit.grpc_client import InferenceGRPCClient

            c = InferenceGRPCClient(addr, timeout=120)
            c.is_server_live()

            def run() -> Any:
                x = InferInput("INPUT0", [BIG_ELEMS], "FP32").set_data_from_numpy(arr)
                out = c.infer(InferRequest("id_fp32", [x])).as_numpy("OUTPUT0")
                assert out[-1] == arr[-1]
                return out

        elif client == "tritonclient":
            import tritonclient.grpc as tc

            c = tc.InferenceServerClient(addr)
            c.is_server_live()

            def run() -> Any:
                x = tc.InferInput("INPUT0", [BIG_ELEMS], "FP32")
                x.set_data_from_numpy(arr)
                out = c.infer("id_fp32", [x], client_timeout=120).as_numpy("OUTPUT0")
                assert out[-1] == arr[-1]
                return out

        else:  # raw stub, prebuilt message: the floor for time (memory: message already holds the tensor)
            import grpc

            from inferkit._proto import service_pb2 as pb
            from inferkit.codec.grpc_methods import GRPC_METHODS

            m = GRPC_METHODS["ModelInfer"]
            ch = grpc.insecure_channel(
                addr, options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
            )
            stub = ch.unary_unary(
                m.path,
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            msg = pb.ModelInferRequest(model_name="id_fp32")
            msg.inputs.add(name="INPUT0", datatype="FP32", shape=[BIG_ELEMS])
            msg.raw_input_contents.append(arr.tobytes())

            def run() -> Any:
                reply = stub(msg, timeout=120)
                return np.frombuffer(reply.raw_output_contents[0], np.float32)

        run()  # warm-up: connection, first-touch of code paths
        return _measure(run)

    arr = np.random.default_rng(0).random(BIG_ELEMS, dtype=np.float32)
    if kind == "build":
        if client == "inferkit":
            from inferkit import InferInput, InferRequest
            from inferkit.codec.grpc_infer_encode import serialize_infer_request

            def run() -> Any:
                x = InferInput("INPUT0", [BIG_ELEMS], "FP32").set_data_from_numpy(arr)
                return serialize_infer_request(InferRequest("id_fp32", [x]))

        else:
            import tritonclient.grpc as tc
            from tritonclient.grpc._utils import _get_inference_request

            def run() -> Any:
                x = tc.InferInput("INPUT0", [BIG_ELEMS], "FP32")
                x.set_data_from_numpy(arr)
                req = _get_inference_request("id_fp32", [x], "", "", None, 0, False, False, 0, None, None)
                return req.SerializeToString()

        return _measure(run)

    if kind == "decode":
        from inferkit.codec.grpc_infer_encode import serialize_infer_response
        from inferkit.codec.tensors import InferOutput, InferResponse

        wire = serialize_infer_response(
            InferResponse("id_fp32", [InferOutput("OUTPUT0", [BIG_ELEMS], "FP32").set_data_from_numpy(arr)])
        )
        del arr
        if client == "inferkit":
            from inferkit.codec.grpc_infer_decode import decode_infer_response

            def run() -> Any:
                return decode_infer_response(wire).as_numpy("OUTPUT0")

        else:
            from tritonclient.grpc import service_pb2 as tc_pb
            from tritonclient.grpc._infer_result import InferResult

            def run() -> Any:
                return InferResult(tc_pb.ModelInferResponse.FromString(wire)).as_numpy("OUTPUT0")

        return _measure(run)
    raise ValueError(kind)


def _run_worker(kind: str, client: str, port: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--client", client, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_ENV,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {kind}/{client} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- sequential small infer (in process) ----------------------------------------------------------------------


def _small_callers(port: int) -> dict[str, Callable[[], Any]]:
    import grpc
    import tritonclient.grpc as tc

    from inferkit import InferInput, InferRequest
    from inferkit._proto import service_pb2 as pb
    from inferkit.codec.grpc_methods import GRPC_METHODS
    from inferkit.grpc_client import InferenceGRPCClient

    addr = f"127.0.0.1:{port}"
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)

    ik = InferenceGRPCClient(addr, timeout=30)
    ik_req = InferRequest(
        "add_sub",
        [
            InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a),
            InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b),
        ],
    )

    def inferkit_call() -> Any:
        r = ik.infer(ik_req)
        return r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1")

    tcc = tc.InferenceServerClient(addr)
    t0, t1 = tc.InferInput("INPUT0", [1, 16], "INT32"), tc.InferInput("INPUT1", [1, 16], "INT32")
    t0.set_data_from_numpy(a)
    t1.set_data_from_numpy(b)

    def triton_call() -> Any:
        r = tcc.infer("add_sub", [t0, t1], client_timeout=30)
        return r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1")

    m = GRPC_METHODS["ModelInfer"]
    ch = grpc.insecure_channel(addr)
    stub = ch.unary_unary(
        m.path,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    msg = pb.ModelInferRequest(model_name="add_sub")
    msg.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16])
    msg.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16])
    msg.raw_input_contents.extend([a.tobytes(), b.tobytes()])

    def raw_call() -> Any:
        return stub(msg, timeout=30)

    return {"raw_stub": raw_call, "inferkit": inferkit_call, "tritonclient": triton_call}


def _bench_small(port: int, calls: int, rounds: int) -> dict[str, float]:
    callers = _small_callers(port)
    for fn in callers.values():  # warm-up
        for _ in range(200):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in callers}
    cpu_samples: dict[str, list[float]] = {k: [] for k in callers}
    items = list(callers.items())
    clock, cpu_clock = time.perf_counter, time.process_time
    for r in range(rounds):
        # Interleaved call by call, so the load of a shared machine hits every client alike; the order rotates
        # from round to round, because a call runs slower right after some calls than after others (caches).
        items = items[1:] + items[:1] if r else items
        totals = dict.fromkeys(callers, 0.0)
        cpu_totals = dict.fromkeys(callers, 0.0)
        for _ in range(calls):
            for name, fn in items:
                c0 = cpu_clock()
                t0 = clock()
                fn()
                totals[name] += clock() - t0
                cpu_totals[name] += cpu_clock() - c0
        for name in callers:
            samples[name].append(totals[name] / calls * 1e6)
            cpu_samples[name].append(cpu_totals[name] / calls * 1e6)
    # Client CPU (this process, gRPC's threads included; the server runs in another process).
    for name, values in cpu_samples.items():
        samples[f"{name} (client CPU)"] = values
    return {k: statistics.median(v) for k, v in samples.items()}


# -- main ------------------------------------------------------------------------------------------------------


def _start_server() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_ENV
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise RuntimeError("the reference server did not start")
    return proc, int(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--big-runs", type=int, default=3)
    parser.add_argument("--worker")
    parser.add_argument("--client")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.client, args.port)))
        return

    print(f"nproc={os.cpu_count()} loadavg={os.getloadavg()} python={sys.version.split()[0]}")
    import grpc
    import tritonclient

    print(f"grpcio={grpc.__version__} tritonclient={getattr(tritonclient, '__version__', '?')}")
    server, port = _start_server()
    try:
        small = _bench_small(port, args.calls, args.rounds)
        print(f"\n1. sequential small infer (median of {args.rounds} x {args.calls} calls), us per call:")
        for name in ("raw_stub", "inferkit", "tritonclient"):
            print(f"   {name:13s} wall {small[name]:8.1f}   client CPU {small[name + ' (client CPU)']:7.1f}")
        for suffix, label in (("", "wall"), (" (client CPU)", "client CPU")):
            ik, raw, tcl = (small[n + suffix] for n in ("inferkit", "raw_stub", "tritonclient"))
            print(f"   {label:10s}: inferkit / raw_stub = {ik / raw:.3f}   inferkit / tritonclient = {ik / tcl:.3f}")

        def med(kind: str, client: str) -> dict[str, float]:
            runs = [_run_worker(kind, client, port) for _ in range(args.big_runs)]
            return {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "peak_extra_mib": statistics.median(r["peak_extra_mib"] for r in runs),
            }

        print(f"\n2. 64 MiB FP32 round trip (median of {args.big_runs} fresh processes):")
        rt = {c: med("roundtrip", c) for c in ("raw_stub", "inferkit", "tritonclient")}
        for c, r in rt.items():
            print(f"   {c:13s} {r['seconds'] * 1000:8.1f} ms   peak extra {r['peak_extra_mib']:7.1f} MiB")
        print(
            f"   time inferkit / tritonclient = {rt['inferkit']['seconds'] / rt['tritonclient']['seconds']:.3f}   "
            f"memory inferkit / tritonclient = "
            f"{rt['inferkit']['peak_extra_mib'] / rt['tritonclient']['peak_extra_mib']:.3f}"
        )

        print("\n3. build + serialize a 64 MiB FP32 ModelInferRequest:")
        bd = {c: med("build", c) for c in ("inferkit", "tritonclient")}
        for c, r in bd.items():
            print(
                f"   {c:13s} {r['seconds'] * 1000:8.1f} ms   peak extra {r['peak_extra_mib']:7.1f} MiB "
                f"({r['peak_extra_mib'] / 64:.2f}x payload)"
            )
        print(
            f"   time ratio = {bd['inferkit']['seconds'] / bd['tritonclient']['seconds']:.3f}   "
            f"memory ratio = {bd['inferkit']['peak_extra_mib'] / bd['tritonclient']['peak_extra_mib']:.3f}"
        )

        print("\n4. decode a 64 MiB reply to numpy:")
        dc = {c: med("decode", c) for c in ("inferkit", "tritonclient")}
        for c, r in dc.items():
            print(
                f"   {c:13s} {r['seconds'] * 1000:8.2f} ms   peak extra {r['peak_extra_mib']:7.1f} MiB "
                f"({r['peak_extra_mib'] / 64:.2f} copies)"
            )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


if __name__ == "__main__":
    main()
