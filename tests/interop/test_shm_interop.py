"""System shared memory against real Triton (same host, separate process), through the four client kinds.

Only Triton implements the ``system_shared_memory`` extension; KServe ModelServer and MLServer have no such
endpoints, so this file uses the ``triton`` fixture alone (the other servers are not started for it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.interop import harness
from tests.interop.test_matrix import KINDS, make_client

pytestmark = pytest.mark.interop

shm = pytest.importorskip("inferkit.shm")
A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, triton: harness.Server) -> Iterator[Any]:
    c = make_client(str(request.param), triton)
    try:
        c.unregister_system_shared_memory()  # a clean slate on the shared server
        yield c
    finally:
        try:
            _unregister_all(c)
        finally:
            c.close()


def _unregister_all(client: Any, seconds: float = 10.0) -> None:
    """Unregister every region, retrying (bounded) while Triton still holds one for a just-answered request.

    Triton releases a request's shared-memory references only after the response has been sent; an unregister
    right after the reply can fail with "Failed to unregister the following system shared memory regions".
    """
    e = pytest.importorskip("inferkit.errors")
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.unregister_system_shared_memory()
            return
        except e.InternalServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_register_status_unregister(client: Any) -> None:
    with shm.SharedMemoryRegion(128) as region:
        client.register_system_shared_memory(region.name, region.key, 128)
        status = client.get_system_shared_memory_status(region.name)
        assert [(s["name"], s["key"], int(s["offset"]), int(s["byte_size"])) for s in status] == [
            (region.name, region.key, 0, 128)
        ]
        assert region.name in {s["name"] for s in client.get_system_shared_memory_status()}
        e = pytest.importorskip("inferkit.errors")
        # Triton 2.51 answers REST 400 and gRPC ALREADY_EXISTS: one meaning, one class on both protocols.
        with pytest.raises(e.ConflictError, match=f"shared memory region '{region.name}' already in manager"):
            client.register_system_shared_memory(region.name, region.key, 128)
        with pytest.raises(e.NotFoundError):
            client.get_system_shared_memory_status("inferkit_no_such_region")
        client.unregister_system_shared_memory(region.name)
        assert region.name not in {s["name"] for s in client.get_system_shared_memory_status()}


def test_add_sub_inputs_and_output_in_shared_memory(client: Any) -> None:
    ik = pytest.importorskip("inferkit")
    with shm.SharedMemoryRegion(128) as inputs, shm.SharedMemoryRegion(128) as outputs:
        inputs.set([A, B])
        client.register_system_shared_memory(inputs.name, inputs.key, 128)
        client.register_system_shared_memory(outputs.name, outputs.key, 128)
        request = ik.InferRequest(
            "add_sub",
            [
                ik.InferInput("INPUT0", [1, 16], "INT32").set_shared_memory(inputs.name, 64),
                ik.InferInput("INPUT1", [1, 16], "INT32").set_shared_memory(inputs.name, 64, offset=64),
            ],
            outputs=[outputs.requested_output("OUTPUT0", 64), ik.InferRequestedOutput("OUTPUT1")],
        )
        response = client.infer(request)
        np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), A - B)
        out0 = response.get_output("OUTPUT0")
        assert out0.shared_memory is not None and out0.shared_memory[0] == outputs.name
        with pytest.raises(ValueError, match="read it from the region"):
            out0.as_numpy()
        np.testing.assert_array_equal(outputs.as_numpy(out0.datatype, out0.shape), A + B)
