"""MLServer models for the interop tests (imported by MLServer from this folder; never by the test process).

add_sub:  INPUT0, INPUT1 (INT32 [-1, 16]) -> OUTPUT0 = sum, OUTPUT1 = difference; anything else is a 400.
identity: OUTPUT<x> echoes INPUT<x> (tests use INPUT_<T>) with its datatype (any datatype MLServer decodes),
          and request parameters named echo_* come back as response parameters.
fail:     always answers with a model error.
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse


class InvalidInput(InferenceError):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.status_code = 400


def _datatype(tensor: object) -> str:
    # MLServer's pydantic models keep enum values as plain strings, older releases as the Datatype enum.
    datatype = tensor.datatype
    return str(getattr(datatype, "value", datatype))


def _echo(request: InferenceRequest) -> object:
    """Request parameters named echo_* (MLServer also files the HTTP headers under parameters: never echo those)."""
    if request.parameters is None:
        return None
    echo = {k: v for k, v in request.parameters.model_dump().items() if k.startswith("echo_")}
    return echo or None


def _wanted(request: InferenceRequest, name: str) -> bool:
    # MLServer leaves requested outputs to the model: honour them, as Triton and KServe do.
    return not request.outputs or any(o.name == name for o in request.outputs)


def _respond(model: MLModel, request: InferenceRequest, outputs: dict) -> InferenceResponse:
    return InferenceResponse(
        id=request.id,
        model_name=model.name,
        model_version=model.version,
        outputs=[NumpyCodec.encode_output(name, array) for name, array in outputs.items() if _wanted(request, name)],
    )


class AddSub(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: i for i in payload.inputs}
        if set(inputs) != {"INPUT0", "INPUT1"}:
            raise InvalidInput(f"add_sub: expected inputs INPUT0 and INPUT1, got {sorted(inputs)}")
        arrays = {}
        for name, tensor in inputs.items():
            datatype = _datatype(tensor)
            if datatype != "INT32" or len(tensor.shape) != 2 or tensor.shape[1] != 16:
                raise InvalidInput(
                    f"add_sub: input {name} must be INT32 with shape [-1, 16], got {datatype} {tensor.shape}"
                )
            arrays[name] = NumpyCodec.decode_input(tensor)
        a, b = arrays["INPUT0"], arrays["INPUT1"]
        if a.shape != b.shape:
            raise InvalidInput(f"add_sub: INPUT0 {list(a.shape)} and INPUT1 {list(b.shape)} differ in shape")
        return _respond(self, payload, {"OUTPUT0": (a + b).astype(np.int32), "OUTPUT1": (a - b).astype(np.int32)})


class Identity(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = []
        for tensor in payload.inputs:
            if not tensor.name.startswith("INPUT"):
                raise InvalidInput(f"identity: inputs are named INPUT<suffix>, got {tensor.name}")
            out_name = "OUTPUT" + tensor.name[len("INPUT") :]
            if not _wanted(payload, out_name):
                continue
            # Echo the tensor as received (data, shape, datatype): no numpy round trip that could change it.
            outputs.append(
                {
                    "name": out_name,
                    "shape": tensor.shape,
                    "datatype": tensor.datatype,
                    "data": tensor.data,
                    "parameters": None,
                }
            )
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            parameters=_echo(payload),
            outputs=outputs,
        )


class Fail(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise InferenceError("interop: this model always fails")
