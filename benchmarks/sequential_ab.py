"""Sequential small infer on real Triton: client CPU per call of inferkit (REST sync, gRPC sync, gRPC aio) next to
the raw floors (http.client, grpcio stubs) and tritonclient, optionally against another checkout (before/after).

Usage::

    python benchmarks/sequential_ab.py                      # starts Triton; 5 alternations x 1500 calls
    python benchmarks/sequential_ab.py --against /path/to/main --runs 7
    python benchmarks/sequential_ab.py --http http://127.0.0.1:8000 --grpc 127.0.0.1:8001   # a running server

Each stack is measured in a fresh process (``--one``), the processes alternating run by run, so machine drift hits
every stack alike; the table shows the median client CPU per call (``process_time``) and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
STACKS = ("REST raw http.client", "REST inferkit", "REST tritonclient", "gRPC raw stub", "gRPC inferkit",
          "gRPC tritonclient", "gRPC aio raw stub", "gRPC aio inferkit", "gRPC aio tritonclient")  # fmt: skip
OURS = ("REST inferkit", "gRPC inferkit", "gRPC aio inferkit")


def one(tree: str, http_url: str, grpc_target: str, calls: int) -> dict[str, float]:
    """Client CPU us per call of every stack (inferkit imported from ``tree``), in this process."""
    sys.path[:0] = [tree, str(HERE)]
    import grpc
    import grpc.aio
    import rest_bench
    import tritonclient.grpc as tg
    import tritonclient.grpc.aio as tga

    from inferkit import InferenceGRPCClient, InferInput, InferRequest, RESTConfig
    from inferkit.aio import InferenceGRPCClient as AioGRPCClient
    from inferkit.codec.grpc_infer_encode import serialize_infer_request
    from inferkit.rest_client import InferenceRESTClient

    a, b = rest_bench.small_arrays()
    req = InferRequest(
        "add_sub",
        [
            InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a),
            InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b),
        ],
    )
    wire = serialize_infer_request(req)
    path = "/inference.GRPCInferenceService/ModelInfer"

    def cpu(fn: Callable[[], Any]) -> float:
        for _ in range(100):
            fn()
        c0 = time.process_time()
        for _ in range(calls):
            fn()
        return (time.process_time() - c0) / calls * 1e6

    out: dict[str, float] = {}
    raw, close = rest_bench.raw_small(http_url)
    out["REST raw http.client"] = cpu(raw)
    close()
    rest = InferenceRESTClient(http_url, RESTConfig(binary_data=True))
    out["REST inferkit"] = cpu(lambda: rest.infer(req).as_numpy("OUTPUT0"))
    tc, close = rest_bench.triton_small(http_url)
    out["REST tritonclient"] = cpu(tc)
    close()
    channel = grpc.insecure_channel(grpc_target)
    stub = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    out["gRPC raw stub"] = cpu(lambda: stub(wire))
    ik = InferenceGRPCClient(grpc_target)
    out["gRPC inferkit"] = cpu(lambda: ik.infer(req).as_numpy("OUTPUT0"))
    tcg = tg.InferenceServerClient(grpc_target)
    x0, x1 = tg.InferInput("INPUT0", [1, 16], "INT32"), tg.InferInput("INPUT1", [1, 16], "INT32")
    x0.set_data_from_numpy(a)
    x1.set_data_from_numpy(b)
    out["gRPC tritonclient"] = cpu(lambda: tcg.infer("add_sub", [x0, x1]).as_numpy("OUTPUT0"))

    async def aio() -> None:
        async def acpu(fn: Callable[[], Any]) -> float:
            for _ in range(100):
                await fn()
            c0 = time.process_time()
            for _ in range(calls):
                await fn()
            return (time.process_time() - c0) / calls * 1e6

        achannel = grpc.aio.insecure_channel(grpc_target)
        astub = achannel.unary_unary(path, request_serializer=None, response_deserializer=None)
        out["gRPC aio raw stub"] = await acpu(lambda: astub(wire))
        client = AioGRPCClient(grpc_target)

        async def ours() -> Any:
            return (await client.infer(req)).as_numpy("OUTPUT0")

        out["gRPC aio inferkit"] = await acpu(ours)
        peer = tga.InferenceServerClient(grpc_target)

        async def theirs() -> Any:
            return (await peer.infer("add_sub", [x0, x1])).as_numpy("OUTPUT0")

        out["gRPC aio tritonclient"] = await acpu(theirs)
        await client.close()
        await peer.close()
        await achannel.close()

    asyncio.run(aio())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="another checkout, measured alternately (before/after)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--http", help="a running server's REST URL (with --grpc)")
    parser.add_argument("--grpc", help="a running server's gRPC host:port")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one tree in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.http, args.grpc, args.calls)))
        return
    if args.http and args.grpc:
        measure(args, args.http, args.grpc)
        return
    sys.path.insert(0, str(HERE))
    import servers

    with servers.real_server("triton") as srv:
        measure(args, srv.http_url, srv.grpc_address)


def measure(args: argparse.Namespace, http_url: str, grpc_target: str) -> None:
    trees = {"now": str(HERE.parent)}
    if args.against:
        trees["before"] = args.against
    print(f"nproc {os.cpu_count()}  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in trees}
    for r in range(args.runs):
        for name, tree in list(trees.items())[:: 1 if r % 2 == 0 else -1]:
            cmd = [sys.executable, __file__, "--one", tree, "--http", http_url, "--grpc", grpc_target]
            got = json.loads(subprocess.run([*cmd, "--calls", str(args.calls)], capture_output=True, text=True).stdout)
            for stack, value in got.items():
                samples[name].setdefault(stack, []).append(value)
    med = {t: {k: statistics.median(v) for k, v in s.items()} for t, s in samples.items()}
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nclient CPU us per call, median of {args.runs} x {args.calls} calls (add_sub on Triton)")
    for stack in STACKS:
        line = f"  {stack:<24}{med['now'][stack]:>8.1f}"
        if "before" in med:
            line += f"   before {med['before'][stack]:>7.1f}"
            if stack in OURS:
                line += f"  before/now {med['before'][stack] / med['now'][stack]:.2f}x"
        print(line)
    for kind in ("REST", "gRPC", "gRPC aio"):
        floor = med["now"][f"{kind} {'raw http.client' if kind == 'REST' else 'raw stub'}"]
        ours, peer = med["now"][f"{kind} inferkit"], med["now"][f"{kind} tritonclient"]
        print(f"  {kind}: tritonclient / inferkit {peer / ours:.2f}x; inferkit / raw floor {ours / floor:.2f}x")


if __name__ == "__main__":
    main()
