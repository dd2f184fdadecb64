"""Codec benchmark: inferkit's sans-IO codec against tritonclient (and raw numpy) in one run.

Run: ``python benchmarks/codec_bench.py [--runs 7] [--quick]``

Prints ``nproc`` and the load average first, then for each case the median of several runs and the ratio.
Cases: 64 MiB FP32 binary encode (vs ``arr.tobytes()``) and zero-copy decode; BYTES 100k short strings
(object bytes, object str, numpy U) encode/decode vs ``tritonclient.utils``; uniform-length BYTES; JSON encode and
decode of 16 MiB FP32 vs tritonclient (orjson and stdlib json); peak extra memory while encoding (tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import time
import tracemalloc
from typing import Any, Callable

import numpy as np

from inferkit.codec import _json, datatypes, rest_v2
from inferkit.codec.tensors import InferInput, InferOutput, InferRequest, InferResponse

MiB = 1 << 20


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def row(name: str, ours: float, theirs: float | None = None, label: str = "tritonclient") -> None:
    if theirs is None:
        print(f"  {name:<52} ours {ours:10.3f} ms")
    else:
        print(f"  {name:<52} ours {ours:10.3f} ms   {label} {theirs:10.3f} ms   ratio {theirs / ours:6.2f}x")


def use_stdlib_json() -> None:
    _json._dumps = _json._loads = None
    _json._backend = ""
    real = _json._setup

    def setup_without_orjson() -> None:
        import builtins

        original = builtins.__import__

        def blocked(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "orjson":
                raise ImportError(name)
            return original(name, *args, **kwargs)

        builtins.__import__ = blocked
        try:
            real()
        finally:
            builtins.__import__ = original

    _json._setup = setup_without_orjson  # type: ignore[assignment]


def reset_json() -> None:
    import importlib

    importlib.reload(_json)
    rest_v2._json = _json  # type: ignore[attr-defined]


def bench_numeric(runs: int, size_mib: int) -> None:
    print(f"\nNumeric FP32 binary, {size_mib} MiB")
    arr = np.random.default_rng(0).random(size_mib * MiB // 4, dtype=np.float32)
    x = InferInput("x", [arr.size], "FP32").set_data_from_numpy(arr)
    request = InferRequest("m", [x])
    ours = median_ms(lambda: rest_v2.encode_infer_request(request), runs)
    raw = median_ms(lambda: arr.tobytes(), runs)
    print(
        f"  {'encode_infer_request body vs arr.tobytes()':<52} ours {ours:10.3f} ms   tobytes {raw:10.3f} ms"
        f"   ours/tobytes {ours / raw:5.2f}x (target <= 1.5x)"
    )
    try:
        import tritonclient.http as th

        def triton_encode() -> Any:
            tin = th.InferInput("x", [arr.size], "FP32")
            tin.set_data_from_numpy(arr, binary_data=True)
            return th.InferenceServerClient.generate_request_body([tin])

        row("  tritonclient set_data + generate_request_body", ours, median_ms(triton_encode, runs))
    except ImportError:
        pass
    out = InferOutput("y", [arr.size], "FP32").set_data_from_numpy(arr)
    body = rest_v2.encode_infer_response(InferResponse("m", [out]), binary_output=True)

    def decode() -> np.ndarray:
        return rest_v2.decode_infer_response(body.body, body.json_size).as_numpy("y")

    decoded = decode()
    base = np.frombuffer(body.body, np.uint8)
    zero_copy = np.shares_memory(decoded, base)
    dec = median_ms(decode, runs)
    print(
        f"  {'decode_infer_response(...).as_numpy() (zero-copy)':<52} ours {dec:10.3f} ms   "
        f"shares memory with body: {zero_copy}"
    )
    try:
        import tritonclient.http as th

        theirs = median_ms(
            lambda: th.InferenceServerClient.parse_response_body(body.body, header_length=body.json_size).as_numpy("y"),
            runs,
        )
        row("  tritonclient parse_response_body + as_numpy", dec, theirs)
    except ImportError:
        pass


def make_strings(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 21, count)
    letters = rng.integers(97, 123, int(lens.sum())).astype(np.uint8).tobytes()
    ends = np.cumsum(lens)
    return [letters[e - n : e] for e, n in zip(ends.tolist(), lens.tolist())]


def bench_bytes(runs: int, count: int) -> None:
    try:
        from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor
    except ImportError:
        print("\nBYTES: tritonclient not installed, skipped")
        return
    items = make_strings(count)
    cases = {
        "object bytes": np.array(items, dtype=object),
        "object str": np.array([s.decode() for s in items], dtype=object),
        "numpy U": np.array([s.decode() for s in items]),
        "object bytes, uniform length 12": np.array([s[:3] * 4 for s in items], dtype=object),
    }
    print(f"\nBYTES, {count:,} strings (random lengths 3-20 unless noted)")
    for name, arr in cases.items():
        # tritonclient rejects numpy U arrays: its users convert with astype(object) first, so that is timed.
        convert = arr.dtype.kind == "U"
        wire = datatypes.serialize_bytes_tensor(arr)
        theirs_wire = serialize_byte_tensor(arr.astype(object) if convert else arr)
        assert wire == theirs_wire.item(), f"wire mismatch for {name}"
        ours = median_ms(lambda arr=arr: datatypes.serialize_bytes_tensor(arr), runs)
        theirs = median_ms(
            lambda arr=arr, convert=convert: serialize_byte_tensor(arr.astype(object) if convert else arr), runs
        )
        row(f"encode {name} (target >= 5x)", ours, theirs)
        got = datatypes.deserialize_bytes_tensor(wire, arr.size)
        assert list(got) == list(deserialize_bytes_tensor(wire))
        ours = median_ms(lambda wire=wire, n=arr.size: datatypes.deserialize_bytes_tensor(wire, n), runs)
        theirs = median_ms(lambda wire=wire: deserialize_bytes_tensor(wire), runs)
        row(f"decode {name} (target >= 5x)", ours, theirs)
    wire = datatypes.serialize_bytes_tensor(cases["object bytes"])
    loop = median_ms(lambda: datatypes._deserialize_loop(wire, len(wire), count, ""), runs)
    ours = median_ms(lambda: datatypes.deserialize_bytes_tensor(wire, count), runs)
    row("decode: vectorised vs the plain per-element loop", ours, loop, label="loop")
    ours = median_ms(lambda: datatypes.deserialize_bytes_tensor(wire, count, as_str=True), runs)
    theirs = median_ms(lambda: np.array([b.decode() for b in deserialize_bytes_tensor(wire)], dtype=object), runs)
    row("decode as str (tritonclient + .decode())", ours, theirs)


def bench_json(runs: int, size_mib: int) -> None:
    try:
        import tritonclient.http as th
    except ImportError:
        print("\nJSON: tritonclient not installed, skipped")
        return
    arr = np.random.default_rng(1).random(size_mib * MiB // 4, dtype=np.float32)
    request = InferRequest("m", [InferInput("x", [arr.size], "FP32").set_data_from_numpy(arr, binary_data=False)])

    def triton_encode() -> Any:
        tin = th.InferInput("x", [arr.size], "FP32")
        tin.set_data_from_numpy(arr, binary_data=False)
        return th.InferenceServerClient.generate_request_body([tin])

    theirs = median_ms(triton_encode, max(1, runs // 3))
    out = InferOutput("y", [arr.size], "FP32").set_data_from_numpy(arr)
    body = rest_v2.encode_infer_response(InferResponse("m", [out]), binary_output=False).body
    theirs_dec = median_ms(lambda: th.InferenceServerClient.parse_response_body(body).as_numpy("y"), max(1, runs // 3))
    simd_floor = _json.SIMDJSON_MIN_BYTES
    for backend in ("orjson", "json"):
        if backend == "json":
            use_stdlib_json()
        print(f"\nJSON FP32, {size_mib} MiB, backend={_json.backend()}")
        ours = median_ms(lambda: rest_v2.encode_infer_request(request, binary=False), max(1, runs // 3))
        row("encode (target >= 10x)", ours, theirs)
        # the fast extra's reader for long lists of numbers (pysimdjson; codec/_json.loads_tensors), then without it
        readers = (("decode + as_numpy, pysimdjson (target >= 3x)", simd_floor), ("decode + as_numpy", 1 << 62))
        for label, floor in readers:
            if floor == simd_floor and (backend == "json" or importlib.util.find_spec("simdjson") is None):
                continue
            _json.SIMDJSON_MIN_BYTES = floor
            ours_dec = median_ms(lambda: rest_v2.decode_infer_response(body).as_numpy("y"), max(1, runs // 3))
            row(label, ours_dec, theirs_dec)
        _json.SIMDJSON_MIN_BYTES = simd_floor
    reset_json()


def bench_memory(size_mib: int) -> None:
    print(f"\nPeak extra memory while encoding ({size_mib} MiB payload, tracemalloc; target <= 1x payload)")
    payload = size_mib * MiB
    arr = np.random.default_rng(2).random(payload // 4, dtype=np.float32)
    cases: dict[str, Callable[[], Any]] = {
        "binary FP32 request": lambda: rest_v2.encode_infer_request(
            InferRequest("m", [InferInput("x", [arr.size], "FP32").set_data_from_numpy(arr)])
        ),
        "binary BYTES request (100k strings)": None,  # type: ignore[dict-item]
    }
    items = np.array(make_strings(100_000), dtype=object)
    bytes_payload = len(datatypes.serialize_bytes_tensor(items))
    cases["binary BYTES request (100k strings)"] = lambda: rest_v2.encode_infer_request(
        InferRequest("m", [InferInput("s", [items.size], "BYTES").set_data_from_numpy(items)])
    )
    for name, fn in cases.items():
        size = payload if "FP32" in name else bytes_payload
        gc.collect()
        tracemalloc.start()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        kept = len(result.body)
        del result
        print(
            f"  {name:<52} peak {peak / MiB:8.2f} MiB = {peak / size:4.2f}x payload "
            f"(the body itself: {kept / size:4.2f}x; extra: {(peak - kept) / size:4.2f}x)"
        )
    try:
        import tritonclient.http as th

        gc.collect()
        tracemalloc.start()
        tin = th.InferInput("x", [arr.size], "FP32")
        tin.set_data_from_numpy(arr, binary_data=True)
        th.InferenceServerClient.generate_request_body([tin])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  {'tritonclient binary FP32 request':<52} peak {peak / MiB:8.2f} MiB = {peak / payload:4.2f}x payload")
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller payloads (a smoke test)")
    parser.add_argument("--only", choices=["numeric", "bytes", "json", "memory"], help="run one section")
    args = parser.parse_args()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    print(f"nproc {os.cpu_count()}  load average {' '.join(f'{x:.2f}' for x in load)}  json backend {_json.backend()}")
    print(f"numpy {np.__version__}", end="")
    try:
        from importlib.metadata import version

        print(f"  tritonclient {version('tritonclient')}")
    except Exception:  # noqa: BLE001 - only a label
        print("  tritonclient not installed")
    big, mid, count = (4, 1, 10_000) if args.quick else (64, 16, 100_000)
    sections = {
        "numeric": lambda: bench_numeric(args.runs, big),
        "bytes": lambda: bench_bytes(args.runs, count),
        "json": lambda: bench_json(args.runs, mid),
        "memory": lambda: bench_memory(mid),
    }
    for name, run in sections.items():
        if args.only in (None, name):
            run()
    _ = json  # stdlib json is what the "json" backend uses


if __name__ == "__main__":
    main()
