"""Tensors from ModelInfer messages: the client reads a response, the server reads a request.

Owns: parsing a ``ModelInferResponse`` (client side) or a ``ModelInferRequest`` (server side), given as a message or
as wire bytes, into an :class:`~inferkit.codec.tensors.InferResponse` / :class:`~inferkit.codec.tensors.InferRequest`,
from raw or typed contents; the one-pass read of a small "plain" reply (:func:`_plain_response`, also what
:class:`~inferkit.codec.grpc_reply_reader.ReplyReader` learns from); validation; tensors in shared memory.
Must not import: requests, urllib3, aiohttp, grpc.

No copies: given wire bytes, each raw content stays a ``memoryview`` of the received bytes (a large message is split
by :func:`~inferkit.codec.grpc_wire.split_fields` and only the rest is parsed by protobuf), and numeric tensors are
wrapped right away by ``np.ndarray`` over those bytes, so ``as_numpy()`` is a lookup. Every tensor is built by
``InferTensor._from_wire``.

Validation matches ``rest_v2``: the number of raw contents must equal the number of tensors, each tensor's
byte size must match its shape and datatype, typed contents must hold exactly the shape's element count; any
mismatch is a :class:`~inferkit.errors.DecodeError` naming the tensor.

Shared memory (Triton's ``system_shared_memory`` extension): a tensor whose parameters carry
``shared_memory_region`` / ``shared_memory_byte_size`` (/ ``shared_memory_offset``) has no contents; a message may
carry an empty raw contents entry for it or none at all, and both are read. A reply may also leave out the
parameters of an output the request asked for in shared memory (``requested``). Decoded, such a tensor has no data:
``as_numpy()`` raises an error telling the caller to read the region.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.message import Message

from inferkit.codec.datatypes import DATATYPES, datatype_to_dtype
from inferkit.codec.grpc_params import decode_parameters
from inferkit.codec.grpc_wire import (
    REQ_RAW_FIELD,
    RESP_RAW_FIELD,
    TYPED_CONTENTS_FIELD,
    Buffer,
    InferRequestLike,
    pb,
    split_fields,
)
from inferkit.codec.tensors import (
    SHM_REGION,
    InferInput,
    InferOutput,
    InferRequest,
    InferRequestedOutput,
    InferResponse,
    InferTensor,
    shape_size,
    shared_memory_of,
    validate_parameters,
)
from inferkit.errors import DecodeError, EncodeError

__all__ = ["decode_infer_response", "decode_infer_request"]

_RESPONSE_FROM_STRING = pb.ModelInferResponse.FromString

#: Below this size a reply is parsed whole by protobuf (one C call); above it, raw contents are sliced out.
_SPLIT_THRESHOLD = 64 * 1024


def _parse(cls: Any, data: Buffer, what: str) -> Any:
    try:
        return cls.FromString(data if isinstance(data, bytes) else bytes(data))
    except (_ProtoDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"{what}: the reply is not a valid {cls.DESCRIPTOR.name} message ({exc})") from exc


def _message_and_raws(cls: Any, data: InferRequestLike, raw_field: int, what: str) -> tuple[Any, Sequence[Buffer]]:
    raw_name = "raw_input_contents" if raw_field == REQ_RAW_FIELD else "raw_output_contents"
    if isinstance(data, Message):
        return data, getattr(data, raw_name)
    if len(data) < _SPLIT_THRESHOLD:
        # Small: one C parse; each raw content is read (copied, a few bytes) once, when its tensor is built.
        msg = _parse(cls, data, what)
        return msg, getattr(msg, raw_name)
    view = memoryview(data).cast("B")
    header, raws = split_fields(view, raw_field)
    return _parse(cls, header, what), raws


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
    target = datatype_to_dtype(datatype)
    try:
        if target.kind in "iu" and n:
            # numpy < 2 wraps an out-of-range int silently when converting straight to the target: check first.
            wide = np.array(values)
            info = np.iinfo(target)
            if wide.min() < info.min or wide.max() > info.max:
                raise OverflowError(f"values outside [{info.min}, {info.max}]")
        return np.array(values, dtype=target).reshape(shape)
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


# -- client side: responses --------------------------------------------------------------------------------------------


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
        msg, raws = _message_and_raws(pb.ModelInferResponse, data, RESP_RAW_FIELD, where)
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


# -- server side: requests ---------------------------------------------------------------------------------------------


def decode_infer_request(data: InferRequestLike) -> InferRequest:
    """Server side: parse a ``ModelInferRequest`` (message or wire bytes) into an :class:`InferRequest`."""
    if isinstance(data, Message):
        where = f"request for model {data.model_name!r}"  # type: ignore[attr-defined]
    else:
        where = "infer request"
    msg, raws = _message_and_raws(pb.ModelInferRequest, data, REQ_RAW_FIELD, where)
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
    params = validate_parameters(decode_parameters(msg.parameters), where, DecodeError)
    try:
        request = InferRequest(
            msg.model_name, inputs, request_id=msg.id or None, outputs=outputs, model_version=msg.model_version or None
        )
    except EncodeError as exc:
        raise DecodeError(exc.message) from exc
    request.parameters = params  # as received: the reserved names (sequence_id...) are the server's to read
    return request
