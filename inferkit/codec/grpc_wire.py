"""The wire level of the v2 gRPC codec: the protobuf message modules, and the framing done by hand.

Owns: the generated message modules (``pb`` is ``service_pb2``, ``model_config_pb`` is ``model_config_pb2``), the
field numbers of the raw contents and of stream replies (checked against the descriptors), which typed contents
field carries each datatype, varints and length-delimited fields, appending raw contents to a serialized header,
and the zero-copy walk that splits raw contents out of a received message. The other ``grpc_*`` codec modules
build on this one.
Must not import: requests, urllib3, aiohttp, grpc (messages and bytes in, messages and bytes out).

Two forms of every infer message are offered:

* **Messages** (``encode_infer_request`` -> ``ModelInferRequest``): convenient, but protobuf's upb runtime
  copies every ``bytes`` field when it is set, when a message is parsed and again on *each* read of the field.
* **Wire bytes** (``serialize_infer_request`` -> ``bytes``, and ``decode_*`` given ``bytes``): the header
  (everything but the raw contents) is a small protobuf message; the raw contents are appended as
  length-delimited fields of the same message by hand (:func:`join_raw`: protobuf allows fields in any order and
  concatenates repeated fields), so building a request copies each tensor exactly once, into the returned bytes.
  Decoding walks the top-level fields (:func:`split_fields`), parses the header part with protobuf and keeps each
  raw content as a ``memoryview`` of the received bytes, so ``as_numpy()`` is an ``np.frombuffer`` over them: zero
  copies. The gRPC transports use this form with pass-through (de)serializers.
"""

from __future__ import annotations

from typing import Sequence, Union

from google.protobuf.message import Message

from inferkit._proto import model_config_pb2, service_pb2
from inferkit.errors import DecodeError

__all__ = [
    "pb",
    "model_config_pb",
    "Buffer",
    "InferRequestLike",
    "REQ_RAW_FIELD",
    "RESP_RAW_FIELD",
    "STREAM_ERROR_FIELD",
    "STREAM_RESPONSE_FIELD",
    "TYPED_CONTENTS_FIELD",
    "SMALL_VARINTS",
    "varint",
    "string_field",
    "join_raw",
    "read_varint",
    "split_fields",
]


pb = service_pb2
model_config_pb = model_config_pb2

Buffer = Union[bytes, bytearray, memoryview]
InferRequestLike = Union[Message, bytes, bytearray, memoryview]

# Field numbers of the raw contents (from the protocol's .proto; checked against the descriptors below).
REQ_RAW_FIELD = 7  # ModelInferRequest.raw_input_contents
RESP_RAW_FIELD = 6  # ModelInferResponse.raw_output_contents
STREAM_ERROR_FIELD = 1  # ModelStreamInferResponse.error_message
STREAM_RESPONSE_FIELD = 2  # ModelStreamInferResponse.infer_response
assert pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number == REQ_RAW_FIELD
assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == RESP_RAW_FIELD
assert pb.ModelStreamInferResponse.DESCRIPTOR.fields_by_name["infer_response"].number == STREAM_RESPONSE_FIELD

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


# -- framing -----------------------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """The protobuf varint encoding of ``value`` (>= 0)."""
    if value < 0x80:
        return SMALL_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: The varints of 0 to 127 (one byte each), ready-made.
SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def string_field(key: bytes, value: str) -> bytes:
    """A serialized string field: ``key`` (the field's tag byte), the length, the UTF-8 bytes."""
    data = value.encode("utf-8")
    return key + varint(len(data)) + data


def join_raw(header: bytes, field: int, buffers: Sequence[Buffer]) -> bytes:
    """``header`` followed by each buffer as a length-delimited ``field`` (one copy of each buffer)."""
    if not buffers:
        return header
    tag = SMALL_VARINTS[(field << 3) | 2]
    parts: list[Buffer] = [header]
    append = parts.append
    for buf in buffers:
        size = len(buf) if type(buf) is bytes else memoryview(buf).nbytes
        append(tag + varint(size))
        append(buf)
    # The only copy of each tensor: into the returned bytes.
    return b"".join(parts)


# -- walking a received message (zero-copy split of raw contents) -----------------------------------------------------


def read_varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; DecodeError when it is truncated or too long."""
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


def split_fields(
    data: memoryview, raw_field: int, start: int = 0, end: int | None = None
) -> tuple[bytes, list[memoryview]]:
    """Split a serialized message into (all other fields, re-serialized) and the views of ``raw_field``."""
    end = len(data) if end is None else end
    pos = start
    keep: list[memoryview] = []
    raws: list[memoryview] = []
    while pos < end:
        field_start = pos
        key, pos = read_varint(data, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = read_varint(data, pos, end)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = read_varint(data, pos, end)
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
