"""KServe ModelServer for the interop tests: add_sub, identity and fail, over v1 REST, v2 REST and v2 gRPC.

Runs inside the kserve venv built by tests/interop/harness.py (``python kserve_server.py --http_port P
--grpc_port Q``), never in the test process: kserve and tritonclient.grpc cannot share a process (both register the
protobuf package ``inference``). It must not import inferkit.

Models:
    add_sub   v2: INPUT0, INPUT1 (INT32 [-1, 16]) -> OUTPUT0 = sum, OUTPUT1 = difference; anything else is 400.
              v1: ``{"instances": [{"INPUT0": [16 ints], "INPUT1": [16 ints]}, ...]}`` -> one dict per instance.
    identity  v2: OUTPUT<x> echoes INPUT<x> (tests use INPUT_<T>), any datatype KServe decodes (not BF16), and
              request parameters named echo_* come back as response parameters. v1: predictions = instances;
              explain: ``{"explanations": instances}``.
    fail      always raises a model error (500 / INTERNAL).

KServe 0.21 hard-codes its listen addresses (uvicorn on 0.0.0.0, gRPC on [::]) with no option to change them. The
interop suite must bind loopback only, so this script rewrites those two addresses to 127.0.0.1 before anything
binds; the harness then checks /proc for any non-loopback listener and refuses to run if one appears.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any, Optional

import numpy as np

LOOPBACK = "127.0.0.1"


def _bind_loopback_only() -> None:
    """Patch the two places where kserve picks its listen address."""
    from grpc import aio
    from kserve.protocol.rest import server as rest_server

    original_rest_init = rest_server.RESTServer.__init__

    def rest_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_rest_init(self, *args, **kwargs)
        self.config.host = LOOPBACK  # the uvicorn.Config that uvicorn binds from when it starts

    rest_server.RESTServer.__init__ = rest_init

    original_server = aio.server

    def loopback_server(*args: Any, **kwargs: Any) -> Any:
        server = original_server(*args, **kwargs)
        add_insecure_port = server.add_insecure_port

        def add_loopback_port(address: str) -> int:
            port = address.rsplit(":", 1)[1]
            return add_insecure_port(f"{LOOPBACK}:{port}")

        server.add_insecure_port = add_loopback_port
        return server

    aio.server = loopback_server


_bind_loopback_only()

import kserve  # noqa: E402
from kserve.errors import InferenceError, InvalidInput  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402


def _respond(
    request: InferRequest, model: str, outputs: list[tuple[str, np.ndarray, str]], echo: bool = False
) -> InferResponse:
    # Only the requested outputs: KServe filters them for REST but not for gRPC, so the model does it for both.
    wanted = {o.name for o in request.request_outputs or []}
    infer_outputs = []
    for name, array, datatype in outputs:
        if wanted and name not in wanted:
            continue
        out = InferOutput(name=name, shape=list(array.shape), datatype=datatype, data=array)
        if request.from_grpc:
            # gRPC: raw contents always (KServe's to_grpc cannot take a numpy array as data).
            out.set_data_from_numpy(array, binary_data=True)
        # REST: the array itself, so KServe picks JSON or binary per request and output (non-UTF-8 BYTES survive).
        infer_outputs.append(out)
    return InferResponse(
        # KServe's response model requires an id; like KServe's own models, make one when the request has none.
        response_id=request.id or str(uuid.uuid4()),
        model_name=model,
        infer_outputs=infer_outputs,
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
        from_grpc=request.from_grpc,
        parameters=_echo(request.parameters) if echo else None,
    )


def _echo(parameters: Any) -> Optional[dict[str, Any]]:
    if not parameters:
        return None
    if not isinstance(parameters, dict):  # gRPC: a protobuf map of InferParameter, kept as such
        found = {k: parameters[k] for k in parameters if k.startswith("echo_")}
        return found or None
    found = {k: v for k, v in parameters.items() if k.startswith("echo_")}
    return found or None


class AddSub(kserve.Model):
    def __init__(self) -> None:
        super().__init__("add_sub")
        self.ready = True

    def _check(self, name: str, array: np.ndarray, datatype: str) -> None:
        if datatype != "INT32" or array.ndim != 2 or array.shape[1] != 16:
            raise InvalidInput(
                f"add_sub: input {name} must be INT32 with shape [-1, 16], got {datatype} {list(array.shape)}"
            )

    async def predict(self, payload: Any, headers: Optional[dict[str, str]] = None, **_: Any) -> Any:
        if isinstance(payload, dict):  # v1
            predictions = []
            for instance in payload.get("instances", []):
                a = np.asarray(instance["INPUT0"], dtype=np.int32)
                b = np.asarray(instance["INPUT1"], dtype=np.int32)
                predictions.append({"OUTPUT0": (a + b).tolist(), "OUTPUT1": (a - b).tolist()})
            return {"predictions": predictions}
        inputs = {i.name: i for i in payload.inputs}
        if set(inputs) != {"INPUT0", "INPUT1"}:
            raise InvalidInput(f"add_sub: expected inputs INPUT0 and INPUT1, got {sorted(inputs)}")
        arrays = {}
        for name, tensor in inputs.items():
            arrays[name] = tensor.as_numpy()
            self._check(name, arrays[name], tensor.datatype)
        a, b = arrays["INPUT0"], arrays["INPUT1"]
        if a.shape != b.shape:
            raise InvalidInput(f"add_sub: INPUT0 {list(a.shape)} and INPUT1 {list(b.shape)} differ in shape")
        return _respond(payload, self.name, [("OUTPUT0", a + b, "INT32"), ("OUTPUT1", a - b, "INT32")])


class Identity(kserve.Model):
    def __init__(self) -> None:
        super().__init__("identity")
        self.ready = True

    async def predict(self, payload: Any, headers: Optional[dict[str, str]] = None, **_: Any) -> Any:
        if isinstance(payload, dict):  # v1
            return {"predictions": payload.get("instances", payload.get("inputs", []))}
        outputs = []
        for tensor in payload.inputs:
            if not tensor.name.startswith("INPUT"):
                raise InvalidInput(f"identity: inputs are named INPUT<suffix>, got {tensor.name}")
            out_name = "OUTPUT" + tensor.name[len("INPUT") :]
            outputs.append((out_name, tensor.as_numpy(), tensor.datatype))
        return _respond(payload, self.name, outputs, echo=True)

    async def explain(self, payload: dict, headers: Optional[dict[str, str]] = None) -> dict:
        return {"explanations": payload.get("instances", [])}


class Fail(kserve.Model):
    def __init__(self) -> None:
        super().__init__("fail")
        self.ready = True

    async def predict(self, payload: Any, headers: Optional[dict[str, str]] = None, **_: Any) -> Any:
        raise InferenceError("interop: this model always fails")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([AddSub(), Identity(), Fail()])
