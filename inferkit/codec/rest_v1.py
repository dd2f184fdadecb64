"""KServe v1 (TensorFlow-Serving style) bodies, and conversion between v1 and v2.

Owns: ``{"instances": [...]}`` / ``{"inputs": ...}`` request bodies, ``{"predictions": [...]}`` replies,
explain replies (any JSON), and the documented v1 <-> v2 mapping.
Must not import: requests, urllib3, aiohttp, grpc, protobuf.

The mapping (also in docs/protocols.md):

* v1 -> v2 request: ``instances`` (a list, one item per row) become ONE input tensor named ``input_name``
  (default ``"input-0"``) whose shape is ``[len(instances), ...]`` and whose datatype is inferred from the values
  (bool -> BOOL, int -> INT64, float -> FP64, str/bytes -> BYTES). If every instance is a dict, each key becomes
  its own input (column-wise), rows stacked along axis 0.
* v2 -> v1 request: one input -> ``{"instances": tensor.tolist()}``; several inputs with the same first
  dimension -> ``{"instances": [{name: row, ...}, ...]}``.
* v2 -> v1 response: one output -> ``{"predictions": output.tolist()}``; several outputs with the same first
  dimension -> ``{"predictions": [{name: row, ...}, ...]}``. BYTES become str (UTF-8).
* v1 -> v2 response: ``predictions`` become one output tensor named ``output_name`` (default ``"output-0"``),
  inferred like the request; dict rows become one output per key.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from inferkit.codec import _json
from inferkit.codec.datatypes import dtype_to_datatype
from inferkit.codec.tensors import InferInput, InferOutput, InferRequest, InferResponse
from inferkit.errors import DecodeError, EncodeError

__all__ = [
    "encode_predict_request",
    "decode_predict_response",
    "decode_explain_response",
    "decode_predict_request",
    "encode_predict_response",
    "v1_instances_to_v2_request",
    "v2_request_to_v1_body",
    "v2_response_to_v1_body",
    "v1_body_to_v2_response",
]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("O", "S"):
            return [_jsonable(v) for v in value.tolist()] if value.ndim else _jsonable(value.item())
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def encode_predict_request(
    instances: Any = None, *, inputs: Any = None, extra: Mapping[str, Any] | None = None, model_name: str = ""
) -> bytes:
    """Build a v1 ``:predict`` / ``:explain`` body from ``instances`` (row-wise) or ``inputs`` (columnar)."""
    if (instances is None) == (inputs is None):
        raise EncodeError(f"model {model_name!r}: give exactly one of instances or inputs for a v1 request")
    body: dict[str, Any] = dict(extra or {})
    if instances is not None:
        if isinstance(instances, np.ndarray) and instances.ndim == 0:
            raise EncodeError(f"model {model_name!r}: v1 instances must be a list or an array with a batch axis")
        body["instances"] = _jsonable(instances)
    else:
        body["inputs"] = _jsonable(inputs)
    return _json.dumps(body)


def decode_predict_response(body: bytes | bytearray | memoryview, *, model_name: str = "") -> dict[str, Any]:
    """Parse a v1 predict reply; it must be an object with ``predictions``."""
    parsed = _json.loads(body, what=f"v1 predict response of model {model_name!r}")
    if not isinstance(parsed, dict) or ("predictions" not in parsed and "outputs" not in parsed):
        raise DecodeError(f"v1 predict response of model {model_name!r} has no 'predictions'")
    return parsed


def decode_explain_response(body: bytes | bytearray | memoryview, *, model_name: str = "") -> Any:
    """Parse a v1 explain reply (any JSON value)."""
    return _json.loads(body, what=f"v1 explain response of model {model_name!r}")


def decode_predict_request(body: bytes | memoryview, *, model_name: str) -> dict[str, Any]:
    """Server side: parse a v1 request body; it must have ``instances`` (a list) or ``inputs``."""
    parsed = _json.loads(body, what=f"v1 request for model {model_name!r}")
    if not isinstance(parsed, dict):
        raise DecodeError(f"v1 request for model {model_name!r} must be a JSON object")
    if "instances" in parsed:
        if not isinstance(parsed["instances"], list):
            raise DecodeError(f"v1 request for model {model_name!r}: 'instances' must be a list")
    elif "inputs" not in parsed:
        raise DecodeError(f"v1 request for model {model_name!r} needs 'instances' or 'inputs'")
    return parsed


def encode_predict_response(predictions: Any) -> bytes:
    """Server side: ``{"predictions": ...}``."""
    return _json.dumps({"predictions": _jsonable(predictions)})


def _column_to_tensor(name: str, values: Any, cls: type[InferInput] | type[InferOutput], what: str) -> Any:
    try:
        arr = np.asarray(values)
    except ValueError as exc:
        raise EncodeError(f"{what}: {name!r} is not a regular (rectangular) array: {exc}") from exc
    if arr.dtype == object and any(isinstance(v, (list, tuple)) for v in arr.reshape(-1)):
        # numpy < 1.24 makes an object array of rows of different lengths instead of raising
        raise EncodeError(f"{what}: {name!r} is not a regular (rectangular) array: rows of different lengths")
    if arr.dtype.kind == "U" or arr.dtype.kind == "S" or arr.dtype.kind == "O":
        obj = np.empty(arr.shape, dtype=object)
        obj[...] = arr
        arr = obj
    elif arr.dtype.kind == "i":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
    datatype = dtype_to_datatype(arr.dtype)
    tensor = cls(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr)
    return tensor


def _rows_to_tensors(rows: Sequence[Any], default_name: str, cls: Any, what: str) -> list[Any]:
    if not isinstance(rows, (list, tuple)) or not rows:
        raise EncodeError(f"{what}: expected a non-empty list of rows")
    if all(isinstance(r, dict) for r in rows):
        keys = list(rows[0])
        if any(list(r) != keys for r in rows):
            raise EncodeError(f"{what}: every dict row must have the same keys")
        return [_column_to_tensor(k, [r[k] for r in rows], cls, what) for k in keys]
    return [_column_to_tensor(default_name, rows, cls, what)]


def v1_instances_to_v2_request(
    body: Mapping[str, Any], model_name: str, *, input_name: str = "input-0"
) -> InferRequest:
    """Convert a v1 request body to a v2 InferRequest (see the module docstring for the mapping)."""
    what = f"v1 -> v2 request for model {model_name!r}"
    if "instances" in body:
        inputs = _rows_to_tensors(body["instances"], input_name, InferInput, what)
    elif isinstance(body.get("inputs"), dict):
        inputs = [_column_to_tensor(k, v, InferInput, what) for k, v in body["inputs"].items()]
    elif "inputs" in body:
        inputs = [_column_to_tensor(input_name, body["inputs"], InferInput, what)]
    else:
        raise EncodeError(f"{what}: body needs 'instances' or 'inputs'")
    return InferRequest(model_name, inputs)


def _rows_of(tensors: Sequence[Any], what: str) -> Any:
    if len(tensors) == 1:
        return _jsonable(tensors[0].as_numpy().tolist())
    arrays = {t.name: t.as_numpy() for t in tensors}
    firsts = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if len(firsts) != 1 or None in firsts:
        raise EncodeError(f"{what}: several tensors must share their first dimension to form v1 rows")
    rows = int(next(iter(firsts)))  # type: ignore[arg-type]  # None was excluded above
    return [{name: _jsonable(np.asarray(arr[i]).tolist()) for name, arr in arrays.items()} for i in range(rows)]


def v2_request_to_v1_body(request: InferRequest) -> dict[str, Any]:
    """Convert a v2 InferRequest to a v1 body ``{"instances": ...}``."""
    return {"instances": _rows_of(request.inputs, f"v2 -> v1 request for model {request.model_name!r}")}


def v2_response_to_v1_body(response: InferResponse) -> dict[str, Any]:
    """Convert a v2 InferResponse to a v1 body ``{"predictions": ...}``."""
    return {"predictions": _rows_of(response.outputs, f"v2 -> v1 response of model {response.model_name!r}")}


def v1_body_to_v2_response(body: Mapping[str, Any], model_name: str, *, output_name: str = "output-0") -> InferResponse:
    """Convert a v1 reply ``{"predictions": ...}`` to a v2 InferResponse."""
    what = f"v1 -> v2 response of model {model_name!r}"
    if "predictions" not in body:
        raise DecodeError(f"{what}: no 'predictions'")
    try:
        outputs = _rows_to_tensors(body["predictions"], output_name, InferOutput, what)
    except EncodeError as exc:
        raise DecodeError(exc.message) from exc
    return InferResponse(model_name, outputs)
