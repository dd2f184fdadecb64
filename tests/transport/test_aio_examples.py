"""The async usage examples, as users write them, run unchanged but for the import (``inferkit.aio``).

Readiness checks, an infer, several models at once with ``asyncio.gather(..., return_exceptions=True)``, and
``except TimeoutError`` / ``except ConnectionError`` written for other clients; REST and gRPC.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import numpy as np
import pytest

from inferkit import InferInput, InferRequest, RESTConfig
from inferkit.testing import Fault, ReferenceServer

pytest.importorskip("aiohttp")
pytest.importorskip("grpc")

from inferkit.aio import InferenceClientFactory, InferenceGRPCClient, InferenceRESTClient  # noqa: E402


def iris_request(model: str = "iris") -> InferRequest:
    x = InferInput("input", [1, 4], "FP32").set_data_from_numpy(np.array([[5.9, 3.0, 4.2, 1.5]], dtype=np.float32))
    return InferRequest(model, [x])


async def readiness(client: Any) -> bool:
    # --- example: readiness checks ---
    live = await client.is_server_live()
    ready = await client.is_server_ready()
    model_ready = await client.is_model_ready("iris")
    return live and ready and model_ready


async def one_infer(client: Any) -> Any:
    # --- example: an infer ---
    response = await client.infer(iris_request())
    return response.as_numpy(response.outputs[0].name)


async def several_models(client: Any) -> list[Any]:
    # --- example: several models at once; one failure does not discard the others ---
    models = ["iris", "no_such_model", "iris"]
    return await asyncio.gather(*(client.infer(iris_request(m)) for m in models), return_exceptions=True)


async def guarded(client: Any) -> str:
    # --- example: the exceptions written for other clients ---
    try:
        await client.infer(iris_request(), timeout=0.2)
    except TimeoutError:
        return "timeout"
    except ConnectionError:
        return "unreachable"
    return "ok"


def make(kind: str, url: str) -> Any:
    if kind == "rest":
        return InferenceRESTClient(url, config=RESTConfig(retries=0))
    if kind == "grpc":
        return InferenceGRPCClient(url, retries=0)
    return InferenceClientFactory.get_inference_client(url)


@pytest.mark.parametrize("kind", ["rest", "grpc", "factory-rest", "factory-grpc"])
def test_examples(reference_server: ReferenceServer, kind: str) -> None:
    url = reference_server.grpc_url if "grpc" in kind else reference_server.http_url

    async def main() -> None:
        async with make(kind, url) as client:
            assert await readiness(client)
            assert (await one_infer(client)).shape[0] == 1
            results = await several_models(client)
            assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
            assert isinstance(results[1], LookupError) or type(results[1]).__name__ == "NotFoundError"
            reference_server.inject(Fault(route="infer", action="delay", seconds=1.0, times=None))
            assert await guarded(client) == "timeout"

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_unreachable_server_is_a_connection_error(kind: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}" if kind == "rest" else f"grpc://127.0.0.1:{port}"

    async def main() -> str:
        async with make(kind, url) as client:
            return await guarded(client)

    assert asyncio.run(asyncio.wait_for(main(), 20)) == "unreachable"
