"""Score a dataset with a model server from Ray Data, using inferkit's Ray adapter.

Runs anywhere with ``pip install inferkit[aio] "ray[data]"``: without ``--url`` it starts inferkit's embedded
reference server (serving Triton's classic ``add_sub`` model on 127.0.0.1) and a local Ray instance, so the
whole pipeline runs on one machine. Point ``--url`` at a real Triton/KServe server (``http://...`` for REST,
``grpc://...`` for gRPC) serving a model with the same inputs to run it for real.

    python docs/examples/ray_batch.py --rows 10000 --actors 2
    python docs/examples/ray_batch.py --url grpc://triton.internal:8001
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Iterator

import numpy as np
import ray

from inferkit import RESTConfig
from inferkit.integrations.ray import ClientSpec, infer_dataset
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model


@contextlib.contextmanager
def model_server(url: str | None, grpc: bool) -> Iterator[str]:
    """The URL to use: the one given, or that of an embedded reference server started for the run."""
    if url:
        yield url
        return
    with ReferenceServer([add_sub_model()], grpc=True, max_workers=8) as server:
        yield server.grpc_url if grpc else server.http_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="model server URL (default: start an embedded reference server)")
    parser.add_argument("--grpc", action="store_true", help="with the embedded server: use its gRPC endpoint")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()

    # Ray workers are new processes: they must be able to import inferkit (installed, or this checkout).
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": checkout}}, include_dashboard=False)

    # A dataset with an id column and two INT32 [16] feature columns; in real life: ray.data.read_parquet(...).
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, size=(args.rows, 16), dtype=np.int32)
    b = rng.integers(0, 100, size=(args.rows, 16), dtype=np.int32)
    ds = ray.data.from_items([{"id": i, "a": a[i], "b": b[i]} for i in range(args.rows)])

    with model_server(args.url, args.grpc) as url:
        if url.startswith("grpc"):
            spec = ClientSpec(url, grpc_options={"timeout": 30, "retries": 3})
        else:
            spec = ClientSpec(url, rest_config=RESTConfig(timeout=30, retries=3))
        scored = infer_dataset(
            ds,
            spec,
            "add_sub",
            actors=args.actors,  # Ray actors, each with its own client
            rows_per_batch=1024,  # rows per map_batches call
            batch_size=128,  # rows per inference request
            concurrency=4,  # requests in flight per actor
            inputs={"a": "INPUT0", "b": "INPUT1"},
            outputs={"OUTPUT0": "sum", "OUTPUT1": "diff"},
            keep_columns=["id"],
            map_batches_options={"num_cpus": 0.5},  # network-bound: pack actors
        )
        t0 = time.perf_counter()
        rows = scored.take_all()
        elapsed = time.perf_counter() - t0

    rows.sort(key=lambda r: r["id"])
    for r in rows:
        assert np.array_equal(r["sum"], a[r["id"]] + b[r["id"]])
    print(f"{len(rows)} rows scored in {elapsed:.2f} s with {args.actors} actors; first: {rows[0]}")
    ray.shutdown()


if __name__ == "__main__":
    main()
