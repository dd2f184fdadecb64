"""ModelInfer messages from tensors: the client's request and the server's response, as messages or wire bytes.

Owns: building ``ModelInferRequest`` (client side) and ``ModelInferResponse`` (server side) from an
:class:`~inferkit.codec.tensors.InferRequest` / :class:`~inferkit.codec.tensors.InferResponse`, with raw contents
(``raw_input_contents`` / ``raw_output_contents``, one bytes blob per tensor, the default) or typed contents
(``contents.fp32_contents`` ...), and each tensor's parameters as sent (the REST-only ``binary_data*`` dropped,
shared memory parameters checked). A tensor without data is an :class:`~inferkit.errors.EncodeError` naming it.
Must not import: requests, urllib3, aiohttp, grpc.

Wire bytes (``serialize_*``, :func:`encode_request`) copy each tensor exactly once, into the returned bytes (see
:mod:`inferkit.codec.grpc_wire`). The small-call hot path: a request is encoded in one pass
(:func:`encode_request`), with the serialized ``inputs`` entries cached by name, datatype and shape.

Shared memory (Triton's ``system_shared_memory`` extension): a tensor whose parameters carry
``shared_memory_region`` / ``shared_memory_byte_size`` (/ ``shared_memory_offset``) has no contents. A request gets
no raw contents entry for such an input (raw contents then map, in order, onto the other inputs); a response gets
an empty entry for such an output, which keeps raw contents aligned with the outputs by index.
"""

from __future__ import annotations

from typing import Any, Sequence

from inferkit.codec.grpc_params import encode_parameters
from inferkit.codec.grpc_wire import (
    REQ_RAW_FIELD,
    RESP_RAW_FIELD,
    SMALL_VARINTS,
    TYPED_CONTENTS_FIELD,
    Buffer,
    join_raw,
    pb,
    string_field,
    varint,
)
from inferkit.codec.tensors import (
    SHM_REGION,
    InferRequest,
    InferRequestedOutput,
    InferResponse,
    InferTensor,
    shared_memory_of,
)
from inferkit.errors import EncodeError

__all__ = [
    "encode_infer_request",
    "serialize_infer_request",
    "request_parts",
    "encode_request",
    "join_request_parts",
    "buffers_size",
    "encode_infer_response",
    "serialize_infer_response",
]

_ModelInferRequest = pb.ModelInferRequest


# -- client side: requests ---------------------------------------------------------------------------------------------


def _fill_typed_contents(tensor: InferTensor, msg: Any, where: str) -> None:
    field = TYPED_CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise EncodeError(
            f"{where}: tensor {tensor.name!r}: {tensor.datatype} has no typed contents field in the protocol; "
            "send it as raw contents (raw=True)"
        )
    arr = tensor.as_numpy()
    flat = arr.reshape(-1)
    if tensor.datatype == "BYTES":
        values: Any = [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in flat.tolist()]
    else:
        values = flat.tolist()
    getattr(msg.contents, field).extend(values)


def _build_request_header(request: InferRequest, *, raw: bool) -> tuple[Any, list[Buffer]]:
    # Hot path for every infer call: error texts are only formatted when something is wrong.
    if not request.inputs:
        raise EncodeError(f"model {request.model_name!r}: a request needs at least one input")
    msg = _ModelInferRequest(model_name=request.model_name)
    if request.model_version is not None:
        msg.model_version = request.model_version
    if request.request_id is not None:
        msg.id = request.request_id
    if request.parameters:
        encode_parameters(request.parameters, msg.parameters, f"model {request.model_name!r} request")
    buffers: list[Buffer] = []
    add = msg.inputs.add
    for tensor in request.inputs:
        in_shm = SHM_REGION in tensor.parameters
        if not in_shm and not tensor.has_data:
            raise EncodeError(
                f"model {request.model_name!r}: tensor {tensor.name!r} has no data; call set_data_from_numpy() first"
            )
        entry = add(name=tensor.name, datatype=tensor.datatype, shape=tensor._shape)
        if tensor.parameters:
            _tensor_parameters(tensor, entry, request.model_name)
        if in_shm:
            continue  # the data is in a registered region: no contents of any kind
        if raw:
            buffers.append(tensor.wire_bytes())
        else:
            _fill_typed_contents(tensor, entry, f"model {request.model_name!r}")
    if request.outputs is not None:
        for out in request.outputs:
            if not isinstance(out, InferRequestedOutput):
                raise EncodeError(
                    f"model {request.model_name!r}: outputs must be InferRequestedOutput objects, got {out!r}"
                )
            wanted = msg.outputs.add(name=out.name)
            params = out.wire_parameters()
            if params:
                encode_parameters(
                    params, wanted.parameters, f"model {request.model_name!r}: requested output {out.name!r}"
                )
    return msg, buffers


def _tensor_parameters(tensor: InferTensor, entry: Any, model_name: str) -> None:
    # binary_data* are REST framing; gRPC always carries tensors as bytes.
    params = {k: v for k, v in tensor.parameters.items() if k not in ("binary_data_size", "binary_data")}
    if SHM_REGION in params:
        shared_memory_of(params, f"model {model_name!r}: tensor {tensor.name!r}", EncodeError)
    encode_parameters(params, entry.parameters, f"model {model_name!r}: tensor {tensor.name!r}")


def encode_infer_request(request: InferRequest, *, raw: bool = True) -> Any:
    """Build a ``ModelInferRequest`` message.

    Args:
        request: The request.
        raw: Put tensor data in ``raw_input_contents`` (default; the only form for FP16 and BF16). False
            fills each input's typed ``contents`` instead.

    Prefer :func:`serialize_infer_request` to send: setting a bytes field copies it into the message.
    """
    msg, buffers = _build_request_header(request, raw=raw)
    for buf in buffers:
        msg.raw_input_contents.append(buf if isinstance(buf, bytes) else bytes(buf))
    return msg


# (name, datatype, shape) -> the serialized ``inputs`` entry (key included). Shapes repeat call after call, so
# most requests reuse their inputs' encodings; cleared when full, which bounds it.
_ENTRY_CACHE: dict[tuple[str, str, tuple[int, ...]], bytes] = {}
_ENTRY_CACHE_MAX = 4096
_INPUTS_KEY = b"\x2a"  # field 5 (inputs), length-delimited


def _input_entry(tensor: InferTensor, model_name: str) -> bytes:
    if tensor.parameters:
        msg = _ModelInferRequest.InferInputTensor(name=tensor.name, datatype=tensor.datatype, shape=tensor._shape)
        _tensor_parameters(tensor, msg, model_name)
        body = msg.SerializeToString()
        return _INPUTS_KEY + varint(len(body)) + body
    key = (tensor.name, tensor.datatype, tuple(tensor._shape))
    entry = _ENTRY_CACHE.get(key)
    if entry is None:
        body = _ModelInferRequest.InferInputTensor(
            name=tensor.name, datatype=tensor.datatype, shape=tensor._shape
        ).SerializeToString()
        entry = _INPUTS_KEY + varint(len(body)) + body
        if len(_ENTRY_CACHE) >= _ENTRY_CACHE_MAX:
            _ENTRY_CACHE.clear()
        _ENTRY_CACHE[key] = entry
    return entry


def request_parts(request: InferRequest) -> tuple[bytes, list[Buffer]]:
    """The serialized ``ModelInferRequest`` without its raw contents, and the raw contents (views, not copies).

    ``join_request_parts(*request_parts(r)) == serialize_infer_request(r)``; the split lets a transport look at
    the payload size before deciding how to send, without copying anything. Field order differs from
    protobuf's own serializer (the wire format allows any order); every parser reads the same message.
    """
    header, buffers = encode_request(request, 0)
    assert buffers is not None
    return header, buffers


def encode_request(request: InferRequest, join_below: int) -> tuple[bytes, list[Buffer] | None]:
    """``(wire bytes, None)`` when the raw contents total fewer than ``join_below`` bytes, else ``request_parts``.

    One pass over the request for the common call (small tensors: joined right away), without building the
    header twice for a large one. See :func:`request_parts` for the field order.
    """
    model_name = request.model_name
    inputs = request.inputs
    if not inputs:
        raise EncodeError(f"model {model_name!r}: a request needs at least one input")
    name_field = _NAME_FIELDS.get(model_name)
    if name_field is None:
        name_field = string_field(b"\x0a", model_name)
        if len(_NAME_FIELDS) >= _ENTRY_CACHE_MAX:
            _NAME_FIELDS.clear()
        _NAME_FIELDS[model_name] = name_field
    parts: list[Buffer] = [name_field]
    if request.model_version is not None:
        parts.append(string_field(b"\x12", request.model_version))
    if request.request_id is not None:
        parts.append(string_field(b"\x1a", request.request_id))
    if request.parameters or request.outputs is not None:
        parts.append(_request_extras(request))
    buffers: list[Buffer] = []
    entries = _ENTRY_CACHE
    total = 0
    for tensor in inputs:
        if tensor.parameters:
            parts.append(_input_entry(tensor, model_name))
            if SHM_REGION in tensor.parameters:
                continue  # no raw contents: the data is in a region
        else:
            entry = entries.get((tensor.name, tensor.datatype, tuple(tensor._shape)))
            parts.append(entry if entry is not None else _input_entry(tensor, model_name))
        raw = tensor._raw
        if raw is None:
            if tensor._array is None and tensor._json is None:
                raise EncodeError(
                    f"model {model_name!r}: tensor {tensor.name!r} has no data; call set_data_from_numpy() first"
                )
            raw = tensor.wire_bytes()
        buffers.append(raw)
        total += len(raw) if type(raw) is bytes else memoryview(raw).nbytes
    if total >= join_below:
        return b"".join(parts), buffers
    tag = SMALL_VARINTS[(REQ_RAW_FIELD << 3) | 2]
    for raw in buffers:
        size = len(raw) if type(raw) is bytes else memoryview(raw).nbytes
        parts.append(tag + (SMALL_VARINTS[size] if size < 0x80 else varint(size)))
        parts.append(raw)
    return b"".join(parts), None  # the only copy of each tensor


def _request_extras(request: InferRequest) -> bytes:
    # Rare enough to leave to protobuf: a message with only these fields, concatenated (a valid merge).
    model_name = request.model_name
    extra = _ModelInferRequest()
    if request.parameters:
        encode_parameters(request.parameters, extra.parameters, f"model {model_name!r} request")
    for out in request.outputs or ():
        if not isinstance(out, InferRequestedOutput):
            raise EncodeError(f"model {model_name!r}: outputs must be InferRequestedOutput objects, got {out!r}")
        wanted = extra.outputs.add(name=out.name)
        params = out.wire_parameters()
        if params:
            encode_parameters(params, wanted.parameters, f"model {model_name!r}: requested output {out.name!r}")
    return extra.SerializeToString()


# model name -> its serialized ``model_name`` field (cleared when full, like _ENTRY_CACHE).
_NAME_FIELDS: dict[str, bytes] = {}


def join_request_parts(header: bytes, buffers: Sequence[Buffer]) -> bytes:
    """Join the parts from :func:`request_parts` into the wire bytes (one copy of each tensor)."""
    return join_raw(header, REQ_RAW_FIELD, buffers)


def buffers_size(buffers: Sequence[Buffer]) -> int:
    """Total bytes of raw contents."""
    return sum(len(b) if type(b) is bytes else memoryview(b).nbytes for b in buffers)


def serialize_infer_request(request: InferRequest) -> bytes:
    """The wire bytes of a ``ModelInferRequest`` with raw contents, copying each tensor exactly once.

    Byte-for-byte a valid ``ModelInferRequest`` (any protobuf parser reads it); the raw contents come after
    the other fields. A retry resends the same bytes object.
    """
    header, buffers = encode_request(request, 1 << 62)
    return header if buffers is None else join_raw(header, REQ_RAW_FIELD, buffers)


# -- server side: responses --------------------------------------------------------------------------------------------


def _build_response_header(response: InferResponse, *, raw: bool) -> tuple[Any, list[Buffer]]:
    where = f"response of model {response.model_name!r}"
    msg = pb.ModelInferResponse(model_name=response.model_name)
    if response.model_version is not None:
        msg.model_version = str(response.model_version)
    if response.id is not None:
        msg.id = response.id
    if response.parameters:
        encode_parameters(response.parameters, msg.parameters, where)
    buffers: list[Buffer] = []
    for tensor in response.outputs:
        in_shm = SHM_REGION in tensor.parameters
        if not in_shm and not tensor.has_data:
            raise EncodeError(f"{where}: tensor {tensor.name!r} has no data; call set_data_from_numpy() first")
        entry = msg.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor._shape)
        if tensor.parameters:
            _tensor_parameters(tensor, entry, response.model_name)
        if in_shm:
            if raw:
                buffers.append(b"")  # an empty entry keeps raw contents aligned with the outputs, by index
            continue
        if raw:
            buffers.append(tensor.wire_bytes())
        else:
            _fill_typed_contents(tensor, entry, where)
    return msg, buffers


def encode_infer_response(response: InferResponse, *, raw: bool = True) -> Any:
    """Server side: build a ``ModelInferResponse`` message (raw contents by default; typed when ``raw=False``)."""
    msg, buffers = _build_response_header(response, raw=raw)
    for buf in buffers:
        msg.raw_output_contents.append(buf if isinstance(buf, bytes) else bytes(buf))
    return msg


def serialize_infer_response(response: InferResponse) -> bytes:
    """Server side: the wire bytes of a ``ModelInferResponse`` with raw contents (one copy per tensor)."""
    msg, buffers = _build_response_header(response, raw=True)
    return join_raw(msg.SerializeToString(), RESP_RAW_FIELD, buffers)
