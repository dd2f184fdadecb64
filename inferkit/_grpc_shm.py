"""gRPC call descriptions of Triton's system shared memory extension, shared by the sync and async gRPC clients.

Owns: the :class:`~inferkit.codec.grpc_calls.GRPCCall` of ``SystemSharedMemoryStatus`` / ``Register`` / ``Unregister``
and the infer call variant whose reply may leave out the shared memory parameters of the outputs it wrote.
Messages are built and read by the codec (``inferkit.codec.grpc_messages``). Must not import at module level: grpc,
protobuf, requests, urllib3, aiohttp, inferkit.aio.
"""

from __future__ import annotations

from typing import Any

from inferkit._grpc_common import codec
from inferkit.codec.grpc_calls import GRPCCall
from inferkit.codec.tensors import SHM_REGION, InferRequest

__all__ = ["shm_status", "shm_register", "shm_unregister", "infer_call"]


def _none(reply: Any) -> None:
    return None


def shm_status(region_name: str | None) -> GRPCCall:
    """``SystemSharedMemoryStatus`` -> ``[{"name", "key", "offset", "byte_size"}, ...]``."""
    c = codec()
    return GRPCCall("SystemSharedMemoryStatus", c.shm_status_request(region_name), c.shm_status_to_list)


def shm_register(name: str, key: str, byte_size: int, offset: int) -> GRPCCall:
    """``SystemSharedMemoryRegister``; not resent once it may have arrived (a second one would be ALREADY_EXISTS)."""
    return GRPCCall(
        "SystemSharedMemoryRegister", codec().shm_register_request(name, key, byte_size, offset), _none, retryable=False
    )


def shm_unregister(name: str | None) -> GRPCCall:
    """``SystemSharedMemoryUnregister`` (no name: every region)."""
    return GRPCCall("SystemSharedMemoryUnregister", codec().shm_unregister_request(name), _none)


def infer_call(call: GRPCCall, request: InferRequest) -> GRPCCall:
    """``call`` (an infer call for ``request``), parsing with the request's shared memory outputs when it has any.

    A server may return an output it wrote into shared memory without echoing its parameters; the reply is then
    read with the request's (so ``as_numpy()`` says where the data is instead of failing to decode).
    """
    requested = [out for out in request.outputs or () if SHM_REGION in out.parameters]
    if not requested:
        return call
    c = codec()
    name = call.model_name
    return call._replace(parse=lambda reply: c.decode_infer_response(reply, model_name=name, requested=requested))
