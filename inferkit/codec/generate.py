"""Triton's generate extension as data: payloads in, answers and stream events out, and the same over tensors.

Owns: the checks and JSON of a generate payload, the reading of a ``/generate`` answer and of each
``/generate_stream`` event into a dict (with the two error forms Triton uses after a 200: an ``{"error": ...}``
object, and an error event inside the stream), and the conversion the gRPC clients and the reference server need:
a payload into an :class:`~inferkit.codec.tensors.InferRequest` typed from the model's metadata (as Triton does for
HTTP: a key naming a model input becomes that tensor, ``parameters`` and every other key become request
parameters), and a response back into the dict the REST route gives (a one-element tensor becomes its Python
scalar or str, others a flat list; plus ``model_name`` and ``model_version``).
Must not import: requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from inferkit import errors
from inferkit.codec import _json
from inferkit.codec.datatypes import datatype_to_dtype
from inferkit.codec.sse import Event
from inferkit.codec.tensors import InferInput, InferRequest, InferResponse

__all__ = [
    "check_payload",
    "encode_payload",
    "decode_answer",
    "decode_event",
    "embedded_error",
    "payload_to_request",
    "response_to_dict",
    "EVENT_STREAM",
    "ONE_RESPONSE_ONLY",
    "is_event_stream",
]

#: What Triton's ``/generate`` answers (HTTP 200, ``{"error": ...}``) when a model sends more than one response.
ONE_RESPONSE_ONLY = (
    "generate expects model to produce exactly 1 response, use generate stream for model that generates "
    "various number of responses"
)

#: The media type of a ``/generate_stream`` answer (Triton adds ``; charset=utf-8``).
EVENT_STREAM = "text/event-stream"

_PARAM_TYPES = (bool, int, float, str)


def is_event_stream(content_type: str | None) -> bool:
    """Whether a Content-Type is ``text/event-stream`` (parameters such as ``charset`` aside)."""
    return content_type is not None and content_type.split(";")[0].strip().lower() == EVENT_STREAM


def check_payload(model_name: Any, payload: Any) -> None:
    """EncodeError, naming the model, for a payload that is not a mapping with string keys."""
    if not isinstance(model_name, str) or not model_name:
        raise errors.EncodeError(f"generate: model_name must be a non-empty string, got {model_name!r}")
    if not isinstance(payload, Mapping):
        raise errors.EncodeError(
            f"generate on model '{model_name}': payload must be a mapping such as "
            f"{{'text_input': 'Hello', 'max_tokens': 16}}, got {type(payload).__name__}",
            model_name=model_name,
        )
    for key in payload:
        if not isinstance(key, str):
            raise errors.EncodeError(
                f"generate on model '{model_name}': payload keys must be str, got {key!r}", model_name=model_name
            )


def encode_payload(model_name: str, payload: Mapping[str, Any]) -> bytes:
    """The JSON body of a generate request (EncodeError naming the model for what JSON cannot hold)."""
    check_payload(model_name, payload)
    try:
        return _json.dumps(dict(payload))
    except (TypeError, ValueError) as exc:
        raise errors.EncodeError(
            f"generate on model '{model_name}': the payload cannot be sent as JSON ({exc}); use str, numbers, bools, "
            "lists and dicts",
            model_name=model_name,
        ) from exc


def embedded_error(model_name: str | None, message: str, where: str = "generate") -> errors.ServerError:
    """The typed error of an error Triton sent after a 200 (an ``{"error": ...}`` answer or stream event)."""
    text = f"{where} on model '{model_name}' failed on the server: {message}"
    if "exactly 1 response" in message or "generate stream" in message or "generate_stream" in message:
        # Triton's answer to /generate on a model that sends several responses: a call the user must change.
        return errors.InvalidInputError(
            text + " (this model streams: call generate_stream)", status_code=200, model_name=model_name
        )
    return errors.InternalServerError(text, status_code=200, model_name=model_name)


def _object(model_name: str | None, data: bytes | bytearray, what: str, where: str) -> dict[str, Any]:
    try:
        value = _json.loads(data, what=what)
    except errors.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise errors.DecodeError(
            f"{what} of model '{model_name}' is not a JSON object: {bytes(data[:80])!r}", model_name=model_name
        )
    # An error object: Triton's {"error": "..."}; a model output named "error" comes with model_name beside it.
    if "error" in value and "model_name" not in value:
        message = value["error"]
        raise embedded_error(model_name, message if isinstance(message, str) else _json.dumps(message).decode(), where)
    return value


def decode_answer(model_name: str | None, body: bytes | bytearray) -> dict[str, Any]:
    """The dict of a ``/generate`` answer (status 200); ServerError for an error object, DecodeError if malformed."""
    return _object(model_name, body, "the generate answer", "generate")


def decode_event(model_name: str | None, event: Event) -> dict[str, Any]:
    """The dict of one ``/generate_stream`` event; ServerError for an error event, DecodeError if malformed."""
    if event.event == "error":
        raise embedded_error(model_name, event.data.decode("utf-8", "replace"), "generate_stream")
    return _object(model_name, event.data, "a generate_stream event", "generate_stream")


# -- the same over tensors (gRPC clients, reference server) --------------------------------------------------------
def payload_to_request(
    model_name: str, model_version: str | None, payload: Mapping[str, Any], metadata: Mapping[str, Any]
) -> InferRequest:
    """The :class:`InferRequest` of a generate payload for a model with this v2 ``metadata`` (JSON form).

    A key that names one of the model's inputs becomes that tensor, typed as the metadata says: a scalar is a
    ``[1]`` tensor, a list a ``[len]`` tensor (nested lists keep their shape), with a leading batch dimension of 1
    when the metadata's shape has one more dimension. ``parameters`` and every other key become request
    parameters (str, number or bool values). EncodeError naming the model and key for anything else.
    """
    check_payload(model_name, payload)
    specs = {spec["name"]: spec for spec in metadata.get("inputs", ())}
    if not specs:
        raise errors.EncodeError(
            f"generate on model '{model_name}': its metadata declares no inputs, so the payload's keys cannot be "
            "turned into typed tensors (KServe and MLServer models often declare none); use infer() with "
            "InferInput tensors for this model",
            model_name=model_name,
        )
    inputs: list[InferInput] = []
    parameters: dict[str, Any] = {}
    for key, value in payload.items():
        spec = specs.get(key)
        if spec is not None:
            inputs.append(_tensor(model_name, key, value, spec))
        elif key == "parameters" and isinstance(value, Mapping):
            for name, param in value.items():
                parameters[name] = _parameter(model_name, name, param)
        else:
            parameters[key] = _parameter(model_name, key, value)
    if not inputs:
        raise errors.EncodeError(
            f"generate on model '{model_name}': the payload names none of the model's inputs {sorted(specs)} "
            f"(its keys: {sorted(payload)}); a key that is not an input is sent as a parameter",
            model_name=model_name,
        )
    return InferRequest(model_name, inputs, parameters=parameters, model_version=model_version or None)


def _parameter(model_name: str, key: str, value: Any) -> Any:
    if not isinstance(value, _PARAM_TYPES):
        raise errors.EncodeError(
            f"generate on model '{model_name}': '{key}' is neither one of the model's inputs nor a parameter value "
            f"(str, number or bool), got {type(value).__name__}",
            model_name=model_name,
        )
    return value


def _tensor(model_name: str, name: str, value: Any, spec: Mapping[str, Any]) -> InferInput:
    datatype = str(spec["datatype"])
    try:
        if datatype == "BYTES":
            arr = np.array(value, dtype=object)
            flat = arr.reshape(-1)
            for i, item in enumerate(flat):
                flat[i] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        else:
            arr = np.array(value, dtype=datatype_to_dtype(datatype))
    except (TypeError, ValueError, OverflowError) as exc:
        raise errors.EncodeError(
            f"generate on model '{model_name}': input '{name}' ({datatype}) cannot hold {value!r}: {exc}",
            model_name=model_name,
        ) from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    declared = spec.get("shape") or ()
    if len(declared) == arr.ndim + 1:
        arr = arr.reshape((1, *arr.shape))  # a batching model: one request is a batch of one
    tensor = InferInput(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr, binary_data=False)
    return tensor


def response_to_dict(response: InferResponse) -> dict[str, Any]:
    """The generate dict of one response: ``model_name``, ``model_version`` and one key per output."""
    out: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version or ""}
    for output in response.outputs:
        arr = output.as_numpy()
        if arr is None:
            continue
        if arr.size == 1:
            out[output.name] = _python(arr.reshape(-1)[0])
        else:
            out[output.name] = [_python(item) for item in arr.reshape(-1)]
    return out


def _python(item: Any) -> Any:
    if isinstance(item, (bytes, np.bytes_)):
        return bytes(item).decode("utf-8", "replace")
    if isinstance(item, np.generic):
        return item.item()
    return item
