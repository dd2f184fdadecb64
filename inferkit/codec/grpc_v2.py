"""Open Inference Protocol v2 over gRPC: tensors <-> protobuf messages, in both directions.

Owns: building and parsing ``ModelInferRequest`` / ``ModelInferResponse`` / ``ModelStreamInferResponse``
(client side: encode request, decode response; server side: decode request, encode response), inference
parameters, raw contents (``raw_input_contents`` / ``raw_output_contents``, one bytes blob per tensor, the
default) and typed contents (``contents.fp32_contents`` ...), and turning metadata, config, statistics and
repository replies into plain dicts. This is the only codec module that touches protobuf.
Must not import: grpc, requests, urllib3, aiohttp (messages and bytes in, messages and bytes out).

Two forms of every infer message are offered:

* **Messages** (``encode_infer_request`` -> ``ModelInferRequest``): convenient, but protobuf's upb runtime
  copies every ``bytes`` field when it is set, when a message is parsed and again on *each* read of the field.
* **Wire bytes** (``serialize_infer_request`` -> ``bytes``, and ``decode_*`` given ``bytes``): the header
  (everything but the raw contents) is a small protobuf message; the raw contents are appended as
  length-delimited fields of the same message by hand (protobuf allows fields in any order and concatenates
  repeated fields), so building a request copies each tensor exactly once, into the returned bytes. Decoding
  walks the top-level fields, parses the header part with protobuf and keeps each raw content as a
  ``memoryview`` of the received bytes, so ``as_numpy()`` is an ``np.frombuffer`` over them: zero copies.
  The gRPC transports use this form with pass-through (de)serializers.

The small-call hot path (a few KiB each way, where a client's own CPU is what a caller waits for): a request is
encoded in one pass (:func:`encode_request`: the serialized ``inputs`` entries are cached by name, datatype and
shape); a reply goes through the model's :class:`ReplyReader`, which parses the first "plain" reply with protobuf
in one tight function (:func:`_plain_response`) and then reads every later reply of the same layout (same bytes
before the raw contents, same raw sizes) straight from the bytes, verified, without protobuf. About half of
tritonclient's client CPU per small infer (measured in ``benchmarks/grpc_bench.py``).

Validation matches ``rest_v2``: the number of raw contents must equal the number of tensors, each tensor's
byte size must match its shape and datatype, typed contents must hold exactly the shape's element count; any
mismatch is a :class:`~inferkit.errors.DecodeError` (or ``EncodeError`` for local input) naming the tensor.

Shared memory (Triton's ``system_shared_memory`` extension): a tensor whose parameters carry
``shared_memory_region`` / ``shared_memory_byte_size`` (/ ``shared_memory_offset``) has no contents. A request
gets no raw contents entry for such an input (raw contents then map, in order, onto the other inputs); a reply may
carry an empty entry for such an output or none at all, and both are read. Decoded, such a tensor has no data:
``as_numpy()`` raises an error telling the caller to read the region.

Parameters map to ``InferParameter``: bool -> ``bool_param``, int -> ``int64_param`` (``uint64_param`` above
2**63-1), float -> ``double_param``, str -> ``string_param``, and back.

Stream errors: a ``ModelStreamInferResponse`` whose ``error_message`` is set becomes an exception from
:func:`stream_error` (see there): ``error_for_grpc_code`` with the code guessed from the message text, INTERNAL
(:class:`~inferkit.errors.InternalServerError`) by default; a stream error carries no status code on the wire.

Dict shape of metadata/config/statistics replies (``message_to_dict``): ``MessageToDict`` with the .proto
field names (snake_case), every field present including those at their default value (as Triton's REST JSON
does), enums as their names, bytes as base64 text, and 64-bit integers as Python ``int`` (the protobuf JSON
mapping would give strings; REST servers give numbers, and the two clients must return the same shape).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.message import Message

from inferkit._proto import model_config_pb2, service_pb2
from inferkit.codec.datatypes import DATATYPES, datatype_to_dtype
from inferkit.codec.tensors import (
    SHM_REGION,
    InferInput,
    InferOutput,
    InferRequest,
    InferRequestedOutput,
    InferResponse,
    InferTensor,
    ParameterValue,
    check_shm_registration,
    shape_size,
    shared_memory_of,
    validate_parameters,
)
from inferkit.errors import DecodeError, EncodeError, InferkitError, error_for_grpc_code

__all__ = [
    "pb",
    "model_config_pb",
    "encode_parameters",
    "decode_parameters",
    "encode_infer_request",
    "serialize_infer_request",
    "request_parts",
    "encode_request",
    "ReplyReader",
    "join_request_parts",
    "buffers_size",
    "decode_infer_request",
    "encode_infer_response",
    "serialize_infer_response",
    "decode_infer_response",
    "encode_stream_response",
    "serialize_stream_response",
    "decode_stream_response",
    "stream_error",
    "message_to_dict",
    "server_metadata_to_dict",
    "model_metadata_to_dict",
    "model_config_to_dict",
    "model_statistics_to_dict",
    "repository_index_to_list",
    "model_metadata_request",
    "model_ready_request",
    "model_config_request",
    "model_statistics_request",
    "repository_index_request",
    "repository_load_request",
    "repository_unload_request",
    "shm_status_request",
    "shm_register_request",
    "shm_unregister_request",
    "shm_status_to_list",
]

pb = service_pb2
model_config_pb = model_config_pb2
_ModelInferRequest = pb.ModelInferRequest
_RESPONSE_FROM_STRING = pb.ModelInferResponse.FromString

Buffer = Union[bytes, bytearray, memoryview]
InferRequestLike = Union[Message, bytes, bytearray, memoryview]

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

# Field numbers of the raw contents (from the protocol's .proto; checked against the descriptors below).
_REQ_RAW_FIELD = 7  # ModelInferRequest.raw_input_contents
_RESP_RAW_FIELD = 6  # ModelInferResponse.raw_output_contents
_STREAM_ERROR_FIELD = 1  # ModelStreamInferResponse.error_message
_STREAM_RESPONSE_FIELD = 2  # ModelStreamInferResponse.infer_response
assert pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number == _REQ_RAW_FIELD
assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == _RESP_RAW_FIELD
assert pb.ModelStreamInferResponse.DESCRIPTOR.fields_by_name["infer_response"].number == _STREAM_RESPONSE_FIELD

#: Below this size a reply is parsed whole by protobuf (one C call); above it, raw contents are sliced out.
_SPLIT_THRESHOLD = 64 * 1024

#: datatype -> the ``InferTensorContents`` field that carries it as typed contents (FP16/BF16 have none).
TYPED_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# -- parameters -------------------------------------------------------------------------------------------


def encode_parameters(params: Mapping[str, ParameterValue], target: Any, where: str = "request") -> None:
    """Write ``params`` into a protobuf ``map<string, InferParameter>`` field (``target``)."""
    for key, value in params.items():
        entry = target[key]
        if isinstance(value, (bool, np.bool_)):
            entry.bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
            if _INT64_MIN <= value <= _INT64_MAX:
                entry.int64_param = value
            elif _INT64_MAX < value <= _UINT64_MAX:
                entry.uint64_param = value
            else:
                raise EncodeError(f"{where}: parameter {key!r} = {value} does not fit in 64 bits")
        elif isinstance(value, (float, np.floating)):
            entry.double_param = float(value)
        elif isinstance(value, str):
            entry.string_param = value
        else:
            raise EncodeError(f"{where}: parameter {key!r} has a {type(value).__name__} value; use bool/int/float/str")


def decode_parameters(params: Any) -> dict[str, ParameterValue]:
    """Read a protobuf ``map<string, InferParameter>`` into a dict (unset parameters are skipped)."""
    out: dict[str, ParameterValue] = {}
    for key, entry in params.items():
        which = entry.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(entry, which)
    return out


# -- tensors -> messages ----------------------------------------------------------------------------------


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


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _join_raw(header: bytes, field: int, buffers: Sequence[Buffer]) -> bytes:
    if not buffers:
        return header
    tag = _SMALL_VARINTS[(field << 3) | 2]
    parts: list[Buffer] = [header]
    append = parts.append
    for buf in buffers:
        size = len(buf) if type(buf) is bytes else memoryview(buf).nbytes
        append(tag + _varint(size))
        append(buf)
    # The only copy of each tensor: into the returned bytes.
    return b"".join(parts)


def _string_field(key: bytes, value: str) -> bytes:
    data = value.encode("utf-8")
    return key + _varint(len(data)) + data


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
        return _INPUTS_KEY + _varint(len(body)) + body
    key = (tensor.name, tensor.datatype, tuple(tensor._shape))
    entry = _ENTRY_CACHE.get(key)
    if entry is None:
        body = _ModelInferRequest.InferInputTensor(
            name=tensor.name, datatype=tensor.datatype, shape=tensor._shape
        ).SerializeToString()
        entry = _INPUTS_KEY + _varint(len(body)) + body
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
        name_field = _string_field(b"\x0a", model_name)
        if len(_NAME_FIELDS) >= _ENTRY_CACHE_MAX:
            _NAME_FIELDS.clear()
        _NAME_FIELDS[model_name] = name_field
    parts: list[Buffer] = [name_field]
    if request.model_version is not None:
        parts.append(_string_field(b"\x12", request.model_version))
    if request.request_id is not None:
        parts.append(_string_field(b"\x1a", request.request_id))
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
    tag = _SMALL_VARINTS[(_REQ_RAW_FIELD << 3) | 2]
    for raw in buffers:
        size = len(raw) if type(raw) is bytes else memoryview(raw).nbytes
        parts.append(tag + (_SMALL_VARINTS[size] if size < 0x80 else _varint(size)))
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
    return _join_raw(header, _REQ_RAW_FIELD, buffers)


def buffers_size(buffers: Sequence[Buffer]) -> int:
    """Total bytes of raw contents."""
    return sum(len(b) if type(b) is bytes else memoryview(b).nbytes for b in buffers)


def serialize_infer_request(request: InferRequest) -> bytes:
    """The wire bytes of a ``ModelInferRequest`` with raw contents, copying each tensor exactly once.

    Byte-for-byte a valid ``ModelInferRequest`` (any protobuf parser reads it); the raw contents come after
    the other fields. A retry resends the same bytes object.
    """
    header, buffers = encode_request(request, 1 << 62)
    return header if buffers is None else _join_raw(header, _REQ_RAW_FIELD, buffers)


# -- wire walking (zero-copy split of raw contents) ----------------------------------------------------------


def _read_varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated protobuf message (varint runs past the end)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("malformed protobuf message (varint longer than 10 bytes)")


def _split_fields(
    data: memoryview, raw_field: int, start: int = 0, end: int | None = None
) -> tuple[bytes, list[memoryview]]:
    """Split a serialized message into (all other fields, re-serialized) and the views of ``raw_field``."""
    end = len(data) if end is None else end
    pos = start
    keep: list[memoryview] = []
    raws: list[memoryview] = []
    while pos < end:
        field_start = pos
        key, pos = _read_varint(data, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _read_varint(data, pos, end)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _read_varint(data, pos, end)
            if number == raw_field:
                if pos + length > end:
                    raise DecodeError("truncated protobuf message (raw contents run past the end)")
                raws.append(data[pos : pos + length])
                pos += length
                continue
            pos += length
        else:
            raise DecodeError(f"malformed protobuf message (unsupported wire type {wire_type})")
        if pos > end:
            raise DecodeError("truncated protobuf message (a field runs past the end)")
        keep.append(data[field_start:pos])
    return b"".join(keep), raws


def _parse(cls: Any, data: Buffer, what: str) -> Any:
    try:
        return cls.FromString(data if isinstance(data, bytes) else bytes(data))
    except (_ProtoDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"{what}: the reply is not a valid {cls.DESCRIPTOR.name} message ({exc})") from exc


def _message_and_raws(cls: Any, data: InferRequestLike, raw_field: int, what: str) -> tuple[Any, Sequence[Buffer]]:
    raw_name = "raw_input_contents" if raw_field == _REQ_RAW_FIELD else "raw_output_contents"
    if isinstance(data, Message):
        return data, getattr(data, raw_name)
    if len(data) < _SPLIT_THRESHOLD:
        # Small: one C parse; each raw content is read (copied, a few bytes) once, when its tensor is built.
        msg = _parse(cls, data, what)
        return msg, getattr(msg, raw_name)
    view = memoryview(data).cast("B")
    header, raws = _split_fields(view, raw_field)
    return _parse(cls, header, what), raws


# -- messages -> tensors ----------------------------------------------------------------------------------


def _typed_to_numpy(
    name: str, datatype: str, shape: list[int], contents: Any, where: str
) -> np.ndarray[Any, Any] | None:
    field = TYPED_CONTENTS_FIELD.get(datatype)
    count = shape_size(shape)
    if field is None:
        # FP16/BF16 only travel as raw contents; any typed field set is a protocol error.
        if _has_typed_values(contents):
            raise DecodeError(
                f"{where}: tensor {name!r}: {datatype} has no typed contents; it must be sent in raw contents"
            )
        return None
    values = getattr(contents, field)
    n = len(values)
    if n == 0 and count != 0:
        return None
    if n != count:
        raise DecodeError(
            f"{where}: tensor {name!r} has {n} values in contents.{field} but shape {shape} needs {count}"
        )
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    try:
        return np.array(values, dtype=datatype_to_dtype(datatype)).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise DecodeError(
            f"{where}: tensor {name!r}: contents.{field} holds a value out of range for {datatype}"
        ) from exc


def _in_shm(entry: Any, shared: Mapping[str, Any] | None) -> bool:
    return SHM_REGION in entry.parameters or (shared is not None and entry.name in shared)


def _decode_tensors(
    entries: Any,
    raws: Sequence[Buffer],
    factory: type[InferTensor],
    where: str,
    kind: str,
    shared: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Any]:
    if raws and len(raws) != len(entries):
        # Tensors in shared memory may have no raw contents entry: the entries map onto the others, in order.
        flags = [_in_shm(e, shared) for e in entries]
        if len(raws) != flags.count(False):
            raise DecodeError(
                f"{where}: {len(raws)} raw {kind} contents for {len(entries)} {kind}s "
                f"({', '.join(repr(e.name) for e in entries)}); there must be one per {kind} (or per {kind} not "
                "in shared memory), or none"
            )
        remaining = iter(raws)
        raws = [b"" if flag else next(remaining) for flag in flags]
    tensors = []
    eager = _EAGER_DTYPES
    sizes = DATATYPES
    new = factory._from_wire  # the public constructor would re-check what protobuf and the checks here guarantee
    for index, entry in enumerate(entries):
        name = entry.name
        shape = entry.shape[:]  # a list (slicing a repeated field is twice as fast as list())
        datatype = entry.datatype
        if not name or datatype not in sizes or (shape and min(shape) < 0):
            _bad_tensor(name, shape, datatype, index, where, kind)
        parameters = decode_parameters(entry.parameters) if entry.parameters else {}
        has_typed = entry.HasField("contents")
        if (shared is not None or SHM_REGION in parameters) and _in_shared_memory(
            name, parameters, entry, raws[index] if raws else None, has_typed, shared, where, kind
        ):
            tensors.append(new(name, shape, datatype, parameters))  # no data: it is in the region
            continue
        if raws:
            if has_typed and _has_typed_values(entry.contents):
                raise DecodeError(
                    f"{where}: {kind} {name!r} has both typed contents and raw contents; use one or the other"
                )
            raw = raws[index]
            decoded = None
            item = sizes[datatype]
            if item is not None:
                nbytes = len(raw)  # bytes, or a 1-D unsigned-byte memoryview: len is the byte count
                expected = math.prod(shape) * item
                if nbytes != expected:
                    raise DecodeError(
                        f"{where}: {kind} {name!r} has shape {shape} of {datatype} "
                        f"({expected} bytes) but {nbytes} bytes of raw contents"
                    )
                dtype = eager.get(datatype)
                if dtype is not None:
                    # Numeric outputs are wrapped right away (np.frombuffer: no copy); as_numpy() is a lookup.
                    decoded = np.ndarray(shape, dtype, raw)
            # zero-copy: raw is a view of the received bytes (or the message's bytes object)
            tensors.append(new(name, shape, datatype, parameters, raw, decoded))
        else:
            arr = _typed_to_numpy(name, datatype, shape, entry.contents, where) if has_typed else None
            if arr is None:
                if shape_size(shape) != 0:
                    raise DecodeError(f"{where}: {kind} {name!r} has no data (neither raw nor typed contents)")
                arr = np.empty(shape, dtype=object if datatype == "BYTES" else _np_dtype(datatype))
            array = arr if datatype != "BF16" else None
            tensors.append(new(name, shape, datatype, parameters, None, arr, array=array, binary=False))
    return tensors


def _in_shared_memory(
    name: str,
    parameters: dict[str, Any],
    entry: Any,
    raw: Buffer | None,
    has_typed: bool,
    shared: Mapping[str, Mapping[str, Any]] | None,
    where: str,
    kind: str,
) -> bool:
    """Whether the tensor is in shared memory (then it has no data), completing ``parameters`` from ``shared``."""
    has_raw = raw is not None and len(raw) > 0
    has_values = has_typed and _has_typed_values(entry.contents)
    if SHM_REGION not in parameters:
        if has_raw or has_values or shared is None or name not in shared:
            return False
        # A server need not echo an output's shared memory parameters: take them from the request.
        parameters.update(shared[name])
    shared_memory_of(parameters, f"{where}: {kind} {name!r}")
    if has_raw or has_values:
        raise DecodeError(
            f"{where}: {kind} {name!r} is in shared memory region {parameters[SHM_REGION]!r} but also "
            "carries contents; use one or the other"
        )
    return True


#: Datatypes whose raw contents become numpy arrays at decode time (BF16 and BYTES stay lazy).
_EAGER_DTYPES: dict[str, Any] = {dt: datatype_to_dtype(dt) for dt in DATATYPES if dt not in ("BF16", "BYTES")}


def _bad_tensor(name: str, shape: list[int], datatype: str, index: int, where: str, kind: str) -> None:
    if not name:
        raise DecodeError(f"{where}: {kind} {index} has no name")
    if datatype not in DATATYPES:
        raise DecodeError(f"{where}: {kind} {name!r} has an unknown datatype {datatype!r}")
    raise DecodeError(f"{where}: {kind} {name!r} has a negative dimension in shape {shape}")


def _has_typed_values(contents: Any) -> bool:
    return any(len(getattr(contents, name)) for name in _TYPED_FIELDS)


_TYPED_FIELDS = tuple(sorted(set(TYPED_CONTENTS_FIELD.values())))


def _np_dtype(datatype: str) -> Any:
    return np.dtype("<u2") if datatype == "BF16" else datatype_to_dtype(datatype)


def decode_infer_response(
    data: InferRequestLike,
    *,
    model_name: str | None = None,
    requested: Sequence[InferRequestedOutput] | None = None,
) -> InferResponse:
    """Parse a ``ModelInferResponse`` (message or wire bytes) into an :class:`InferResponse`.

    Given bytes, raw outputs are zero-copy views of them. Raises DecodeError for a malformed message, a raw
    contents count that differs from the output count, or sizes that disagree with shapes. ``requested`` (the
    request's outputs) lets an output asked for in shared memory come back without echoed parameters.
    """
    where = f"response of model {model_name!r}" if model_name else "infer response"
    if type(data) is bytes and len(data) < _SPLIT_THRESHOLD:
        # The common small reply: one C parse; each raw content is read once, when its tensor is built.
        try:
            msg = _RESPONSE_FROM_STRING(data)
        except (_ProtoDecodeError, ValueError) as exc:
            raise DecodeError(f"{where}: the reply is not a valid ModelInferResponse message ({exc})") from exc
        if not requested:
            fast = _plain_response(msg, model_name)
            if fast is not None:
                return fast
        raws: Sequence[Buffer] = msg.raw_output_contents
    else:
        msg, raws = _message_and_raws(pb.ModelInferResponse, data, _RESP_RAW_FIELD, where)
    return _response_from_message(msg, raws, model_name, where, _shared_outputs(requested))


def _plain_response(msg: Any, model_name: str | None) -> InferResponse | None:
    """The common small reply in one tight pass, or None for anything that needs :func:`_decode_tensors`.

    "Plain": one raw contents entry per output, each output numeric with no parameters and no typed contents,
    and every size agreeing with its shape. Anything else, including every malformed reply, returns None and is
    decoded (and its error reported) by the general path. On a small infer the time after the reply arrives
    runs on cold caches, where each call and attribute read counts several times over: hence one function.
    """
    entries = msg.outputs
    raws = msg.raw_output_contents
    if len(raws) != len(entries):
        return None
    eager = _EAGER_DTYPES
    new = _new_output  # the public constructor would re-check what was just checked
    outputs = []
    for entry, raw in zip(entries, raws):
        datatype = entry.datatype
        dtype = eager.get(datatype)
        if dtype is None or entry.parameters or entry.HasField("contents"):
            return None
        shape = entry.shape[:]  # a list (slicing a repeated field is twice as fast as list())
        name = entry.name
        if not name or (shape and min(shape) < 0) or len(raw) != math.prod(shape) * dtype.itemsize:
            return None
        # np.ndarray over raw: no copy, a view of the reply's bytes
        outputs.append(new(name, shape, datatype, {}, raw, np.ndarray(shape, dtype, raw)))
    response = _new_response(InferResponse)
    response.outputs = outputs
    response.model_name = msg.model_name or model_name or ""
    response.model_version = msg.model_version or None
    response.id = msg.id or None
    response.parameters = decode_parameters(msg.parameters) if msg.parameters else {}
    return response


_new_output = InferOutput._from_wire
_new_response = InferResponse.__new__


class ReplyReader:
    """Decodes the ``ModelInfer`` replies of one model; what a client calls on every reply of that model.

    The same as :func:`decode_infer_response`, faster for the usual stream of replies that differ only in their
    tensor bytes. From a plain reply (see :func:`_plain_response`) without an ``id``, it learns the layout: the
    bytes before the raw contents, and where each raw contents entry starts. A later reply of the same length that
    starts with the very same bytes and frames its raw contents at the same places parses, by construction, to the
    same message with other tensor bytes: its outputs are read at those offsets (zero-copy) without protobuf. Any
    other reply goes the full way (and may be learned instead). After ``MAX_MISSES`` learned layouts in a row that
    did not serve the next reply (a model whose shapes change call after call), it stops learning until a reply
    matches again, so such a model pays one length check per reply.

    Thread-safe: the layout is an immutable tuple replaced whole.
    """

    __slots__ = ("model_name", "_layout", "_misses")

    MAX_MISSES = 16

    def __init__(self, model_name: str | None) -> None:
        self.model_name = model_name
        self._layout: tuple[Any, ...] | None = None
        self._misses = 0

    def __call__(self, data: InferRequestLike) -> InferResponse:
        layout = self._layout
        if layout is not None and type(data) is bytes and len(data) == layout[0] and data.startswith(layout[1]):
            response = _from_layout(layout, data)
            if response is not None:
                self._misses = 0
                return response
        if type(data) is not bytes or len(data) >= _SPLIT_THRESHOLD:
            return decode_infer_response(data, model_name=self.model_name)
        try:
            msg = _RESPONSE_FROM_STRING(data)
        except (_ProtoDecodeError, ValueError):
            return decode_infer_response(data, model_name=self.model_name)  # raises the DecodeError
        response = _plain_response(msg, self.model_name)
        if response is None:
            return decode_infer_response(data, model_name=self.model_name)
        if self._misses < self.MAX_MISSES and not msg.id:
            learned = _learn_layout(data, response)
            if learned is not None:
                if layout is not None:
                    self._misses += 1
                self._layout = learned
        return response


def _learn_layout(data: bytes, response: InferResponse) -> tuple[Any, ...] | None:
    """The layout of a plain reply (see :class:`ReplyReader`), or None when its raw contents are not all at its end."""
    tag = _SMALL_VARINTS[(_RESP_RAW_FIELD << 3) | 2]
    frames = []
    tail = 0
    for tensor in response.outputs:
        size = tensor._decoded.nbytes  # type: ignore[union-attr] # plain: every output is decoded
        prefix = tag + _varint(size)
        frames.append((prefix, size))
        tail += len(prefix) + size
    start = len(data) - tail
    if start <= 0:
        return None
    header = data[:start]
    try:
        # The bytes before the raw contents must be a whole message of their own, without raw contents: then the
        # reply is exactly those fields followed by the raw contents entries checked below.
        if len(_RESPONSE_FROM_STRING(header).raw_output_contents) != 0:
            return None
    except (_ProtoDecodeError, ValueError):
        return None
    entries = []
    pos = start
    for (prefix, size), tensor in zip(frames, response.outputs):
        if not data.startswith(prefix, pos):
            return None
        entries.append(
            (
                pos,
                prefix,
                pos + len(prefix),
                slice(pos + len(prefix), pos + len(prefix) + size),  # where the tensor's bytes are
                tensor.name,
                tuple(tensor._shape),
                tensor.datatype,
                tensor._decoded.dtype,  # type: ignore[union-attr]
            )
        )
        pos += len(prefix) + size
    return (len(data), header, tuple(entries), response.model_name, response.model_version, response.parameters)


def _from_layout(layout: tuple[Any, ...], data: bytes) -> InferResponse | None:
    view = memoryview(data)
    outputs = []
    new = _new_output
    for pos, prefix, start, span, name, shape, datatype, dtype in layout[2]:
        if not data.startswith(prefix, pos):
            return None  # a raw contents entry of another size: the full parse reports what is wrong
        # np.ndarray over data at start: no copy, a view of the reply's bytes
        outputs.append(new(name, list(shape), datatype, {}, view[span], np.ndarray(shape, dtype, data, start)))
    response = _new_response(InferResponse)
    response.outputs = outputs
    response.model_name = layout[3]
    response.model_version = layout[4]
    response.id = None
    response.parameters = dict(layout[5]) if layout[5] else {}
    return response


def _shared_outputs(requested: Sequence[InferRequestedOutput] | None) -> dict[str, dict[str, Any]] | None:
    if not requested:
        return None
    found = {
        out.name: {k: v for k, v in out.parameters.items() if k.startswith("shared_memory_")}
        for out in requested
        if SHM_REGION in out.parameters
    }
    return found or None


def _response_from_message(
    msg: Any,
    raws: Sequence[Buffer],
    model_name: str | None,
    where: str,
    shared: Mapping[str, Mapping[str, Any]] | None = None,
) -> InferResponse:
    response = InferResponse.__new__(InferResponse)  # every field set below; the constructor would only copy
    response.outputs = _decode_tensors(msg.outputs, raws, InferOutput, where, "output", shared)
    response.model_name = msg.model_name or model_name or ""
    response.model_version = msg.model_version or None
    response.id = msg.id or None
    response.parameters = decode_parameters(msg.parameters) if msg.parameters else {}
    return response


def decode_infer_request(data: InferRequestLike) -> InferRequest:
    """Server side: parse a ``ModelInferRequest`` (message or wire bytes) into an :class:`InferRequest`."""
    if isinstance(data, Message):
        where = f"request for model {data.model_name!r}"  # type: ignore[attr-defined]
    else:
        where = "infer request"
    msg, raws = _message_and_raws(pb.ModelInferRequest, data, _REQ_RAW_FIELD, where)
    where = f"request for model {msg.model_name!r}"
    if not msg.model_name:
        raise DecodeError("infer request: model_name is empty")
    inputs = _decode_tensors(msg.inputs, raws, InferInput, where, "input")
    outputs = None
    if len(msg.outputs):
        outputs = []
        for entry in msg.outputs:
            if not entry.name:
                raise DecodeError(f"{where}: every requested output needs a name")
            params = decode_parameters(entry.parameters)
            params.pop("binary_data", None)
            class_count = params.pop("classification", 0)
            if isinstance(class_count, bool) or not isinstance(class_count, int) or class_count < 0:
                raise DecodeError(f"{where}: output {entry.name!r}: classification must be an integer >= 0")
            outputs.append(InferRequestedOutput(entry.name, True, class_count, params))
    try:
        return InferRequest(
            msg.model_name,
            inputs,
            request_id=msg.id or None,
            parameters=validate_parameters(decode_parameters(msg.parameters), where, DecodeError),
            outputs=outputs,
            model_version=msg.model_version or None,
        )
    except EncodeError as exc:
        raise DecodeError(exc.message) from exc


# -- server side: responses ---------------------------------------------------------------------------------


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
    return _join_raw(msg.SerializeToString(), _RESP_RAW_FIELD, buffers)


def encode_stream_response(response: InferResponse | None = None, *, error: str | None = None, raw: bool = True) -> Any:
    """Server side: a ``ModelStreamInferResponse`` carrying a response or an ``error_message``."""
    msg = pb.ModelStreamInferResponse()
    if error is not None:
        msg.error_message = error
    if response is not None:
        msg.infer_response.CopyFrom(encode_infer_response(response, raw=raw))
    return msg


def serialize_stream_response(response: InferResponse | None = None, *, error: str | None = None) -> bytes:
    """Server side: the wire bytes of a ``ModelStreamInferResponse`` (one copy per tensor)."""
    parts: list[bytes] = []
    if error is not None:
        err = error.encode("utf-8")
        parts.append(_varint((_STREAM_ERROR_FIELD << 3) | 2) + _varint(len(err)) + err)
    if response is not None:
        inner = serialize_infer_response(response)
        parts.append(_varint((_STREAM_RESPONSE_FIELD << 3) | 2) + _varint(len(inner)))
        parts.append(inner)
    return b"".join(parts)


# Message fragments -> gRPC code for stream errors, which carry text only. Checked in order, lower case.
_STREAM_ERROR_CODES: tuple[tuple[str, str], ...] = (
    ("unknown model", "NOT_FOUND"),
    ("not found", "NOT_FOUND"),
    ("unavailable", "UNAVAILABLE"),
    ("invalid argument", "INVALID_ARGUMENT"),
    ("unexpected shape", "INVALID_ARGUMENT"),
    ("unexpected datatype", "INVALID_ARGUMENT"),
    ("unexpected inference input", "INVALID_ARGUMENT"),
    ("unexpected inference output", "INVALID_ARGUMENT"),
)


def stream_error(message: str, *, model_name: str | None = None, request_id: str | None = None) -> InferkitError:
    """The typed error for a stream reply's ``error_message``.

    A stream error has no status code on the wire (the stream itself stays OK), so the code is guessed from
    the text: a leading ``"<CODE>: "`` (e.g. ``"INVALID_ARGUMENT: ..."``) wins, then a few fragments Triton
    uses (``"unknown model"`` -> NotFoundError, ``"unexpected shape"`` -> InvalidInputError, ...); anything else
    is an :class:`~inferkit.errors.InternalServerError` (INTERNAL). The stream stays open after such an error:
    later requests on it still get answers.
    """
    code = "INTERNAL"
    head, sep, _ = message.partition(":")
    if sep and head.strip().isupper() and head.strip().replace("_", "").isalpha():
        code = head.strip()
    else:
        lowered = message.lower()
        for fragment, candidate in _STREAM_ERROR_CODES:
            if fragment in lowered:
                code = candidate
                break
    return error_for_grpc_code(code, message, model_name=model_name, request_id=request_id)


def decode_stream_response(data: InferRequestLike, *, model_name: str | None = None) -> InferResponse:
    """Client side: parse a ``ModelStreamInferResponse`` (message or bytes) into an InferResponse.

    Raises the error from :func:`stream_error` when the reply carries an ``error_message``.
    """
    where = f"stream response of model {model_name!r}" if model_name else "stream response"
    if isinstance(data, Message):
        error = data.error_message  # type: ignore[attr-defined]
        if error:
            inner_id = data.infer_response.id or None  # type: ignore[attr-defined]
            raise stream_error(error, model_name=model_name, request_id=inner_id)
        return decode_infer_response(data.infer_response, model_name=model_name)  # type: ignore[attr-defined]
    view = memoryview(data).cast("B")
    error_text: str | None = None
    inner: memoryview | None = None
    pos, end = 0, len(view)
    while pos < end:
        key, pos = _read_varint(view, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, pos = _read_varint(view, pos, end)
            if pos + length > end:
                raise DecodeError(f"{where}: truncated protobuf message")
            chunk = view[pos : pos + length]
            pos += length
            if number == _STREAM_ERROR_FIELD:
                error_text = bytes(chunk).decode("utf-8", "replace")
            elif number == _STREAM_RESPONSE_FIELD:
                inner = chunk  # last one wins, as protobuf merges; a server sends one
        elif wire_type == 0:
            _, pos = _read_varint(view, pos, end)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise DecodeError(f"{where}: malformed protobuf message (wire type {wire_type})")
    if error_text:
        request_id = None
        if inner is not None:
            try:
                request_id = decode_infer_response(inner, model_name=model_name).id
            except DecodeError:
                pass
        raise stream_error(error_text, model_name=model_name, request_id=request_id)
    if inner is None:
        inner = view[0:0]
    return decode_infer_response(inner, model_name=model_name)


# -- small request messages ------------------------------------------------------------------------------


def model_ready_request(model_name: str, model_version: str | None = None) -> Any:
    """``ModelReadyRequest``."""
    return pb.ModelReadyRequest(name=model_name, version=model_version or "")


def model_metadata_request(model_name: str, model_version: str | None = None) -> Any:
    """``ModelMetadataRequest``."""
    return pb.ModelMetadataRequest(name=model_name, version=model_version or "")


def model_config_request(model_name: str, model_version: str | None = None) -> Any:
    """``ModelConfigRequest``."""
    return pb.ModelConfigRequest(name=model_name, version=model_version or "")


def model_statistics_request(model_name: str | None = None, model_version: str | None = None) -> Any:
    """``ModelStatisticsRequest`` (no name: every model)."""
    return pb.ModelStatisticsRequest(name=model_name or "", version=model_version or "")


def repository_index_request(ready: bool = False) -> Any:
    """``RepositoryIndexRequest``."""
    return pb.RepositoryIndexRequest(ready=ready)


def _repo_params(target: Any, params: Mapping[str, Any] | None, where: str) -> None:
    for key, value in (params or {}).items():
        entry = target[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            entry.int64_param = value
        elif isinstance(value, str):
            entry.string_param = value
        elif isinstance(value, (bytes, bytearray)):
            entry.bytes_param = bytes(value)
        else:
            raise EncodeError(f"{where}: parameter {key!r} must be bool, int, str or bytes, got {type(value).__name__}")


def repository_load_request(model_name: str, parameters: Mapping[str, Any] | None = None) -> Any:
    """``RepositoryModelLoadRequest`` (parameters: bool/int/str/bytes, e.g. ``{"config": json_text}``)."""
    msg = pb.RepositoryModelLoadRequest(model_name=model_name)
    _repo_params(msg.parameters, parameters, f"load of model {model_name!r}")
    return msg


def repository_unload_request(model_name: str, parameters: Mapping[str, Any] | None = None) -> Any:
    """``RepositoryModelUnloadRequest`` (e.g. ``{"unload_dependents": True}``)."""
    msg = pb.RepositoryModelUnloadRequest(model_name=model_name)
    _repo_params(msg.parameters, parameters, f"unload of model {model_name!r}")
    return msg


def shm_status_request(region_name: str | None = None) -> Any:
    """``SystemSharedMemoryStatusRequest`` (no name: every region)."""
    return pb.SystemSharedMemoryStatusRequest(name=region_name or "")


def shm_register_request(name: str, key: str, byte_size: int, offset: int = 0) -> Any:
    """``SystemSharedMemoryRegisterRequest`` (arguments checked: EncodeError naming the region)."""
    name, key, byte_size, offset = check_shm_registration(name, key, byte_size, offset)
    return pb.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=offset, byte_size=byte_size)


def shm_unregister_request(name: str | None = None) -> Any:
    """``SystemSharedMemoryUnregisterRequest`` (no name: every region)."""
    return pb.SystemSharedMemoryUnregisterRequest(name=name or "")


# -- replies -> dicts -------------------------------------------------------------------------------------


def shm_status_to_list(message: Any) -> list[dict[str, Any]]:
    """``SystemSharedMemoryStatusResponse`` -> ``[{"name", "key", "offset", "byte_size"}, ...]`` by name (as REST)."""
    return [
        {"name": r.name or name, "key": r.key, "offset": int(r.offset), "byte_size": int(r.byte_size)}
        for name, r in sorted(message.regions.items())
    ]


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _to_dict_kwargs() -> dict[str, Any]:
    params = json_format.MessageToDict.__code__.co_varnames
    if "always_print_fields_with_no_presence" in params:
        return {"always_print_fields_with_no_presence": True}
    return {"including_default_value_fields": True}  # protobuf < 5


_DICT_KWARGS = _to_dict_kwargs()


def _fix_int64(value: Any, descriptor: Any) -> Any:
    """Turn the JSON mapping's int64-as-string back into ints, guided by the descriptor."""
    if not isinstance(value, dict):
        return value
    for field in descriptor.fields:
        key = field.name
        if key not in value:
            continue
        item = value[key]
        if field.type in _INT64_TYPES:
            if isinstance(item, list):
                value[key] = [int(x) for x in item]
            else:
                value[key] = int(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = field.message_type
            if sub.GetOptions().map_entry:
                value_field = sub.fields_by_name["value"]
                if value_field.type in _INT64_TYPES:
                    value[key] = {k: int(v) for k, v in item.items()}
                elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for v in item.values():
                        _fix_int64(v, value_field.message_type)
            elif isinstance(item, list):
                for v in item:
                    _fix_int64(v, sub)
            else:
                _fix_int64(item, sub)
    return value


def message_to_dict(message: Any) -> dict[str, Any]:
    """A reply message as a plain dict (shape documented in the module docstring)."""
    raw = json_format.MessageToDict(message, preserving_proto_field_name=True, **_DICT_KWARGS)
    return _fix_int64(raw, message.DESCRIPTOR)  # type: ignore[no-any-return]


def server_metadata_to_dict(message: Any) -> dict[str, Any]:
    """``ServerMetadataResponse`` -> ``{"name", "version", "extensions"}`` (as ``GET /v2``)."""
    return {"name": message.name, "version": message.version, "extensions": list(message.extensions)}


def model_metadata_to_dict(message: Any) -> dict[str, Any]:
    """``ModelMetadataResponse`` -> ``{"name", "versions", "platform", "inputs", "outputs"}`` (as REST)."""

    def tensors(entries: Iterable[Any]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in entries]

    return {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        "inputs": tensors(message.inputs),
        "outputs": tensors(message.outputs),
    }


def model_config_to_dict(message: Any) -> dict[str, Any]:
    """``ModelConfigResponse`` (or a ``ModelConfig``) -> the config dict, as ``GET .../config`` returns it."""
    config = message.config if message.DESCRIPTOR.name == "ModelConfigResponse" else message
    return message_to_dict(config)


def model_statistics_to_dict(message: Any) -> dict[str, Any]:
    """``ModelStatisticsResponse`` -> ``{"model_stats": [...]}`` (as ``GET .../stats``)."""
    return message_to_dict(message)


def repository_index_to_list(message: Any) -> list[dict[str, Any]]:
    """``RepositoryIndexResponse`` -> ``[{"name", "version", "state", "reason"}, ...]`` (as REST)."""
    out = []
    for m in message.models:
        entry = {"name": m.name}
        for key in ("version", "state", "reason"):
            value = getattr(m, key)
            if value:
                entry[key] = value
        out.append(entry)
    return out
