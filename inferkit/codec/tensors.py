"""Tensors and inference messages, independent of the transport: InferInput, InferOutput, InferRequestedOutput,
InferRequest, InferResponse.

Owns: holding a tensor's name, shape, datatype and parameters, and its data as a numpy array, as wire bytes
(binary, a zero-copy view into a received body) or as JSON-decoded lists; converting between those forms with
validation that names the tensor and the problem.
Must not import: requests, urllib3, aiohttp, grpc, protobuf.

Data ownership: ``set_data_from_numpy`` keeps a reference to the caller's array when it is already in wire
layout (little-endian, C-contiguous), so building a request copies each tensor at most once (into the body).
Do not modify the array between setting it and sending the request. Outputs decoded from a binary body are
read-only views of the received bytes; ``as_numpy()`` returns the same array on every call.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, TypeVar

import numpy as np

from inferkit.codec.datatypes import (
    DATATYPES,
    bf16_bits_to_float32,
    bfloat16_dtype,
    check_datatype,
    datatype_to_dtype,
    decode_utf8,
    deserialize_bytes_tensor,
    serialize_bytes_tensor,
    to_wire_array,
)
from inferkit.codec.request_controls import request_parameters
from inferkit.codec.tensor_specs import (
    _SHM_KEYS,
    SHM_BYTE_SIZE,
    SHM_OFFSET,
    SHM_REGION,
    Buffer,
    InferRequestedOutput,
    ParameterValue,
    _flatten_bytes,
    _numeric_json_to_numpy,
    _shm_parameters,
    check_shape,
    check_shm_registration,
    dtype_to_datatype_or_none,
    shape_size,
    shared_memory_of,
    validate_parameters,
)
from inferkit.errors import DecodeError, EncodeError

__all__ = [
    "ParameterValue",
    "InferTensor",
    "InferInput",
    "InferOutput",
    "InferRequestedOutput",
    "InferRequest",
    "InferResponse",
    "validate_parameters",
    "shape_size",
    "check_shape",
    "SHM_REGION",
    "SHM_BYTE_SIZE",
    "SHM_OFFSET",
    "shared_memory_of",
    "check_shm_registration",
]

_T = TypeVar("_T", bound="InferTensor")
_object_new = object.__new__


class InferTensor:
    """A named tensor with a shape and datatype. Base of InferInput and InferOutput.

    The data is held in one of three forms, converted on demand:
    a numpy array (``set_data_from_numpy``), wire bytes (binary body or gRPC raw contents), or a JSON list.
    """

    __slots__ = ("name", "_shape", "datatype", "parameters", "_array", "_raw", "_json", "_binary", "_decoded")

    def __init__(
        self,
        name: str,
        shape: Sequence[int],
        datatype: str,
        data: Any = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise EncodeError(f"tensor name must be a non-empty string, got {name!r}")
        self.name = name
        self._shape = check_shape(shape, name, EncodeError)
        self.datatype = check_datatype(datatype)
        self.parameters: dict[str, ParameterValue] = validate_parameters(parameters, f"tensor {name!r}")
        self._array: np.ndarray[Any, Any] | None = None
        self._raw: Buffer | None = None
        self._json: Any = None
        self._binary: bool = True
        self._decoded: np.ndarray[Any, Any] | None = None
        if data is not None:
            if isinstance(data, np.ndarray):
                self.set_data_from_numpy(data)
            else:
                self.set_data_from_list(data)

    @classmethod
    def _from_wire(
        cls: type[_T],
        name: str,
        shape: list[int],
        datatype: str,
        parameters: dict[str, ParameterValue],
        raw: Buffer | None = None,
        decoded: np.ndarray[Any, Any] | None = None,
        array: np.ndarray[Any, Any] | None = None,
        json: Any = None,
        binary: bool = True,
    ) -> _T:
        """A tensor the codec has read from a message and checked: how every decoder builds a received tensor.

        Codec-internal. Nothing is copied and nothing re-checked (on every tensor of every reply, that is what
        the public constructor would cost): ``name`` must be non-empty, ``shape`` a list of ints >= 0 (the
        tensor keeps this list), ``datatype`` a canonical name, ``parameters`` a dict of checked values (the
        tensor keeps it), and data sizes must already agree with the shape. No data at all is a tensor in
        shared memory.

        Args:
            raw: The received wire bytes, kept as given (a view of the reply: zero-copy).
            decoded: What ``as_numpy()`` returns, when the decoder made it already (an ``np.frombuffer`` view of
                ``raw``, or the array read from typed contents).
            array: The data as an array in wire layout, for data that arrived in another form than raw bytes
                (gRPC typed contents), so the tensor can be sent on.
            json: JSON-decoded data (REST), converted and checked on first use.
            binary: Whether the data travelled as binary (False for typed contents and JSON).
        """
        tensor = _object_new(cls)
        tensor.name = name
        tensor._shape = shape
        tensor.datatype = datatype
        tensor.parameters = parameters
        tensor._raw = raw
        tensor._decoded = decoded
        tensor._array = array
        tensor._json = json
        tensor._binary = binary
        return tensor

    # -- shape -----------------------------------------------------------------------------------------------
    @property
    def shape(self) -> list[int]:
        """The tensor's shape (a copy; use ``set_shape`` to change it)."""
        return list(self._shape)

    @shape.setter
    def shape(self, value: Sequence[int]) -> None:
        self.set_shape(value)

    def set_shape(self, shape: Sequence[int]) -> None:
        """Set the shape (for example before reusing the input for another batch size)."""
        self._shape = check_shape(shape, self.name, EncodeError)

    @property
    def binary_data(self) -> bool:
        """Whether this tensor may travel as binary when the server supports the binary extension."""
        return self._binary

    @property
    def data(self) -> Any:
        """The data as a flat list (JSON form). Prefer ``as_numpy()``: this converts."""
        if self._json is None:
            arr = self.as_numpy()
            if self.datatype == "BYTES":
                return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in arr.reshape(-1)]
            return arr.reshape(-1).tolist()
        return self._json.tolist() if isinstance(self._json, np.ndarray) else self._json

    # -- setting data ---------------------------------------------------------------------------------------
    def set_data_from_numpy(self, input_tensor: np.ndarray[Any, Any], binary_data: bool = True) -> InferTensor:
        """Set the data from a numpy array.

        Args:
            input_tensor: The array. Its dtype must match the datatype (BYTES: object arrays of bytes/str or
                numpy ``S``/``U``; BF16: float32 or ``ml_dtypes.bfloat16``); its shape must match the tensor's.
            binary_data: Send as binary when the server supports the binary tensor extension (REST). False
                forces JSON. Ignored by gRPC, which is always binary.

        Returns:
            self, so calls can be chained.
        """
        if not isinstance(input_tensor, np.ndarray):
            raise EncodeError(
                f"tensor {self.name!r}: set_data_from_numpy needs a numpy array, got {type(input_tensor).__name__}"
            )
        if list(input_tensor.shape) != self._shape:
            raise EncodeError(
                f"tensor {self.name!r}: array shape {list(input_tensor.shape)} does not match the declared "
                f"shape {self._shape}; call set_shape() first or reshape the array"
            )
        if self.datatype == "BYTES":
            if input_tensor.dtype.kind not in ("O", "S", "U", "T"):
                raise EncodeError(
                    f"tensor {self.name!r}: BYTES needs an object, bytes (S) or str (U) array, got {input_tensor.dtype}"
                )
            array = input_tensor
        else:
            if dtype_to_datatype_or_none(input_tensor.dtype) not in (self.datatype, None) and not (
                self.datatype == "BF16" and input_tensor.dtype.kind == "f"
            ):
                raise EncodeError(
                    f"tensor {self.name!r}: datatype {self.datatype} does not match the array's dtype "
                    f"{input_tensor.dtype} ({dtype_to_datatype_or_none(input_tensor.dtype)}); convert the array or "
                    "declare the matching datatype"
                )
            array = to_wire_array(input_tensor, self.datatype, tensor=self.name)
        self._drop_shared_memory()
        self._array = array
        self._raw = None
        self._json = None
        self._decoded = None
        self._binary = bool(binary_data)
        return self

    def set_data_from_list(self, data: Sequence[Any]) -> InferTensor:
        """Set the data from a (flat or nested, row-major) list; validated against the shape and datatype."""
        self._drop_shared_memory()
        self._decoded = None
        self._array = None
        self._raw = None
        self._json = data
        self._binary = False
        self._decoded = self._json_to_numpy(data, EncodeError)
        return self

    def set_raw_data(self, raw: Buffer, binary_data: bool = True) -> InferTensor:
        """Set already-serialized wire bytes (little-endian elements; BYTES length-prefixed). Validated lazily."""
        self._drop_shared_memory()
        self._array = None
        self._json = None
        self._decoded = None
        self._raw = raw
        self._binary = binary_data
        size = DATATYPES[self.datatype]
        if size is not None and len(memoryview(raw).cast("B")) != shape_size(self._shape) * size:
            raise EncodeError(
                f"tensor {self.name!r}: {len(memoryview(raw).cast('B'))} raw bytes do not match shape "
                f"{self._shape} of {self.datatype} ({shape_size(self._shape) * size} bytes)"
            )
        return self

    @property
    def has_data(self) -> bool:
        """Whether data has been set (in any form)."""
        return self._array is not None or self._raw is not None or self._json is not None

    # -- shared memory ----------------------------------------------------------------------------------------
    def set_shared_memory(self: _T, region_name: str, byte_size: int, offset: int = 0) -> _T:
        """Place the tensor in a registered system shared memory region instead of the request body.

        The data must already be in the region (``SharedMemoryRegion.set``); the request then carries only the
        parameters ``shared_memory_region``, ``shared_memory_byte_size`` and (when not 0) ``shared_memory_offset``.
        Any data set before is dropped; setting data again (``set_data_from_numpy``) undoes this.

        Args:
            region_name: The name the region was registered under with the server.
            byte_size: The tensor's size in bytes in the region.
            offset: Its byte offset in the region.

        Returns:
            self, so calls can be chained.
        """
        params = _shm_parameters(region_name, byte_size, offset, f"tensor {self.name!r}")
        size = DATATYPES[self.datatype]
        if size is not None and params[SHM_BYTE_SIZE] != shape_size(self._shape) * size:
            raise EncodeError(
                f"tensor {self.name!r}: shared memory byte_size {byte_size} does not match shape {self._shape} of "
                f"{self.datatype} ({shape_size(self._shape) * size} bytes)"
            )
        self._drop_shared_memory()
        self.parameters.update(params)
        self._array = None
        self._raw = None
        self._json = None
        self._decoded = None
        self._binary = True
        return self

    def unset_shared_memory(self: _T) -> _T:
        """Take the tensor out of shared memory (set data again before sending it)."""
        self._drop_shared_memory()
        return self

    @property
    def shared_memory(self) -> tuple[str, int, int] | None:
        """``(region_name, byte_size, offset)`` when the tensor is placed in shared memory, else None."""
        if SHM_REGION not in self.parameters:
            return None
        return shared_memory_of(self.parameters, f"tensor {self.name!r}", EncodeError)

    def _drop_shared_memory(self) -> None:
        if SHM_REGION in self.parameters or SHM_BYTE_SIZE in self.parameters:
            for key in _SHM_KEYS:
                self.parameters.pop(key, None)

    # -- wire forms -----------------------------------------------------------------------------------------
    def wire_bytes(self) -> Buffer:
        """The tensor's binary wire form (computed once and cached; a view, not a copy, for numeric arrays)."""
        if self._raw is None:
            if self._array is not None:
                if self.datatype == "BYTES":
                    self._raw = serialize_bytes_tensor(self._array, tensor=self.name)
                else:
                    # numpy arrays export the buffer protocol; the stubs do not say so.
                    self._raw = memoryview(self._array).cast("B") if self._array.size else b""  # type: ignore[arg-type]
            elif self._json is not None:
                self._array = self._decoded if self._decoded is not None else self._json_to_numpy(self._json)
                return self.wire_bytes()
            else:
                raise EncodeError(f"tensor {self.name!r} has no data; call set_data_from_numpy() first")
        return self._raw

    def json_data(self) -> Any:
        """The data in JSON form: a flat numpy array (numeric, bool) or list of str (BYTES).

        Raises EncodeError for BF16 (no JSON form), non-UTF-8 BYTES, and NaN/Inf (not valid JSON).
        """
        if self.datatype == "BF16":
            raise EncodeError(
                f"tensor {self.name!r}: BF16 has no JSON form; the server must support the binary tensor "
                "extension (binary_data=True)"
            )
        if self._json is not None and self._decoded is None:
            return self._json
        arr = self.as_numpy()
        flat = arr.reshape(-1)
        if self.datatype == "BYTES":
            try:
                return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in flat.tolist()]
            except UnicodeDecodeError as exc:
                raise EncodeError(
                    f"tensor {self.name!r}: a BYTES element is not valid UTF-8, which JSON cannot carry; "
                    "send it as binary (binary_data=True) to a server with the binary tensor extension"
                ) from exc
        if flat.dtype.kind == "f" and flat.size and not np.isfinite(flat).all():
            raise EncodeError(
                f"tensor {self.name!r}: contains NaN or Inf, which JSON cannot carry; send it as binary "
                "(binary_data=True)"
            )
        return flat

    # -- reading data -----------------------------------------------------------------------------------------
    def as_numpy(self, dtype: Any = None, *, as_str: bool = False) -> np.ndarray[Any, Any]:
        """The data as a numpy array of the tensor's shape.

        Args:
            dtype: Convert to this dtype (e.g. ``np.float32`` to read BF16 without ml_dtypes).
            as_str: For BYTES, decode elements as UTF-8 ``str`` instead of ``bytes``.

        Binary data is decoded zero-copy (a read-only view of the received body); the array is cached, so
        calling ``as_numpy()`` again returns the same object.
        """
        if self._decoded is None:
            self._decoded = self._decode()
        arr = self._decoded
        if as_str and self.datatype == "BYTES":
            return np.array(decode_utf8(arr.reshape(-1).tolist(), self.name), dtype=object).reshape(arr.shape)
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            if self.datatype == "BF16" and arr.dtype == np.dtype("<u2"):
                return bf16_bits_to_float32(arr).astype(dtype, copy=False)
            return arr.astype(dtype)
        if self.datatype == "BF16" and arr.dtype == np.dtype("<u2"):
            return arr.view(bfloat16_dtype())
        return arr

    def _decode(self) -> np.ndarray[Any, Any]:
        if self._array is not None:
            return self._array
        if self._raw is not None:
            return self._raw_to_numpy(self._raw)
        if self._json is not None:
            return self._json_to_numpy(self._json)
        if SHM_REGION in self.parameters:
            error = DecodeError if isinstance(self, InferOutput) else EncodeError
            region, size, offset = shared_memory_of(self.parameters, f"tensor {self.name!r}", error) or ("", 0, 0)
            raise error(
                f"tensor {self.name!r} is in shared memory region {region!r} ({size} bytes at offset {offset}), "
                f"not in the message; read it from the region: region.as_numpy({self.datatype!r}, {self._shape}, "
                f"offset={offset})"
            )
        raise EncodeError(f"tensor {self.name!r} has no data")

    def _raw_to_numpy(self, raw: Buffer) -> np.ndarray[Any, Any]:
        count = shape_size(self._shape)
        if self.datatype == "BYTES":
            return deserialize_bytes_tensor(raw, count, tensor=self.name).reshape(self._shape)
        size = DATATYPES[self.datatype]
        assert size is not None
        nbytes = memoryview(raw).nbytes
        if nbytes != count * size:
            raise DecodeError(
                f"tensor {self.name!r}: {nbytes} bytes of data do not match shape {self._shape} of "
                f"{self.datatype} ({count * size} bytes)"
            )
        dtype = np.dtype("<u2") if self.datatype == "BF16" else datatype_to_dtype(self.datatype)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(self._shape)

    def _json_to_numpy(
        self, data: Any, error: type[EncodeError] | type[DecodeError] = DecodeError
    ) -> np.ndarray[Any, Any]:
        count = shape_size(self._shape)
        if self.datatype == "BF16":
            raise error(f"tensor {self.name!r}: BF16 has no JSON form; it must be sent as binary")
        text = self.datatype == "BYTES"
        if isinstance(data, np.ndarray) and (text or data.dtype == datatype_to_dtype(self.datatype)):
            flat = data.reshape(-1)
        elif not text and isinstance(data, (list, tuple, np.ndarray)):
            # JSON numbers: a list, or an array of the values (codec/_json.loads_tensors reads long lists as one)
            flat = _numeric_json_to_numpy(data, self.datatype, self.name, error)
        elif not isinstance(data, (list, tuple)):
            raise error(f"tensor {self.name!r}: data must be a list, got {type(data).__name__}")
        else:
            flat = _flatten_bytes(data, self.name, error)
        if flat.size != count:
            raise error(f"tensor {self.name!r}: data has {flat.size} elements but shape {self._shape} needs {count}")
        return flat.reshape(self._shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, shape={self._shape}, datatype={self.datatype!r})"


class InferInput(InferTensor):
    """An input tensor of an inference request.

    Example:
        >>> x = InferInput(name="INPUT0", shape=[1, 4], datatype="FP32")
        >>> x.set_data_from_numpy(np.ones((1, 4), np.float32))
    """

    __slots__ = ()


class InferOutput(InferTensor):
    """An output tensor of an inference response; ``as_numpy()`` gives its data."""

    __slots__ = ()


class InferRequest:
    """An inference request: a model, its input tensors, and optionally the outputs wanted.

    Args:
        model_name: The model to run.
        inputs: The input tensors.
        request_id: An id the server echoes back in the response.
        parameters: The model's own request parameters (bool, int, float or str values); names the protocol
            reserves (``sequence_id``, ``priority``, ``timeout``, ``binary_data_output``...) raise EncodeError.
        outputs: Which outputs to return (all when None).
        model_version: A specific model version (the server's policy when None).
        priority, timeout, sequence_id, sequence_start, sequence_end: Triton's request controls (keyword only;
            ``timeout`` in seconds): see :func:`inferkit.codec.request_controls.request_parameters`.
    """

    __slots__ = ("model_name", "inputs", "request_id", "parameters", "outputs", "model_version")

    def __init__(
        self,
        model_name: str,
        inputs: Sequence[InferInput],
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        outputs: Sequence[InferRequestedOutput] | None = None,
        model_version: str | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        sequence_id: int | str | None = None,
        sequence_start: bool = False,
        sequence_end: bool = False,
    ) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise EncodeError(f"model_name must be a non-empty string, got {model_name!r}")
        if request_id is not None and not isinstance(request_id, str):
            raise EncodeError(f"model {model_name!r}: request_id must be a string, got {request_id!r}")
        self.model_name = model_name
        self.inputs = list(inputs)
        for tensor in self.inputs:
            if not isinstance(tensor, InferTensor):
                raise EncodeError(f"model {model_name!r}: inputs must be InferInput objects, got {tensor!r}")
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names):
            raise EncodeError(f"model {model_name!r}: duplicate input names {names}")
        self.request_id = request_id
        self.parameters = request_parameters(
            f"model {model_name!r} request", parameters, priority, timeout, sequence_id, sequence_start, sequence_end
        )
        self.outputs = list(outputs) if outputs is not None else None
        self.model_version = str(model_version) if model_version not in (None, "") else None

    @property
    def id(self) -> str | None:
        """Alias of ``request_id`` (the field name on the wire)."""
        return self.request_id

    @property
    def is_sequence(self) -> bool:
        """Whether the request carries sequence state (``sequence_id``), so it must not be retried blindly."""
        seq = self.parameters.get("sequence_id")
        return seq not in (None, 0, "")

    def get_input(self, name: str) -> InferInput | None:
        """The input called ``name``, or None."""
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        return None

    def as_numpy(self, name: str) -> np.ndarray[Any, Any]:
        """The named input as a numpy array (server side)."""
        tensor = self.get_input(name)
        if tensor is None:
            raise KeyError(f"request for model {self.model_name!r} has no input {name!r}")
        return tensor.as_numpy()

    def __repr__(self) -> str:
        return f"InferRequest(model_name={self.model_name!r}, inputs={self.inputs!r}, request_id={self.request_id!r})"


class InferResponse:
    """An inference response.

    Attributes:
        model_name, model_version, id: As the server reported them.
        parameters: Response parameters.
        outputs: The output tensors, in the server's order.
    """

    __slots__ = ("model_name", "model_version", "id", "parameters", "outputs")

    def __init__(
        self,
        model_name: str,
        outputs: Sequence[InferOutput],
        model_version: str | None = None,
        id: str | None = None,  # noqa: A002 - the protocol's field name
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self.outputs = list(outputs)
        self.model_version = model_version
        self.id = id
        self.parameters = dict(parameters or {})

    @property
    def request_id(self) -> str | None:
        """Alias of ``id``."""
        return self.id

    def get_output(self, name: str) -> InferOutput | None:
        """The output called ``name``, or None."""
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        return None

    def as_numpy(self, name: str, dtype: Any = None, *, as_str: bool = False) -> np.ndarray[Any, Any]:
        """The named output as a numpy array; KeyError naming the outputs present when it is missing."""
        for tensor in self.outputs:
            if tensor.name == name:
                arr = tensor._decoded
                if arr is not None and dtype is None and not as_str and tensor.datatype != "BF16":
                    return arr  # already decoded (every numeric gRPC output): what tensor.as_numpy() would return
                break
        else:
            tensor = None
        if tensor is None:
            raise KeyError(
                f"model {self.model_name!r} returned no output {name!r}; outputs: {[t.name for t in self.outputs]}"
            )
        return tensor.as_numpy(dtype, as_str=as_str)

    def __repr__(self) -> str:
        return f"InferResponse(model_name={self.model_name!r}, id={self.id!r}, outputs={self.outputs!r})"
