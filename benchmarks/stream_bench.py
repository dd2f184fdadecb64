"""Streaming benchmark: inferkit's ``generate_stream`` against minimal raw SSE loops, in one run.

What it measures on the REST ``generate_stream`` route of a stand-in LLM that streams the words of its input
(one event per word, no delay, so the client's own cost is what differs), each figure the median of ``--runs``
repetitions, the stacks interleaved within each repetition (their order rotating) so machine noise hits all alike:

1. **client CPU per event** (sync): streams of ``--events`` events, one after the other on one kept-alive
   connection: inferkit's ``InferenceRESTClient.generate_stream`` (pooled connection) vs a raw ``http.client``
   loop (one ``HTTPConnection`` reused; ``readline``, ``data:`` lines parsed with the same JSON library inferkit
   uses: orjson when installed, else ``json``). CPU is this process's ``process_time`` (the server runs in
   another process);
2. **time to first event** (sync): one-event streams, from the call to the first event in hand (inferkit: the
   ``generate_stream(...)`` call to the first ``next()``), median per stack; overhead = inferkit - raw;
3. **100 concurrent aio streams**: ``asyncio.gather`` of ``--concurrency`` streams of ``--events`` events on one
   ``inferkit.aio.InferenceRESTClient`` vs a raw ``aiohttp.ClientSession`` loop (``async for line in
   resp.content``): events/s and client CPU per event. Both with a 10 s read timeout (inferkit's per-event
   ``Timeout.read``, aiohttp's ``sock_read``), so a stalled stream fails its run (reported, left out of the
   medians) instead of hanging it.

Goals (issue 18): per-event client CPU <= 1.2x the raw loop; time-to-first-event overhead <= 0.2 ms; 100
concurrent aio streams at >= 1.0x the raw aiohttp loop's events/s.

Servers: inferkit's reference server in its own process (``llm_model``), and real Triton's python-backend ``llm``
model (tests/interop/triton_models/llm, through benchmarks/servers.py) unless ``--no-triton`` or it cannot start.

Usage::

    python benchmarks/stream_bench.py                 # full (~3-5 min on 2 cores)
    python benchmarks/stream_bench.py --quick --no-triton
    python benchmarks/stream_bench.py --json out.json --markdown out.md
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from inferkit import InferenceRESTClient, RESTConfig, Timeout  # noqa: E402
from inferkit import aio as inferkit_aio  # noqa: E402

try:
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads
    JSON_LIB = "orjson"
except ImportError:  # pragma: no cover - the stdlib, as inferkit falls back to
    loads = json.loads
    JSON_LIB = "json"

SERVER_CODE = """
import sys
from inferkit.testing import ReferenceServer
from inferkit.testing.models import llm_model
with ReferenceServer([llm_model("llm")], grpc=False, max_workers=16) as s:
    print(s.http_url, flush=True)
    sys.stdin.read()
"""
ROUTE = "/v2/models/llm/generate_stream"
READ_TIMEOUT = 10.0


def payload(events: int) -> dict[str, Any]:
    return {"text_input": " ".join(["w"] * events), "max_tokens": events}


class ReferenceProcess:
    """inferkit's reference server with the stand-in LLM, in its own process (its CPU is not the client's)."""

    def __enter__(self) -> str:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.__exit__()
            raise SystemExit("the reference server did not start")
        return line

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


# -- sync stacks: a stream read to its end; each returns (events, seconds to the first event) ------------------------


class RawSync:
    """A minimal hand-written SSE loop: one kept-alive ``http.client`` connection, ``data:`` lines parsed."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def stream(self, body: bytes) -> tuple[int, float]:
        t0 = time.perf_counter()
        self.conn.request("POST", ROUTE, body=body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"raw loop: status {resp.status}: {resp.read()[:200]!r}")
        n, first = 0, 0.0
        for line in resp:
            if line.startswith(b"data:"):
                loads(line[5:])
                if not n:
                    first = time.perf_counter() - t0
                n += 1
        return n, first

    def close(self) -> None:
        self.conn.close()


class InferkitSync:
    def __init__(self, url: str) -> None:
        self.client = InferenceRESTClient(url)

    def stream(self, body: dict[str, Any]) -> tuple[int, float]:
        t0 = time.perf_counter()
        n, first = 0, 0.0
        with self.client.generate_stream("llm", body) as events:
            for _ in events:
                if not n:
                    first = time.perf_counter() - t0
                n += 1
        return n, first

    def close(self) -> None:
        self.client.close()


def sync_cpu_per_event(url: str, events: int, streams: int, runs: int) -> dict[str, dict[str, float]]:
    """stack -> {"cpu_us_per_event", "wall_us_per_event"} (medians of ``runs``)."""
    stacks: dict[str, tuple[Any, Any]] = {
        "raw http.client": (RawSync(url), json.dumps(payload(events)).encode()),
        "inferkit": (InferkitSync(url), payload(events)),
    }
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in stacks}
    try:
        for stack, body in stacks.values():  # warm-up: connections, first-call costs
            for _ in range(5):
                assert stack.stream(body)[0] == events
        order = list(stacks.items())
        for r in range(runs):
            order = order[1:] + order[:1] if r else order
            for name, (stack, body) in order:
                gc.collect()
                c0, t0 = time.process_time(), time.perf_counter()
                total = sum(stack.stream(body)[0] for _ in range(streams))
                samples[name].append(
                    ((time.process_time() - c0) / total * 1e6, (time.perf_counter() - t0) / total * 1e6)
                )
    finally:
        for stack, _ in stacks.values():
            stack.close()
    return {
        k: {
            "cpu_us_per_event": statistics.median(c for c, _ in v),
            "wall_us_per_event": statistics.median(w for _, w in v),
        }
        for k, v in samples.items()
    }


def sync_ttfe(url: str, calls: int, runs: int) -> dict[str, Any]:
    """Per stack {"ttfe_us"} (median of every one-event stream), and the paired overhead: the two stacks alternate
    call by call (which goes first alternating too), and the overhead is the median of the differences of each
    pair, so that a change of the machine's load hits both calls of a pair alike."""
    raw, ik = RawSync(url), InferkitSync(url)
    raw_body, ik_body = json.dumps(payload(1)).encode(), payload(1)
    firsts: dict[str, list[float]] = {"raw http.client": [], "inferkit": []}
    diffs: list[float] = []
    try:
        for _ in range(20):
            raw.stream(raw_body)
            ik.stream(ik_body)
        for r in range(runs):
            gc.collect()
            for i in range(calls):
                if (r + i) % 2:
                    a = raw.stream(raw_body)[1]
                    b = ik.stream(ik_body)[1]
                else:
                    b = ik.stream(ik_body)[1]
                    a = raw.stream(raw_body)[1]
                firsts["raw http.client"].append(a)
                firsts["inferkit"].append(b)
                diffs.append(b - a)
    finally:
        raw.close()
        ik.close()
    out: dict[str, Any] = {k: {"ttfe_us": statistics.median(v) * 1e6} for k, v in firsts.items()}
    out["overhead_us_paired"] = statistics.median(diffs) * 1e6
    return out


# -- aio: N concurrent streams ------------------------------------------------------------------------------------


async def aio_concurrent(url: str, events: int, concurrency: int, runs: int) -> dict[str, Any]:
    """stack -> {"events_per_s", "cpu_us_per_event"} for ``concurrency`` streams at once (medians of ``runs``)."""
    import aiohttp

    body_json = json.dumps(payload(events)).encode()
    body = payload(events)
    # Both with a 10 s read timeout per wait for bytes (inferkit's is the time per event; aiohttp's sock_read)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(sock_read=READ_TIMEOUT)
    )
    client = inferkit_aio.InferenceRESTClient(url, RESTConfig(timeout=Timeout(read=READ_TIMEOUT)))

    async def raw_one() -> int:
        n = 0
        async with session.post(url + ROUTE, data=body_json, headers={"Content-Type": "application/json"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"raw aiohttp loop: status {resp.status}")
            async for line in resp.content:
                if line.startswith(b"data:"):
                    loads(line[5:])
                    n += 1
        return n

    async def ik_one() -> int:
        n = 0
        async with client.generate_stream("llm", body) as stream:
            async for _ in stream:
                n += 1
        return n

    stacks = {"raw aiohttp": raw_one, "inferkit.aio": ik_one}
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in stacks}
    failed: dict[str, list[str]] = {k: [] for k in stacks}
    rounds: list[dict[str, float | None]] = [{} for _ in range(runs)]  # events/s of each stack, round by round
    try:
        for one in stacks.values():  # warm-up: open the connections of every concurrent stream
            await asyncio.gather(*(one() for _ in range(concurrency)), return_exceptions=True)
        order = list(stacks.items())
        for r in range(runs):
            order = order[1:] + order[:1] if r else order
            for name, one in order:
                gc.collect()
                c0, t0 = time.process_time(), time.perf_counter()
                got = await asyncio.gather(*(one() for _ in range(concurrency)), return_exceptions=True)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                errors = [f"{type(x).__name__}: {x}" for x in got if isinstance(x, BaseException)]
                if errors:  # a run with a failed stream is not a measurement: said, and left out of the medians
                    failed[name].append(f"{len(errors)} of {concurrency} streams failed: {errors[0][:200]}")
                    rounds[r][name] = None
                    continue
                total = sum(got)
                samples[name].append((total / wall, cpu / total * 1e6))
                rounds[r][name] = total / wall
    finally:
        await session.close()
        await client.close()
    ratios = [x["inferkit.aio"] / x["raw aiohttp"] for x in rounds if x.get("inferkit.aio") and x.get("raw aiohttp")]
    out: dict[str, Any] = {
        k: {
            "events_per_s": statistics.median(e for e, _ in v) if v else float("nan"),
            "cpu_us_per_event": statistics.median(c for _, c in v) if v else float("nan"),
            "runs": len(v),
            "events_per_s_samples": [round(e) for e, _ in v] if len(v) == runs else [],
            "failed_runs": failed[k],
        }
        for k, v in samples.items()
    }
    # Paired: inferkit / raw within each round (the two runs back to back), the median of those ratios.
    out["events_per_s_ratio_paired"] = statistics.median(ratios) if ratios else float("nan")
    return out


# -- one server, the report ---------------------------------------------------------------------------------------


def run_server(url: str, quick: bool) -> dict[str, Any]:
    runs = 3 if quick else 7
    events = 100 if quick else 200
    res: dict[str, Any] = {"url": url}
    res["settings"] = {"runs": runs, "events": events, "aio_events": 20 if quick else 50, "concurrency": 100}
    res["cpu"] = sync_cpu_per_event(url, events, 5 if quick else 10, runs)
    res["ttfe"] = sync_ttfe(url, 30 if quick else 100, runs)
    res["aio"] = asyncio.run(aio_concurrent(url, res["settings"]["aio_events"], 100, 2 * runs + 1))
    return res


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: nproc {m['nproc']}, load average at start {m['loadavg_start']}, at end {m['loadavg_end']}; "
        f"Python {m['python']}; JSON: {JSON_LIB} (raw loops and inferkit alike). Medians of the runs; in each run "
        "the stacks are interleaved (order rotating). Client CPU is this process's `process_time` (server in another "
        "process).",
        "",
        "| server | measure | raw loop | inferkit | inferkit / raw | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["servers"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        st = r["settings"]
        raw, ik = r["cpu"]["raw http.client"], r["cpu"]["inferkit"]
        ratio = ik["cpu_us_per_event"] / raw["cpu_us_per_event"]
        lines.append(
            f"| {name} | sync client CPU / event ({st['events']}-event streams, kept-alive connection) | "
            f"{raw['cpu_us_per_event']:.1f} us | {ik['cpu_us_per_event']:.1f} us | {ratio:.2f}x | <= 1.2x | "
            f"{'yes' if ratio <= 1.2 else 'NO'} |"
        )
        lines.append(
            f"| {name} | sync wall time / event | {raw['wall_us_per_event']:.1f} us | {ik['wall_us_per_event']:.1f} us "
            f"| {ik['wall_us_per_event'] / raw['wall_us_per_event']:.2f}x | | |"
        )
        raw_t, ik_t = r["ttfe"]["raw http.client"]["ttfe_us"], r["ttfe"]["inferkit"]["ttfe_us"]
        over = r["ttfe"]["overhead_us_paired"] / 1e3
        lines.append(
            f"| {name} | sync time to first event (1-event streams; overhead: median of paired differences) | "
            f"{raw_t / 1e3:.3f} ms | {ik_t / 1e3:.3f} ms | {over:+.3f} ms | <= +0.2 ms | "
            f"{'yes' if over <= 0.2 else 'NO'} |"
        )
        a_raw, a_ik = r["aio"]["raw aiohttp"], r["aio"]["inferkit.aio"]
        for stack, entry in (("raw aiohttp", a_raw), ("inferkit.aio", a_ik)):
            for why in entry.get("failed_runs", ()):
                lines.append(f"| {name} | aio run left out ({stack}): {why} | | | | | |")
        ev = r["aio"]["events_per_s_ratio_paired"]
        lines.append(
            f"| {name} | aio: {st['concurrency']} concurrent streams x {st['aio_events']} events, events/s "
            "(ratio: median of paired rounds) | "
            f"{a_raw['events_per_s']:,.0f} | {a_ik['events_per_s']:,.0f} | {ev:.2f}x | >= 1.0x | "
            f"{'yes' if ev >= 1.0 else 'NO'} |"
        )
        lines.append(
            f"| {name} | aio: client CPU / event at {st['concurrency']} streams | {a_raw['cpu_us_per_event']:.1f} us | "
            f"{a_ik['cpu_us_per_event']:.1f} us | {a_ik['cpu_us_per_event'] / a_raw['cpu_us_per_event']:.2f}x | | |"
        )
    return "\n".join(lines)


def _triton(quick: bool) -> dict[str, Any]:
    try:
        import servers
    except Exception as exc:  # noqa: BLE001 - the harness is unusable here: a skip with the reason
        return {"skipped": f"interop harness unavailable: {exc}"}
    ok, why = servers.server_available("triton")
    if not ok:
        return {"skipped": why}
    try:
        with servers.real_server("triton") as srv:
            if "llm" not in srv.models:
                return {"skipped": "Triton's repository has no llm model"}
            return run_server(srv.http_url, quick)
    except servers.harness.HarnessError as exc:
        return {"skipped": str(exc).splitlines()[0]}
    except Exception as exc:  # noqa: BLE001 - a failed measurement must not lose the reference server's results
        return {"skipped": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (a smoke test)")
    parser.add_argument("--no-triton", action="store_true", help="the reference server only")
    parser.add_argument("--url", help="a running server's REST URL serving the stand-in 'llm' (instead of both)")
    parser.add_argument("--json", type=Path, help="write the raw results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown")
    args = parser.parse_args()
    import platform

    results: dict[str, Any] = {
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "loadavg_start": os.getloadavg()},
        "servers": {},
    }
    print(f"nproc {os.cpu_count()} load average {os.getloadavg()}", file=sys.stderr, flush=True)
    if args.url:
        results["servers"][args.url] = run_server(args.url, args.quick)
    else:
        with ReferenceProcess() as url:
            print(f"reference server at {url} ...", file=sys.stderr, flush=True)
            results["servers"]["inferkit reference server"] = run_server(url, args.quick)
        if args.no_triton:
            results["servers"]["Triton 2.51 (python backend llm)"] = {"skipped": "--no-triton"}
        else:
            print("Triton ...", file=sys.stderr, flush=True)
            results["servers"]["Triton 2.51 (python backend llm)"] = _triton(args.quick)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["machine"]["loadavg_start"] = " ".join(f"{x:.2f}" for x in results["machine"]["loadavg_start"])
    results["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in results["machine"]["loadavg_end"])
    text = render(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
