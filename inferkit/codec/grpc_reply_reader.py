"""The ModelInfer replies of one model, read fast: a learned layout reads the usual reply without protobuf.

Owns: :class:`ReplyReader`, what a client calls on every infer reply of a model: learning the layout of a "plain"
reply (numeric outputs without parameters, raw contents at its end) and reading later replies of that layout
straight from the bytes, verified; anything else goes to
:func:`~inferkit.codec.grpc_infer_decode.decode_infer_response`.
Must not import: requests, urllib3, aiohttp, grpc.

Why: on a small infer (a few KiB each way) a client's own CPU is what a caller waits for. The first plain reply is
parsed with protobuf in one tight function (:func:`~inferkit.codec.grpc_infer_decode._plain_response`); every later
reply of the same layout (same bytes before the raw contents, same raw sizes) is read without protobuf. With the
one-pass request encoding (:func:`~inferkit.codec.grpc_infer_encode.encode_request`), about half of tritonclient's
client CPU per small infer (measured in ``benchmarks/grpc_bench.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError as _ProtoDecodeError

from inferkit.codec.grpc_infer_decode import _SPLIT_THRESHOLD, _plain_response, decode_infer_response
from inferkit.codec.grpc_wire import RESP_RAW_FIELD, SMALL_VARINTS, InferRequestLike, pb, varint
from inferkit.codec.tensors import InferOutput, InferResponse

__all__ = ["ReplyReader"]

_RESPONSE_FROM_STRING = pb.ModelInferResponse.FromString
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
    tag = SMALL_VARINTS[(RESP_RAW_FIELD << 3) | 2]
    frames = []
    tail = 0
    for tensor in response.outputs:
        size = tensor._decoded.nbytes  # type: ignore[union-attr] # plain: every output is decoded
        prefix = tag + varint(size)
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
