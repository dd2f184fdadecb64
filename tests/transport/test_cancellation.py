"""Cancelling an aio task cancels its call on the server's side: the gRPC call is cancelled (the server's handler
sees it), the HTTP request's connection is closed (the server finds it closed). The reference server records both
(``ReferenceServer.abandoned``); the client stays usable afterwards.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("grpc")

import inferkit.aio as aio  # noqa: E402
from inferkit import InferInput, InferRequest, RESTConfig  # noqa: E402


def _slow(seconds: float) -> InferRequest:
    x = InferInput("INPUT0", [1], "FP32").set_data_from_numpy(np.ones(1, np.float32))
    return InferRequest("slow", [x], parameters={"sleep": seconds})


def _client(kind: str, server: Any) -> Any:
    if kind == "rest":
        return aio.InferenceRESTClient(server.http_url, RESTConfig(retries=0))
    return aio.InferenceGRPCClient(server.grpc_address, retries=0)


async def _wait_for(condition: Any, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_cancelling_the_task_cancels_the_call(kind: str, reference_server: Any) -> None:
    async def main() -> None:
        async with _client(kind, reference_server) as client:
            task = asyncio.ensure_future(client.infer(_slow(0.5)))
            await _wait_for(lambda: reference_server.count(route="infer", model="slow"), "the request to arrive")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # gRPC: at once; REST: when the model is done and the server finds the connection closed.
            await _wait_for(lambda: reference_server.abandoned("infer") == [kind], "the server to see it")
            assert (await client.get_model_metadata("slow"))["name"] == "slow"  # the client is still usable

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_a_call_left_alone_is_not_abandoned(kind: str, reference_server: Any) -> None:
    async def main() -> None:
        async with _client(kind, reference_server) as client:
            await client.infer(_slow(0.05))

    asyncio.run(main())
    assert reference_server.abandoned() == []
