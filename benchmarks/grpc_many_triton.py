"""gRPC under concurrency on real Triton: one shared inferkit client (``channels=N``) against tritonclient.grpc with
a client per thread, c threads each looping on a small infer (add_sub), interleaved, medians.

Usage::

    python benchmarks/grpc_many_triton.py                                  # c = 1,8,32,128,256; channels 1,2,4
    python benchmarks/grpc_many_triton.py --levels 32 --channels 1,2 --runs 5 --duration 2
    python benchmarks/grpc_many_triton.py --aio                            # grpc.aio: one client, c tasks
    python benchmarks/grpc_many_triton.py --target 127.0.0.1:8001          # a server already running

Each sample: c threads (or tasks) loop for ``--duration`` s after a warm-up; req/s and client CPU per request
(``process_time``: all threads). Stacks are rotated from run to run so drift hits each alike; the table shows
medians and inferkit / tritonclient at each level.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
for _p in (str(HERE.parent), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import rest_bench  # noqa: E402
import run_all  # noqa: E402

from inferkit import InferInput, InferRequest  # noqa: E402

Maker = Callable[[], tuple[Callable[[], Any], Callable[[], Any]]]  # -> (call, close)


def request() -> InferRequest:
    a, b = rest_bench.small_arrays()
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b)
    return InferRequest("add_sub", [x0, x1])


def threads_rps(make: Maker, shared: bool, n: int, duration: float) -> tuple[float, float]:
    """n threads looping for ``duration`` s, with run_all's harness: (req/s, client CPU us per request).
    ``shared``: one client for all (closed afterwards)."""
    made: list[Any] = []

    def make_once() -> Any:
        made.append(make())
        return made[-1]

    sample = run_all._threads_rps(make_once, shared, n, duration)
    if shared:
        made[0][1]()
    if sample["errors"]:
        print(f"  warning: {int(sample['errors'])} failed calls at c={n}", flush=True)
    return sample["rps"], sample["cpu_us"]


def sync_makers(target: str, channel_counts: list[int]) -> dict[str, tuple[Maker, bool]]:
    import tritonclient.grpc as tg

    from inferkit import InferenceGRPCClient

    req = request()
    a, b = rest_bench.small_arrays()

    def ours(channels: int) -> Maker:
        def make() -> tuple[Callable[[], Any], Callable[[], Any]]:
            client = InferenceGRPCClient(target, retries=0, channels=channels)
            return (lambda: client.infer(req).as_numpy("OUTPUT0")), client.close

        return make

    def theirs() -> tuple[Callable[[], Any], Callable[[], Any]]:
        client = tg.InferenceServerClient(target)
        x0, x1 = tg.InferInput("INPUT0", [1, 16], "INT32"), tg.InferInput("INPUT1", [1, 16], "INT32")
        x0.set_data_from_numpy(a)
        x1.set_data_from_numpy(b)
        return (lambda: client.infer("add_sub", [x0, x1]).as_numpy("OUTPUT0")), client.close

    makers: dict[str, tuple[Maker, bool]] = {
        f"inferkit channels={n} (1 shared client)": (ours(n), True) for n in channel_counts
    }
    makers["tritonclient.grpc (1 client/thread)"] = (theirs, False)
    return makers


async def aio_rps(call: Callable[[], Any], n: int, duration: float) -> tuple[float, float]:
    await asyncio.gather(*(call() for _ in range(n)))
    done = 0
    c0, t0 = time.process_time(), time.perf_counter()
    end = t0 + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await call()
            done += 1

    await asyncio.gather(*(worker() for _ in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return done / wall, cpu / max(done, 1) * 1e6


def aio_samples(
    target: str, channel_counts: list[int], level: int, duration: float, turn: int
) -> dict[str, tuple[float, float]]:
    """One sample of each async stack at ``level`` tasks; the stacks' order rotates with ``turn``."""
    import tritonclient.grpc.aio as tga

    from inferkit.aio import InferenceGRPCClient

    req = request()
    a, b = rest_bench.small_arrays()

    async def main() -> dict[str, tuple[float, float]]:
        clients: dict[str, Any] = {f"inferkit.aio channels={n}": n for n in channel_counts}
        clients["tritonclient.grpc.aio"] = None
        names = list(clients)
        names = names[turn % len(names) :] + names[: turn % len(names)]
        out: dict[str, tuple[float, float]] = {}
        for name in names:
            if clients[name] is not None:
                client = InferenceGRPCClient(target, retries=0, channels=clients[name])

                async def call(client: Any = client) -> Any:
                    return (await client.infer(req)).as_numpy("OUTPUT0")

            else:
                client = tga.InferenceServerClient(target)
                x0, x1 = tga.InferInput("INPUT0", [1, 16], "INT32"), tga.InferInput("INPUT1", [1, 16], "INT32")
                x0.set_data_from_numpy(a)
                x1.set_data_from_numpy(b)

                async def call(client: Any = client, inputs: list[Any] = [x0, x1]) -> Any:  # noqa: B006 - read only
                    return (await client.infer("add_sub", inputs)).as_numpy("OUTPUT0")

            out[name] = await aio_rps(call, level, duration)
            await client.close()
        return {name: out[name] for name in clients}  # the table's order

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,8,32,128,256")
    parser.add_argument("--channels", default="1,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--aio", action="store_true", help="grpc.aio clients, c tasks on one loop")
    parser.add_argument("--target", help="host:port of a running Triton gRPC endpoint (else one is started)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    channel_counts = [int(x) for x in args.channels.split(",")]
    print(f"nproc {os.cpu_count()}  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.target:
        run(args.target, levels, channel_counts, args)
    else:
        import servers

        ok, why = servers.server_available("triton")
        if not ok:
            sys.exit(f"Triton is not available here: {why}")
        with servers.real_server("triton") as srv:
            run(srv.grpc_address, levels, channel_counts, args)
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def run(target: str, levels: list[int], channel_counts: list[int], args: argparse.Namespace) -> None:
    results: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for level in levels:
        for r in range(args.runs):
            if args.aio:
                samples = aio_samples(target, channel_counts, level, args.duration, r)
            else:
                makers = list(sync_makers(target, channel_counts).items())
                makers = makers[r % len(makers) :] + makers[: r % len(makers)]  # rotated from run to run
                samples = {name: threads_rps(make, shared, level, args.duration) for name, (make, shared) in makers}
            for name, sample in samples.items():
                results.setdefault(name, {}).setdefault(level, []).append(sample)
        print(f"  c={level} done", flush=True)
    peer = next(k for k in results if k.startswith("tritonclient"))
    mode = "asyncio, c tasks on one client" if args.aio else "threads"
    print(
        f"\nTriton add_sub over gRPC, {mode}; req/s, median of {args.runs} x {args.duration:g} s "
        f"(in brackets: / {peer}); client CPU us/req"
    )
    print("| stack | " + " | ".join(f"c={c}" for c in levels) + " |")
    print("|---|" + "---|" * len(levels))
    med = {k: {c: statistics.median(r for r, _ in v[c]) for c in levels} for k, v in results.items()}
    cpu = {k: {c: statistics.median(u for _, u in v[c]) for c in levels} for k, v in results.items()}
    for name in results:
        cells = []
        for c in levels:
            ratio = "" if name == peer else f" ({med[name][c] / med[peer][c]:.2f}x)"
            cells.append(f"{med[name][c]:,.0f}{ratio} / {cpu[name][c]:.0f} us")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
