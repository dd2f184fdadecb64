"""A batch job: classify many rows with ``infer_many``, a progress bar, and a list of the rows that failed.

    pip install "inferkit[progress]"
    python docs/examples/batch_progress.py --url http://127.0.0.1:8000 --rows 5000 --concurrency 16

The URL comes from ``--url`` or ``INFERKIT_URL`` (``grpc://host:port`` works too). Without either, the example
starts inferkit's embedded reference server (the ``iris`` demo model) for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, Optional, Sequence

import numpy as np

from inferkit import InferenceClientFactory, InferInput, InferRequest, InferRequestedOutput, ItemError, RESTConfig


def rows(count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Stand-in for reading a file: yields one [1, 4] row at a time, never the whole dataset."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5]).astype(np.float32).reshape(1, 4)


def requests(count: int, model: str) -> Iterator[InferRequest]:
    for i, row in enumerate(rows(count)):
        x = InferInput("input", [1, 4], "FP32").set_data_from_numpy(row)
        yield InferRequest(model, [x], request_id=f"row-{i}", outputs=[InferRequestedOutput("label")])


@contextlib.contextmanager
def server_url(url: Optional[str]) -> Iterator[str]:
    if url:
        yield url
        return
    from inferkit.testing import ReferenceServer  # noqa: PLC0415 - only for the self-contained run
    from inferkit.testing.models import iris_model  # noqa: PLC0415

    with ReferenceServer([iris_model()], grpc=False) as server:
        yield server.http_url


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="infer_many with a progress bar")
    parser.add_argument("--url", default=os.environ.get("INFERKIT_URL"))
    parser.add_argument("--model", default="iris")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)

    counts: dict[str, int] = {}
    failed: list[tuple[int, str]] = []
    with server_url(args.url) as url:
        if url.startswith(("grpc://", "grpcs://")):
            client = InferenceClientFactory.get_inference_client(url, retries=3, timeout=30)
        else:
            # The pool must hold at least `concurrency` connections: one per worker thread.
            config = RESTConfig(retries=3, timeout=30, pool_maxsize=max(args.concurrency, 8))
            client = InferenceClientFactory.get_inference_client(url, config=config)
        with client:
            # A generator, so only what is in flight is in memory; a progress bar needs the total up front.
            jobs = requests(args.rows, args.model)
            results = client.infer_many(jobs, concurrency=args.concurrency, progress=True, return_exceptions=True)
            with results:  # closing it stops the work and joins the worker threads, even on an exception
                for result in results:
                    if isinstance(result, ItemError):  # the request failed after the client's retries
                        failed.append((result.index, f"{type(result.exception).__name__}: {result.exception}"))
                        continue
                    label = result.as_numpy("label")[0].decode()
                    counts[label] = counts.get(label, 0) + 1
    print(f"classified {sum(counts.values())} rows: {dict(sorted(counts.items()))}")
    for index, error in failed[:10]:
        print(f"  row {index} failed: {error}")
    print(f"failed: {len(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
