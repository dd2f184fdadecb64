"""Async fan-out: send one input to several models at once with ``inferkit.aio`` and ``asyncio.gather``.

    pip install "inferkit[aio]"
    python docs/examples/async_fanout.py --url http://127.0.0.1:8000

``return_exceptions=True`` keeps one failing model (here a model the server does not have) from discarding the
answers of the others: each result is a response or the typed inferkit error of that call. The URL comes from
``--url`` or ``INFERKIT_URL``; without either, an embedded reference server is started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from inferkit import InferInput, InferRequest, RESTConfig
from inferkit.errors import InferkitError

SAMPLE = np.array([[5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


def request_for(model: str) -> InferRequest:
    """The same measurements, shaped for each model's input."""
    if model == "iris":
        x = InferInput("input", [1, 4], "FP32").set_data_from_numpy(SAMPLE)
    else:  # identity-style models take a flat FP32 INPUT0
        x = InferInput("INPUT0", [4], "FP32").set_data_from_numpy(SAMPLE.reshape(4))
    return InferRequest(model, [x])


def describe(result: Any) -> str:
    if isinstance(result, InferkitError):
        return f"{type(result).__name__}: {result}"
    if isinstance(result, BaseException):  # not inferkit's: a bug to see, not to hide
        raise result
    return ", ".join(f"{out.name}={out.as_numpy().tolist()}" for out in result.outputs)


async def fan_out(url: str, models: Sequence[str]) -> dict[str, Any]:
    from inferkit.aio import InferenceRESTClient  # noqa: PLC0415 - the aio extra

    # One client (one aiohttp session and pool) for every call on this event loop.
    async with InferenceRESTClient(url, config=RESTConfig(retries=2, timeout=30)) as client:
        results = await asyncio.gather(*(client.infer(request_for(m)) for m in models), return_exceptions=True)
    return dict(zip(models, results))


@contextlib.contextmanager
def server_url(url: Optional[str]) -> Iterator[str]:
    if url:
        yield url
        return
    from inferkit.testing import ReferenceServer  # noqa: PLC0415
    from inferkit.testing.models import demo_models  # noqa: PLC0415

    with ReferenceServer(demo_models(), grpc=False) as server:
        yield server.http_url


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="async fan-out over several models")
    parser.add_argument("--url", default=os.environ.get("INFERKIT_URL"))
    parser.add_argument("--models", default="iris,identity_fp32,slow,no_such_model")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    with server_url(args.url) as url:
        results = asyncio.run(fan_out(url, models))
    for model, result in results.items():
        print(f"{model:>16}: {describe(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
