"""Score many rows from one process with ``infer_batched``: the first thing to try before Ray or Spark.

Without ``--url`` it starts inferkit's embedded reference server (Triton's classic ``add_sub`` model) on
127.0.0.1; point ``--url`` at a real server serving a model with the same inputs to run it for real.

    python docs/examples/scale_one_machine.py --rows 100000 --concurrency 8
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Iterator, Optional, Sequence

import numpy as np

from inferkit import InferenceRESTClient, RESTConfig
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model


@contextlib.contextmanager
def model_server(url: Optional[str]) -> Iterator[str]:
    """The URL to use: the one given, or that of an embedded reference server started for the run."""
    if url:
        yield url
        return
    with ReferenceServer([add_sub_model()], max_workers=8) as server:
        yield server.http_url


def main(argv: Optional[Sequence[str]] = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="model server URL (default: start an embedded reference server)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, size=(args.rows, 16), dtype=np.int32)
    b = np.ones_like(a)
    with model_server(args.url) as url:
        # One client for the whole job; its pool must allow `concurrency` connections (256 by default).
        with InferenceRESTClient(url, RESTConfig(retries=3, timeout=30)) as client:
            t0 = time.perf_counter()
            out = client.infer_batched(
                "add_sub", {"INPUT0": a, "INPUT1": b}, batch_size=256, concurrency=args.concurrency
            )
            seconds = time.perf_counter() - t0
    assert np.array_equal(out["OUTPUT0"], a + 1) and np.array_equal(out["OUTPUT1"], a - 1)
    rate = args.rows / seconds
    print(f"{args.rows} rows in {seconds:.2f} s ({rate:,.0f} rows/s) with {args.concurrency} requests in flight")
    return rate


if __name__ == "__main__":
    main()
