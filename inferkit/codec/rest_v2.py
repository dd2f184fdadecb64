"""Open Inference Protocol v2 over REST: JSON and binary-tensor bodies, in both directions.

Owns: building and parsing infer request and response bodies (client side: encode request, decode response;
server side: decode request, encode response), the ``Inference-Header-Content-Length`` framing, error bodies
(``{"error": ...}`` from Triton/KServe, ``{"detail": ...}`` from MLServer/FastAPI) and capability checks.
Must not import: requests, urllib3, aiohttp, grpc, protobuf. Bytes and dicts in, bytes and dicts out.

Binary framing: the body is a JSON header followed by the raw bytes of each binary tensor in order; the
header's length is sent in the HTTP header ``Inference-Header-Content-Length``. Each binary tensor carries
``"parameters": {"binary_data_size": N}`` and no ``data``.

Shared memory (Triton's ``system_shared_memory`` extension): a tensor whose parameters carry
``shared_memory_region`` / ``shared_memory_byte_size`` (/ ``shared_memory_offset``) has neither ``data`` nor a
binary part, in either direction; a requested output placed in shared memory is not asked for as binary. Decoded,
such a tensor has no data: ``as_numpy()`` raises an error telling the caller to read the region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

from inferkit.codec import _json
from inferkit.codec.datatypes import DATATYPES, check_datatype
from inferkit.codec.tensors import (
    SHM_REGION,
    InferInput,
    InferOutput,
    InferRequest,
    InferRequestedOutput,
    InferResponse,
    InferTensor,
    check_shape,
    shape_size,
    shared_memory_of,
    validate_parameters,
)
from inferkit.errors import DecodeError, EncodeError

__all__ = [
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "BINARY_CONTENT_TYPE",
    "EncodedBody",
    "BodyParts",
    "SPLIT_BODY_MIN",
    "encode_infer_request",
    "decode_infer_response",
    "decode_infer_request",
    "encode_infer_response",
    "decode_error_body",
    "encode_error_body",
    "supports_binary",
    "parse_header_length",
    "shared_memory_outputs",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

Buffer = Union[bytes, bytearray, memoryview]


#: Binary bodies above this size are kept as their parts (JSON header, then each tensor's bytes) instead of being
#: joined: a transport that can write parts sends a large tensor straight from the caller's array, with no copy.
SPLIT_BODY_MIN = 1 << 16


class BodyParts:
    """A request body kept as its parts; ``len()`` is the body's size and :meth:`join` builds it once (cached)."""

    __slots__ = ("parts", "_size", "_joined")

    def __init__(self, parts: Sequence[Buffer]) -> None:
        self.parts: tuple[Buffer, ...] = tuple(parts)
        self._size = sum(memoryview(p).nbytes for p in self.parts)
        self._joined: bytes | None = None

    def __len__(self) -> int:
        return self._size

    def join(self) -> bytes:
        """The whole body as one bytes object (one copy of each part, made once)."""
        if self._joined is None:
            self._joined = b"".join(self.parts)
        return self._joined


@dataclass(frozen=True)
class EncodedBody:
    """A ready-to-send body and the headers that describe it.

    ``payload`` is built once and retries resend the same object: ``bytes``, or for a binary body above
    :data:`SPLIT_BODY_MIN` a :class:`BodyParts` whose large tensors are views of the caller's arrays.
    ``body`` is always the joined bytes (built on first use).
    """

    payload: bytes | BodyParts
    headers: Mapping[str, str] = field(default_factory=dict)
    json_size: int | None = None

    @property
    def body(self) -> bytes:
        return self.payload.join() if isinstance(self.payload, BodyParts) else self.payload

    @property
    def content_length(self) -> int:
        return len(self.payload)


def _encode_tensors(
    tensors: Sequence[InferTensor],
    use_binary: Callable[[InferTensor], bool],
    where: str,
) -> tuple[list[dict[str, Any]], list[Buffer]]:
    entries: list[dict[str, Any]] = []
    buffers: list[Buffer] = []
    for tensor in tensors:
        params = dict(tensor.parameters)
        entry: dict[str, Any] = {"name": tensor.name, "shape": tensor.shape, "datatype": tensor.datatype}
        if SHM_REGION in params:
            # The data is in a registered region: parameters only, no data and no binary part.
            shared_memory_of(params, f"{where}: tensor {tensor.name!r}", EncodeError)
            params.pop("binary_data_size", None)
            entry["parameters"] = params
            entries.append(entry)
            continue
        if not tensor.has_data:
            raise EncodeError(f"{where}: tensor {tensor.name!r} has no data; call set_data_from_numpy() first")
        if use_binary(tensor):
            raw = tensor.wire_bytes()
            params["binary_data_size"] = memoryview(raw).nbytes
            buffers.append(raw)
        else:
            params.pop("binary_data_size", None)
            entry["data"] = tensor.json_data()
        if params:
            entry["parameters"] = params
        entries.append(entry)
    return entries, buffers


def _frame(header: dict[str, Any], buffers: list[Buffer]) -> EncodedBody:
    try:
        header_bytes = _json.dumps(header)
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"request could not be serialized to JSON: {exc}") from exc
    if not buffers:
        return EncodedBody(header_bytes, {"Content-Type": JSON_CONTENT_TYPE}, None)
    parts = BodyParts([header_bytes, *buffers])
    # A small body is joined (one write, one copy of a few bytes); a large one stays in parts, so a transport
    # that writes parts copies no tensor at all, and one that needs a single buffer joins it once.
    payload: bytes | BodyParts = parts if len(parts) >= SPLIT_BODY_MIN else parts.join()
    return EncodedBody(
        payload,
        {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header_bytes))},
        len(header_bytes),
    )


def encode_infer_request(request: InferRequest, *, binary: bool = True) -> EncodedBody:
    """Build the body of ``POST /v2/models/{m}/infer``.

    Args:
        request: The request.
        binary: Whether the server supports the binary tensor extension. When True, inputs whose
            ``binary_data`` is True travel as binary, and outputs are asked for as binary (each requested
            output per its own ``binary_data``; when none are named, all outputs via ``binary_data_output``).
            BF16 inputs are always binary (they have no JSON form).
    """
    where = f"model {request.model_name!r}"
    if not request.inputs:
        raise EncodeError(f"{where}: a request needs at least one input")

    def use_binary(tensor: InferTensor) -> bool:
        return tensor.datatype == "BF16" or (binary and tensor.binary_data)

    entries, buffers = _encode_tensors(request.inputs, use_binary, where)
    header: dict[str, Any] = {}
    if request.request_id is not None:
        header["id"] = request.request_id
    params = dict(request.parameters)
    if request.outputs is not None:
        outputs = []
        for out in request.outputs:
            if not isinstance(out, InferRequestedOutput):
                raise EncodeError(f"{where}: outputs must be InferRequestedOutput objects, got {out!r}")
            out_params = out.wire_parameters()
            if binary and out.binary_data and SHM_REGION not in out_params:
                out_params["binary_data"] = True
            outputs.append({"name": out.name, "parameters": out_params} if out_params else {"name": out.name})
        header["outputs"] = outputs
    elif binary and "binary_data_output" not in params:
        params["binary_data_output"] = True
    if params:
        header["parameters"] = params
    header["inputs"] = entries
    return _frame(header, buffers)


def parse_header_length(value: str | int | None, body_size: int, what: str = "response") -> int | None:
    """Validate an ``Inference-Header-Content-Length`` value against the body size.

    Accepts the header's text (ASCII digits, surrounding whitespace ignored) or an int. Returns None when
    ``value`` is None (the whole body is JSON). Raises DecodeError when the value is not a plain decimal
    integer, is zero or negative, or exceeds ``body_size``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise DecodeError(f"{what}: {HEADER_LENGTH} must be an integer, got {value!r}")
    if isinstance(value, int):
        length = value
    elif isinstance(value, (str, bytes)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        digits = text.strip()
        # int() would also accept "+5", "1_000" and non-ASCII digits; a header value is plain ASCII digits.
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
            raise DecodeError(f"{what}: {HEADER_LENGTH} is not a non-negative integer: {text[:40]!r}")
        length = int(digits)
    else:
        raise DecodeError(f"{what}: {HEADER_LENGTH} must be an integer, got {type(value).__name__}")
    if length <= 0 or length > body_size:
        raise DecodeError(
            f"{what}: {HEADER_LENGTH} says the JSON header is {length} bytes but the body has {body_size}; "
            "the server sent a truncated or inconsistent body"
        )
    return length


def _decode_tensors(
    entries: Any,
    body: memoryview,
    offset: int,
    factory: type[InferTensor],
    where: str,
    key: str,
    shared: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[Any], int]:
    if not isinstance(entries, list):
        raise DecodeError(f"{where}: {key!r} must be a list, got {type(entries).__name__}")
    tensors = []
    size = len(body)
    new = factory._from_wire  # name, shape, datatype and parameters are checked here
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DecodeError(f"{where}: {key}[{index}] is not an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise DecodeError(f"{where}: {key}[{index}] has no name")
        try:
            shape = check_shape(entry.get("shape", ()), name, EncodeError)
            datatype = check_datatype(entry.get("datatype", ""))
        except EncodeError as exc:  # the peer's metadata, so a decode problem
            raise DecodeError(f"{where}: {exc.message}") from exc
        if "shape" not in entry or "datatype" not in entry:
            raise DecodeError(f"{where}: tensor {name!r} lacks its shape or datatype")
        params = validate_parameters(entry.get("parameters"), f"{where}: tensor {name!r}", DecodeError)
        binary_size = params.pop("binary_data_size", None)
        if binary_size is not None:
            if isinstance(binary_size, bool) or not isinstance(binary_size, int) or binary_size < 0:
                raise DecodeError(f"{where}: tensor {name!r} has an invalid binary_data_size {binary_size!r}")
            end = offset + binary_size
            if end > size:
                raise DecodeError(
                    f"{where}: tensor {name!r} declares {binary_size} binary bytes at offset {offset}, "
                    f"but only {size - offset} remain in the body (truncated or inconsistent reply)"
                )
            item = DATATYPES[datatype]
            expected = shape_size(shape) * item if item is not None else None
            if expected is not None and expected != binary_size:
                raise DecodeError(
                    f"{where}: tensor {name!r} has shape {shape} of {datatype} "
                    f"({expected} bytes) but binary_data_size {binary_size}"
                )
            tensors.append(new(name, shape, datatype, params, body[offset:end]))  # zero-copy view of the body
            offset = end
            continue
        if "data" in entry:
            tensors.append(new(name, shape, datatype, params, json=entry["data"], binary=False))
            continue
        if shared_memory_of(params, f"{where}: tensor {name!r}") is None:
            shm = shared.get(name) if shared else None
            if shm is None:
                raise DecodeError(f"{where}: tensor {name!r} has neither data nor binary_data_size")
            # Servers need not echo the shared memory parameters of an output: take them from the request.
            params.update(shm)
        tensors.append(new(name, shape, datatype, params))  # no data: it is in a shared memory region
    return tensors, offset


def _split(body: Buffer, header_length: int | str | None, where: str) -> tuple[dict[str, Any], memoryview, int]:
    view = memoryview(body).cast("B") if not isinstance(body, memoryview) else body.cast("B")
    # Validated here too (not only by parse_header_length): a negative length would silently slice from the end.
    length = parse_header_length(header_length, len(view), where)
    json_part = view if length is None else view[:length]
    try:
        header = _json.loads_tensors(json_part, what=f"{where} JSON")
    except DecodeError as exc:
        if length is None and b"binary_data_size" in bytes(view[:65536]):
            raise DecodeError(
                f"{exc.message}; the body has binary tensors but no {HEADER_LENGTH} was given"
            ) from exc.__cause__
        raise
    if not isinstance(header, dict):
        raise DecodeError(f"{where}: JSON body must be an object, got {type(header).__name__}")
    return header, view, length if length is not None else len(view)


def shared_memory_outputs(
    requested: Sequence[InferRequestedOutput] | None,
) -> dict[str, dict[str, Any]] | None:
    """Requested outputs placed in shared memory: name -> their shared memory parameters (None when there are none)."""
    found = {
        out.name: {k: v for k, v in out.parameters.items() if k.startswith("shared_memory_")}
        for out in requested or ()
        if SHM_REGION in out.parameters
    }
    return found or None


def decode_infer_response(
    body: Buffer,
    header_length: int | str | None = None,
    *,
    model_name: str | None = None,
    requested: Sequence[InferRequestedOutput] | None = None,
) -> InferResponse:
    """Parse an infer response body (JSON, or JSON header + binary outputs).

    Binary outputs become zero-copy views of ``body``. Raises DecodeError for any inconsistency: a header
    length past the body, sizes that do not add up, shapes that disagree with the data, trailing bytes.

    Args:
        body: The reply body.
        header_length: The ``Inference-Header-Content-Length`` value (None: all JSON).
        model_name: For error messages.
        requested: The request's outputs: an output asked for in shared memory that comes back without data or
            parameters takes its shared memory parameters from here (a server may leave them out).
    """
    where = f"response of model {model_name!r}" if model_name else "infer response"
    header, view, offset = _split(body, header_length, where)
    outputs, end = _decode_tensors(
        header.get("outputs", []), view, offset, InferOutput, where, "outputs", shared_memory_outputs(requested)
    )
    if end != len(view):
        raise DecodeError(f"{where}: {len(view) - end} bytes after the last binary output (sizes do not add up)")
    name = header.get("model_name", model_name or "")
    version = header.get("model_version")
    response_id = header.get("id")
    for key, value in (("model_name", name), ("model_version", version), ("id", response_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise DecodeError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return InferResponse(
        model_name=str(name),
        outputs=outputs,
        model_version=str(version) if version is not None else None,
        id=str(response_id) if response_id is not None else None,
        parameters=validate_parameters(header.get("parameters"), where, DecodeError),
    )


def decode_infer_request(
    body: Buffer, header_length: int | str | None = None, *, model_name: str, model_version: str | None = None
) -> InferRequest:
    """Server side: parse an infer request body into an InferRequest with zero-copy binary inputs."""
    where = f"request for model {model_name!r}"
    header, view, offset = _split(body, header_length, where)
    if "inputs" not in header:
        raise DecodeError(f"{where}: no 'inputs'")
    inputs, end = _decode_tensors(header["inputs"], view, offset, InferInput, where, "inputs")
    if end != len(view):
        raise DecodeError(f"{where}: {len(view) - end} bytes after the last binary input (sizes do not add up)")
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise DecodeError(f"{where}: 'outputs' must be a list")
        outputs = []
        for entry in header["outputs"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise DecodeError(f"{where}: every requested output needs a name")
            params = validate_parameters(entry.get("parameters"), where, DecodeError)
            binary_flag = bool(params.pop("binary_data", False))
            class_count = params.pop("classification", 0)
            if isinstance(class_count, bool) or not isinstance(class_count, int) or class_count < 0:
                raise DecodeError(f"{where}: output {entry['name']!r}: classification must be an integer >= 0")
            outputs.append(InferRequestedOutput(entry["name"], binary_flag, class_count, params))
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise DecodeError(f"{where}: 'id' must be a string")
    params = validate_parameters(header.get("parameters"), where, DecodeError)
    try:
        request = InferRequest(model_name, inputs, request_id=request_id, outputs=outputs, model_version=model_version)
    except EncodeError as exc:
        raise DecodeError(exc.message) from exc
    request.parameters = params  # as received: the reserved names (sequence_id...) are the server's to read
    return request


def encode_infer_response(
    response: InferResponse,
    *,
    requested: Sequence[InferRequestedOutput] | None = None,
    binary_output: bool = False,
) -> EncodedBody:
    """Server side: build the infer response body.

    An output is binary when the request asked for it (``requested[i].binary_data`` or request-level
    ``binary_data_output``); BF16 outputs are always binary.
    """
    wanted = {r.name: r.binary_data for r in requested or ()}

    def use_binary(tensor: InferTensor) -> bool:
        return tensor.datatype == "BF16" or wanted.get(tensor.name, binary_output)

    entries, buffers = _encode_tensors(response.outputs, use_binary, f"response of model {response.model_name!r}")
    header: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        header["model_version"] = response.model_version
    if response.id is not None:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = response.parameters
    header["outputs"] = entries
    return _frame(header, buffers)


def decode_error_body(body: Buffer, default: str = "") -> str:
    """Extract the message from an error body: ``{"error": ...}``, ``{"detail": ...}`` or plain text."""
    raw = bytes(body[:65536])
    try:
        parsed = _json.loads(raw, what="error body")
    except DecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return text[:1000] or default
    if isinstance(parsed, dict):
        for key in ("error", "detail", "message"):
            if key in parsed:
                return _message_text(parsed[key])[:2000]
    return (_message_text(parsed) if parsed not in (None, "") else default)[:2000]


def _message_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # FastAPI validation errors: [{"loc": [...], "msg": "...", ...}]
        parts = []
        for item in value:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(x) for x in item.get("loc", ()))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(value)


def encode_error_body(message: str) -> bytes:
    """Server side: the Triton/KServe error body ``{"error": message}``."""
    return _json.dumps({"error": message})


def supports_binary(server_metadata: Mapping[str, Any]) -> bool:
    """Whether the server metadata lists the ``binary_tensor_data`` extension."""
    extensions = server_metadata.get("extensions") or ()
    return isinstance(extensions, (list, tuple)) and "binary_tensor_data" in extensions
