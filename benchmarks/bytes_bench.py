"""BYTES (text) tensors: inferkit's codec against tritonclient's per-element loop, 1 to 1M elements, side by side.

Run: ``python benchmarks/bytes_bench.py [--sizes 1,10,100,1000,10000,100000,1000000] [--reps 9]
[--against /path/to/other/checkout]``

Each row times inferkit and the peer alternately (A, B, A, B, ...) ``--reps`` times within one process and prints
both medians and the ratio (peer time / inferkit time: above 1, inferkit is faster; the goal is >= 5x).
``--against DIR`` adds a third column: the same function from another checkout's ``inferkit/codec/datatypes.py``
(e.g. ``main``), timed in the same alternation, for before/after figures.

Cases (strings of random length 3-20, letters; "str" cases also carry some non-ASCII text when ``--unicode``):
encode an object array of bytes, of str, a numpy ``U`` and ``S`` array (tritonclient needs ``astype(object)`` for
``U``, which is timed as its users must do it); decode to an object array of bytes, and to str (tritonclient
followed by ``.decode()`` of each element, as its users must do). Then the peak extra memory of a binary BYTES
request (tracemalloc), as in ``codec_bench.py``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import timeit
import tracemalloc
from types import ModuleType
from typing import Any, Callable

import numpy as np

from inferkit.codec import datatypes, rest_v2
from inferkit.codec.tensors import InferInput, InferRequest


def make_strings(count: int, seed: int = 0, unicode: bool = False) -> list[bytes]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 21, count)
    letters = rng.integers(97, 123, int(lens.sum())).astype(np.uint8).tobytes()
    ends = np.cumsum(lens)
    items = [letters[e - n : e] for e, n in zip(ends.tolist(), lens.tolist())]
    if unicode:
        items[::7] = ["é".encode() * 3] * len(items[::7])
    return items


def load_other(root: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("other_datatypes", os.path.join(root, "inferkit/codec/datatypes.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample(fn: Callable[[], Any]) -> float:
    """Seconds per call: enough calls for ~5 ms, best of 3 of those (one sample of the alternation)."""
    once = timeit.timeit(fn, number=1)
    number = max(1, min(100_000, int(0.005 / max(once, 1e-7))))
    return min(timeit.repeat(fn, number=number, repeat=3)) / number


def compare(name: str, fns: dict[str, Callable[[], Any]], reps: int) -> None:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            times[key].append(sample(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    ours = med["inferkit"]
    cols = "  ".join(f"{k} {med[k] * 1e6:11.1f} us" for k in fns)
    ratios = "  ".join(f"{k}/inferkit {med[k] / ours:6.2f}x" for k in fns if k != "inferkit")
    print(f"  {name:<28} {cols}  {ratios}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,1000,10000,100000,1000000")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--against", help="another checkout whose datatypes.py is timed too (before/after)")
    parser.add_argument("--only", choices=["encode", "decode", "memory"])
    parser.add_argument("--unicode", action="store_true", help="every 7th string is non-ASCII")
    args = parser.parse_args()
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    other = load_other(args.against) if args.against else None
    print(f"nproc {os.cpu_count()}  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"python {sys.version.split()[0]}  numpy {np.__version__}  median of {args.reps} alternations")
    for count in [int(s) for s in args.sizes.split(",")]:
        items = make_strings(count, unicode=args.unicode)
        strs = [b.decode() for b in items]
        arrays = {
            "object bytes": np.array(items + [b""], dtype=object)[:-1],
            "object str": np.array(strs + [""], dtype=object)[:-1],
            "numpy U": np.array(strs),
            "numpy S": np.array(items, dtype="S"),
        }
        print(f"\n{count:,} elements")
        if args.only in (None, "encode"):
            for name, arr in arrays.items():
                if name == "numpy S" and args.unicode:
                    continue
                peer_input = arr.astype(object) if arr.dtype.kind == "U" else arr
                expected = serialize_byte_tensor(peer_input).item()
                assert datatypes.serialize_bytes_tensor(arr) == expected, name
                fns: dict[str, Callable[[], Any]] = {
                    "inferkit": lambda arr=arr: datatypes.serialize_bytes_tensor(arr),
                    "tritonclient": (
                        (lambda arr=arr: serialize_byte_tensor(arr.astype(object)))
                        if arr.dtype.kind == "U"
                        else (lambda arr=arr: serialize_byte_tensor(arr))
                    ),
                }
                if other is not None:
                    fns["before"] = lambda arr=arr, m=other: m.serialize_bytes_tensor(arr)
                compare(f"encode {name}", fns, args.reps)
        if args.only in (None, "decode"):
            wire = datatypes.serialize_bytes_tensor(arrays["object bytes"])
            assert list(datatypes.deserialize_bytes_tensor(wire, count)) == list(deserialize_bytes_tensor(wire))
            fns = {
                "inferkit": lambda wire=wire, n=count: datatypes.deserialize_bytes_tensor(wire, n),
                "tritonclient": lambda wire=wire: deserialize_bytes_tensor(wire),
            }
            if other is not None:
                fns["before"] = lambda wire=wire, n=count, m=other: m.deserialize_bytes_tensor(wire, n)
            compare("decode to bytes", fns, args.reps)
            fns = {
                "inferkit": lambda wire=wire, n=count: datatypes.deserialize_bytes_tensor(wire, n, as_str=True),
                "tritonclient": lambda wire=wire: np.array(
                    [b.decode() for b in deserialize_bytes_tensor(wire)] + [""], dtype=object
                )[:-1],
            }
            if other is not None:
                fns["before"] = lambda wire=wire, n=count, m=other: m.deserialize_bytes_tensor(wire, n, as_str=True)
            compare("decode to str", fns, args.reps)
    if args.only in (None, "memory"):
        bench_memory()


def bench_memory() -> None:
    print("\nPeak extra memory of a binary BYTES request, 100k strings (tracemalloc; goal <= 1x payload)")
    for name, arr in {
        "object bytes": np.array(make_strings(100_000), dtype=object),
        "object str": np.array([b.decode() for b in make_strings(100_000)], dtype=object),
        "numpy U": np.array([b.decode() for b in make_strings(100_000)]),
    }.items():
        payload = len(datatypes.serialize_bytes_tensor(arr))
        gc.collect()
        tracemalloc.start()
        result = rest_v2.encode_infer_request(
            InferRequest("m", [InferInput("s", [arr.size], "BYTES").set_data_from_numpy(arr)])
        )
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        kept = len(result.payload)
        print(
            f"  {name:<14} peak {peak / payload:5.2f}x payload, of which the body {kept / payload:4.2f}x: "
            f"extra {(peak - kept) / payload:5.2f}x"
        )


if __name__ == "__main__":
    main()
