"""Models served by the reference server: TensorSpec, Model, and the server-side model logic.

Owns: a model's declaration (name, versions, tensors, config), checking a decoded request against it with
Triton-style messages, running the callable's outputs back into InferOutput tensors, classification top-k,
and the derived Triton model configuration (JSON form) and statistics.
Must not import: aiohttp, grpc, protobuf (the transports in ``_rest`` and ``_grpc`` do).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from inferkit.codec.datatypes import check_datatype, datatype_to_dtype, dtype_to_datatype
from inferkit.codec.tensors import InferOutput, InferRequest, InferRequestedOutput, InferResponse
from inferkit.errors import DecodeError

__all__ = ["TensorSpec", "Model", "ModelError", "Arrays", "ModelFn", "StreamFn"]

Arrays = Mapping[str, np.ndarray]
ModelFn = Callable[[dict[str, np.ndarray], dict[str, Any]], Mapping[str, Any]]
StreamFn = Callable[[dict[str, np.ndarray], dict[str, Any]], Iterator[Mapping[str, Any]]]


class ModelError(Exception):
    """An error the server turns into an error reply: an HTTP status (and the matching gRPC code)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output as its metadata declares it.

    Args:
        name: Tensor name.
        datatype: Protocol datatype, e.g. ``"FP32"`` or ``"BYTES"``.
        shape: Full shape (including any batch dimension); ``-1`` marks a variable dimension.
        optional: An input the request may leave out.
    """

    name: str
    datatype: str
    shape: Sequence[int] = (-1,)
    optional: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "datatype", check_datatype(self.datatype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    def matches(self, shape: Sequence[int]) -> bool:
        """Whether an actual shape fits this spec (same rank; each fixed dimension equal)."""
        return len(shape) == len(self.shape) and all(d == -1 or d == s for d, s in zip(self.shape, shape))

    def metadata(self) -> dict[str, Any]:
        """The model-metadata JSON entry: ``{"name","datatype","shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class _Stats:
    """Triton-style statistics of one model version (cumulative nanoseconds; guarded by the model's lock)."""

    FIELDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")

    def __init__(self) -> None:
        self.durations = {name: [0, 0] for name in self.FIELDS}
        self.last_inference = 0
        self.inference_count = 0
        self.execution_count = 0
        # batch size -> compute_* name -> [count, ns]: Triton's batch_stats (one entry per batch size executed)
        self.batches: dict[int, dict[str, list[int]]] = {}

    def add_batch(self, size: int, timings: Mapping[str, int]) -> None:
        entry = self.batches.setdefault(size, {k: [0, 0] for k in ("compute_input", "compute_infer", "compute_output")})
        for key, value in entry.items():
            value[0] += 1
            value[1] += max(0, timings.get(key, 0))

    def add(self, name: str, ns: int) -> None:
        entry = self.durations[name]
        entry[0] += 1
        entry[1] += max(0, ns)

    def as_json(self, model: str, version: str) -> dict[str, Any]:
        return {
            "name": model,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in self.durations.items()},
            "response_stats": {},
            "batch_stats": [
                {"batch_size": size, **{k: {"count": c, "ns": ns} for k, (c, ns) in entry.items()}}
                for size, entry in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }


@dataclasses.dataclass
class Model:
    """A Python callable served as a model.

    Args:
        name: Model name.
        fn: ``fn(inputs, parameters) -> {output name: array}`` where ``inputs`` maps input names to numpy
            arrays and ``parameters`` holds the request parameters. With ``decoupled=True``, ``fn`` is a
            generator yielding several such dicts (one response each, over the gRPC stream).
        versions: The versions served (all by the same callable); the highest is the default.
        inputs: Input specs; requests are checked against them (names, datatypes, shapes).
        outputs: Output specs; returned arrays are converted to the declared datatype.
        config: Triton model configuration (JSON form). Derived from the specs when None.
        decoupled: ``fn`` yields any number of responses per request (streaming only).
        platform: Reported in the metadata and configuration.
        max_batch_size: 0 for no batching; > 0 means the first dimension of every tensor is the batch.
        labels: Class labels per output name, added to classification results as ``score:index:label``.
        explainer: ``explainer(inputs, parameters) -> JSON value`` for the KServe v1 ``:explain`` route.
    """

    name: str
    fn: Callable[..., Any]
    versions: Sequence[str] = ("1",)
    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()
    config: Mapping[str, Any] | None = None
    decoupled: bool = False
    platform: str = "python"
    max_batch_size: int = 0
    labels: Mapping[str, Sequence[str]] | None = None
    explainer: Callable[[dict[str, np.ndarray], dict[str, Any]], Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"model name must be a non-empty string without '/', got {self.name!r}")
        self.versions = tuple(sorted({str(v) for v in self.versions}, key=_version_key)) or ("1",)
        self.inputs = tuple(self.inputs)
        self.outputs = tuple(self.outputs)
        self._lock = threading.Lock()
        self._stats: dict[str, _Stats] = {v: _Stats() for v in self.versions}

    # -- declaration ------------------------------------------------------------------------------------------
    @property
    def latest_version(self) -> str:
        """The highest version (numeric versions compare as numbers)."""
        return self.versions[-1]

    def resolve_version(self, version: str | None) -> str:
        """The version a request addresses; ModelError(404) when the model has no such version."""
        if version in (None, ""):
            return self.latest_version
        if str(version) not in self.versions:
            raise ModelError(404, f"Request for unknown model: '{self.name}' version {version} is not found")
        return str(version)

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata JSON."""
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [s.metadata() for s in self.inputs],
            "outputs": [s.metadata() for s in self.outputs],
        }

    def model_config(self) -> dict[str, Any]:
        """The Triton model configuration (JSON form): the given ``config``, or one derived from the specs."""
        if self.config is not None:
            given = dict(self.config)
            given.setdefault("name", self.name)
            return given
        batch = self.max_batch_size > 0

        def dims(spec: TensorSpec) -> list[int]:
            return list(spec.shape[1:] if batch else spec.shape)

        def data_type(spec: TensorSpec) -> str:
            return "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"

        # Every key Triton 2.51 prints for a python-backend model (its JSON form of the config), defaults included.
        config: dict[str, Any] = {
            "name": self.name,
            "platform": self.platform,
            "backend": "python",
            "runtime": "",
            "version_policy": {"latest": {"num_versions": len(self.versions)}},
            "max_batch_size": self.max_batch_size,
            "input": [
                {
                    "name": s.name,
                    "data_type": data_type(s),
                    "format": "FORMAT_NONE",
                    "dims": dims(s),
                    "is_shape_tensor": False,
                    "allow_ragged_batch": False,
                    "optional": s.optional,
                    "is_non_linear_format_io": False,
                }
                for s in self.inputs
            ],
            "output": [
                {
                    "name": s.name,
                    "data_type": data_type(s),
                    "dims": dims(s),
                    "label_filename": "",
                    "is_shape_tensor": False,
                    "is_non_linear_format_io": False,
                }
                for s in self.outputs
            ],
            "batch_input": [],
            "batch_output": [],
            "optimization": {
                "priority": "PRIORITY_DEFAULT",
                "input_pinned_memory": {"enable": True},
                "output_pinned_memory": {"enable": True},
                "gather_kernel_buffer_threshold": 0,
                "eager_batching": False,
            },
            "instance_group": [
                {
                    "name": f"{self.name}_0",
                    "kind": "KIND_CPU",
                    "count": 1,
                    "gpus": [],
                    "secondary_devices": [],
                    "profile": [],
                    "passive": False,
                    "host_policy": "",
                }
            ],
            "default_model_filename": "model.py",
            "cc_model_filenames": {},
            "metric_tags": {},
            "parameters": {},
            "model_warmup": [],
        }
        if self.decoupled:  # Triton prints the policy only when it is set
            config["model_transaction_policy"] = {"decoupled": True}
        return config

    # -- request checks ---------------------------------------------------------------------------------------
    def check_request(self, request: InferRequest, *, lenient_datatypes: bool = False) -> dict[str, np.ndarray]:
        """Check a request's inputs against the specs and return them as numpy arrays.

        Args:
            request: The decoded request.
            lenient_datatypes: Convert values to the declared datatype instead of rejecting a mismatch (KServe
                v1 bodies carry no datatypes).

        Raises:
            ModelError: 400 with a Triton-style message naming the model and the tensor.
        """
        arrays: dict[str, np.ndarray] = {}
        specs = {s.name: s for s in self.inputs}
        given = [t.name for t in request.inputs]
        for tensor in request.inputs:
            spec = specs.get(tensor.name)
            if spec is None and self.inputs:
                raise ModelError(
                    400,
                    f"unexpected inference input '{tensor.name}' for model '{self.name}'; "
                    f"the model's inputs are {[s.name for s in self.inputs]}",
                )
            try:
                arr = tensor.as_numpy()
            except Exception as exc:  # a decode problem in the client's data
                # Data that cannot be decoded (a count that does not match the shape) is a 500 on Triton 2.51,
                # like any body its parser rejects; other input problems are 400.
                status = 500 if isinstance(exc, DecodeError) else 400
                raise ModelError(status, f"input '{tensor.name}' for model '{self.name}': {exc}") from exc
            if spec is not None:
                if tensor.datatype != spec.datatype:
                    if not lenient_datatypes:
                        raise ModelError(
                            400,
                            f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
                            f"'{self.name}' expects '{spec.datatype}'",
                        )
                    arr = _convert(arr, spec.datatype, tensor.name, self.name)
                if not spec.matches(arr.shape):
                    raise ModelError(
                        400,
                        f"unexpected shape for input '{tensor.name}' for model '{self.name}'. "
                        f"Expected {_shape_text(spec.shape)}, got {_shape_text(arr.shape)}",
                    )
            arrays[tensor.name] = arr
        missing = [s.name for s in self.inputs if not s.optional and s.name not in arrays]
        if missing:
            required = [s.name for s in self.inputs if not s.optional]
            raise ModelError(
                400,
                f"expected {len(required)} inputs but got {len(given)} inputs for model '{self.name}'. "
                f"Got input(s) {given}, but missing required input(s) {missing}. "
                "Please provide all required input(s).",
            )
        if request.outputs:
            declared = {s.name for s in self.outputs}
            for out in request.outputs:
                if declared and out.name not in declared:
                    raise ModelError(400, f"unexpected inference output '{out.name}' for model '{self.name}'")
        return arrays

    # -- outputs ----------------------------------------------------------------------------------------------
    def build_response(
        self,
        result: Mapping[str, Any],
        request: InferRequest,
        version: str,
    ) -> InferResponse:
        """Turn the callable's result into an InferResponse (requested outputs only, classification applied)."""
        if not isinstance(result, Mapping):
            raise ModelError(
                500, f"model '{self.name}' returned {type(result).__name__}; it must return a dict of arrays"
            )
        specs = {s.name: s for s in self.outputs}
        wanted: Sequence[InferRequestedOutput | None]
        if request.outputs:
            wanted = request.outputs
            names = [o.name for o in request.outputs]
        else:
            wanted = [None] * len(result)
            names = list(result)
        outputs = []
        for name, requested in zip(names, wanted):
            if name not in result:
                raise ModelError(500, f"model '{self.name}' did not return its output '{name}'")
            spec = specs.get(name)
            arr = np.asarray(result[name])
            datatype = spec.datatype if spec is not None else dtype_to_datatype(arr.dtype)
            arr = _convert(arr, datatype, name, self.name, status=500)
            if requested is not None and requested.class_count:
                arr = self._classify(arr, requested.class_count, name)
                datatype = "BYTES"
            tensor = InferOutput(name, list(arr.shape), datatype)
            tensor.set_data_from_numpy(arr)
            outputs.append(tensor)
        return InferResponse(self.name, outputs, model_version=version, id=request.request_id)

    def _classify(self, arr: np.ndarray, k: int, name: str) -> np.ndarray:
        if arr.dtype.kind not in "biuf":
            raise ModelError(400, f"classification of output '{name}' of model '{self.name}' needs a numeric output")
        batched = arr.ndim >= 2
        rows = arr.reshape(arr.shape[0], -1) if batched else arr.reshape(1, -1)
        k = min(k, rows.shape[1])
        labels = (self.labels or {}).get(name)
        out = np.empty((rows.shape[0], k), dtype=object)
        for r, row in enumerate(rows):
            order = np.argsort(-row.astype(np.float64), kind="stable")[:k]
            for j, idx in enumerate(order):
                text = f"{float(row[idx]):f}:{int(idx)}"
                if labels is not None and idx < len(labels):
                    text += f":{labels[idx]}"
                out[r, j] = text.encode()
        return out if batched else out.reshape(k)

    # -- statistics -------------------------------------------------------------------------------------------
    def record(self, version: str, ok: bool, batch: int, timings: Mapping[str, int]) -> None:
        """Add one request to the version's statistics (``timings``: name -> ns)."""
        with self._lock:
            stats = self._stats.setdefault(version, _Stats())
            total = sum(timings.values())
            stats.add("success" if ok else "fail", total)
            if ok:
                for key, ns in timings.items():
                    stats.add(key, ns)
                stats.add_batch(batch, timings)
                stats.inference_count += batch
                stats.execution_count += 1
                stats.last_inference = int(time.time() * 1000)

    def statistics(self, version: str | None = None) -> list[dict[str, Any]]:
        """Triton's ``model_stats`` entries for one version, or for every version."""
        versions = [self.resolve_version(version)] if version not in (None, "") else list(self.versions)
        with self._lock:
            return [self._stats.setdefault(v, _Stats()).as_json(self.name, v) for v in versions]

    def reset_statistics(self) -> None:
        """Clear the statistics of every version."""
        with self._lock:
            self._stats = {v: _Stats() for v in self.versions}

    def batch_size(self, arrays: Mapping[str, np.ndarray]) -> int:
        """The batch size of a request (1 without batching)."""
        if self.max_batch_size > 0:
            for arr in arrays.values():
                if arr.ndim:
                    return int(arr.shape[0])
        return 1


def _convert(arr: np.ndarray, datatype: str, tensor: str, model: str, status: int = 400) -> np.ndarray:
    """``arr`` in the numpy form of ``datatype`` (no copy when it already is)."""
    if datatype == "BYTES":
        if arr.dtype == object:
            return arr
        out = np.empty(arr.size, dtype=object)
        for i, x in enumerate(arr.reshape(-1).tolist()):
            out[i] = x if isinstance(x, bytes) else str(x).encode()
        return out.reshape(arr.shape)
    if datatype == "BF16":
        if arr.dtype.name == "bfloat16" or arr.dtype.kind == "f":
            return arr
    try:
        target = datatype_to_dtype(datatype)
    except Exception as exc:
        raise ModelError(status, f"tensor '{tensor}' of model '{model}': {exc}") from exc
    if arr.dtype == target:
        return arr
    if arr.dtype == object or arr.dtype.kind in "SU":
        raise ModelError(
            status, f"tensor '{tensor}' of model '{model}' holds {arr.dtype} values where {datatype} is declared"
        )
    return arr.astype(target)
