"""The sans-IO codec: tensors and protocol messages as bytes, dicts and protobuf messages.

Nothing here opens a socket, reads a clock, sleeps or starts a thread, and nothing here imports requests,
urllib3, aiohttp or grpc; only the ``codec/grpc_*.py`` modules touch protobuf (and only when imported:
``grpc_methods`` and ``grpc_calls`` not even then, until their protobuf side is first used).
Must not import: requests, urllib3, aiohttp, grpc, protobuf.
"""

from inferkit.codec.datatypes import DATATYPES, datatype_to_dtype, dtype_to_datatype
from inferkit.codec.tensors import (
    InferInput,
    InferOutput,
    InferRequest,
    InferRequestedOutput,
    InferResponse,
    InferTensor,
)

__all__ = [
    "DATATYPES",
    "datatype_to_dtype",
    "dtype_to_datatype",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferRequestedOutput",
    "InferResponse",
    "InferTensor",
]
