"""Replies of the ``ModelStreamInfer`` stream: ``ModelStreamInferResponse`` both ways, and its errors.

Owns: building a stream reply (server side: a response, an ``error_message``, or both), reading one (client side,
a message or wire bytes; the inner response is read as a ``ModelInfer`` reply, zero-copy), and the typed error of an
``error_message`` (:func:`stream_error`): ``error_for_grpc_code`` with the code guessed from the message text,
INTERNAL (:class:`~inferkit.errors.InternalServerError`) by default; a stream error carries no status code on the
wire.
Must not import: requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from inferkit.codec.grpc_infer_decode import decode_infer_response
from inferkit.codec.grpc_infer_encode import encode_infer_response, serialize_infer_response
from inferkit.codec.grpc_wire import (
    STREAM_ERROR_FIELD,
    STREAM_RESPONSE_FIELD,
    InferRequestLike,
    pb,
    read_varint,
    varint,
)
from inferkit.codec.tensors import InferResponse
from inferkit.errors import DecodeError, InferkitError, error_for_grpc_code

__all__ = ["encode_stream_response", "serialize_stream_response", "stream_error", "decode_stream_response"]


# -- server side -------------------------------------------------------------------------------------------------------


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
        parts.append(varint((STREAM_ERROR_FIELD << 3) | 2) + varint(len(err)) + err)
    if response is not None:
        inner = serialize_infer_response(response)
        parts.append(varint((STREAM_RESPONSE_FIELD << 3) | 2) + varint(len(inner)))
        parts.append(inner)
    return b"".join(parts)


# -- client side -------------------------------------------------------------------------------------------------------


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
        key, pos = read_varint(view, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, pos = read_varint(view, pos, end)
            if pos + length > end:
                raise DecodeError(f"{where}: truncated protobuf message")
            chunk = view[pos : pos + length]
            pos += length
            if number == STREAM_ERROR_FIELD:
                error_text = bytes(chunk).decode("utf-8", "replace")
            elif number == STREAM_RESPONSE_FIELD:
                inner = chunk  # last one wins, as protobuf merges; a server sends one
        elif wire_type == 0:
            _, pos = read_varint(view, pos, end)
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
