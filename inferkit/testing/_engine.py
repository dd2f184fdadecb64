"""The transport-independent core of the reference server: model registry, readiness, inference and statistics.

Owns: which models exist and are loaded, running model callables in a thread pool (so a slow model never
blocks the event loop), decoupled (generator) models, and per-version statistics. The REST (``_rest``) and
gRPC (``_grpc``) front ends call into it with codec objects. Must not import: aiohttp, grpc, protobuf.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Iterable, Mapping

from inferkit._version import __version__
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.testing._model import Model, ModelError
from inferkit.testing._settings import ServerSettings
from inferkit.testing._shm import ShmRegistry

__all__ = ["Engine", "EXTENSIONS", "SERVER_NAME", "interruptible_sleep"]

SERVER_NAME = "inferkit-reference"
EXTENSIONS = (
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "cuda_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
)

_local = threading.local()
_NEVER = threading.Event()


def interruptible_sleep(seconds: float) -> bool:
    """Sleep in a model callable; returns early (True) when the server is stopping, so stop() never hangs."""
    event: threading.Event = getattr(_local, "stopping", _NEVER)
    return event.wait(seconds)


_END = object()


class Engine:
    """Models, their readiness and their execution."""

    def __init__(self, models: Iterable[Model], max_workers: int = 8) -> None:
        self.models: dict[str, Model] = {}
        for model in models:
            if model.name in self.models:
                raise ValueError(f"two models are named {model.name!r}")
            self.models[model.name] = model
        self.loaded: dict[str, bool] = {name: True for name in self.models}
        self.stopping = threading.Event()
        self.shm = ShmRegistry()
        self.settings = ServerSettings()
        #: The headers (REST) or metadata (gRPC) of the last request received, names in lower case.
        self.last_headers: dict[str, str] = {}
        #: (route, "rest" | "grpc") of each call whose client went away before its reply: a cancelled gRPC call, or
        #: an HTTP connection closed while the request ran.
        self.abandoned: list[tuple[str, str]] = []
        #: Model configurations given by ``load_model(name, config=...)``, in force until a load without one.
        self.config_overrides: dict[str, dict[str, Any]] = {}
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------
    def _init_worker(self) -> None:
        _local.stopping = self.stopping

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._max_workers, thread_name_prefix="inferkit-ref-model", initializer=self._init_worker
            )
        return self._executor

    def shutdown(self) -> None:
        """Wake sleeping models and join the worker threads."""
        self.stopping.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.shm.close_all()

    # -- registry ---------------------------------------------------------------------------------------------
    def known(self, name: str) -> Model:
        """The model called ``name`` (loaded or not); ModelError(404) when there is none."""
        model = self.models.get(name)
        if model is None:
            raise ModelError(404, f"Request for unknown model: '{name}' is not found")
        return model

    def get(self, name: str, version: str | None = None) -> tuple[Model, str]:
        """A loaded model and the version a request addresses; ModelError(404) otherwise."""
        model = self.known(name)
        if not self.loaded.get(name, False):
            raise ModelError(404, f"Request for unknown model: '{name}' has no available versions (unloaded)")
        return model, model.resolve_version(version)

    def is_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model (and version) is loaded; ModelError(404) for an unknown model or version."""
        model = self.known(name)
        model.resolve_version(version)
        return self.loaded.get(name, False)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        index: list[dict[str, Any]] = []
        for name, model in self.models.items():
            if self.loaded[name]:
                index.extend({"name": name, "version": v, "state": "READY"} for v in model.versions)
            elif not ready_only:  # as Triton after an unload: every version listed, with the reason
                index.extend(
                    {"name": name, "version": v, "state": "UNAVAILABLE", "reason": "unloaded"} for v in model.versions
                )
        return index

    def load(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Load ``name``; ``parameters`` may hold ``config`` (JSON text) and ``file:<version>/<name>`` overrides."""
        parameters = parameters or {}
        config = parameters.get("config")
        files = [key for key in parameters if key.startswith("file:")]
        if name not in self.models:  # Triton 2.51 answers 500 (INTERNAL) for a model not in the repository
            if files and config is not None:
                raise ModelError(501, f"failed to load '{name}': the reference server runs only the models given to it")
            raise ModelError(500, f"failed to load '{name}', failed to poll from model repository")
        if files and config is None:
            raise ModelError(400, f"failed to load '{name}', failed to poll from model repository: config is required")
        if config is None:
            self.config_overrides.pop(name, None)
        else:
            try:
                given = json.loads(config)
            except (TypeError, ValueError) as exc:
                raise ModelError(400, f"failed to load '{name}': the config parameter is not JSON: {exc}") from None
            if not isinstance(given, dict):
                raise ModelError(400, f"failed to load '{name}': the config parameter must be a JSON object")
            self.config_overrides[name] = given
        self.loaded[name] = True

    def model_config(self, model: Model) -> dict[str, Any]:
        """``model``'s configuration, with the one given at its last load over it (as Triton's auto-complete)."""
        return {**model.model_config(), **self.config_overrides.get(model.name, {})}

    def unload(self, name: str) -> None:
        if name not in self.models:  # Triton 2.51: unloading an unknown model succeeds (nothing to do)
            return
        self.loaded[name] = False

    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        if name in (None, ""):
            stats = [s for n, m in self.models.items() if self.loaded[n] for s in m.statistics()]
        else:
            try:
                model, _ = self.get(name)
                stats = model.statistics(version)
            except ModelError as exc:  # as Triton 2.51: 400 (INVALID_ARGUMENT), not 404
                raise ModelError(400, f"requested model '{name}' is not available") from exc
        return {"model_stats": stats}

    def reset_statistics(self) -> None:
        for model in self.models.values():
            model.reset_statistics()

    # -- inference --------------------------------------------------------------------------------------------
    async def infer(
        self, request: InferRequest, *, lenient_datatypes: bool = False, allow_decoupled: bool = False
    ) -> InferResponse:
        """Run one request to completion; ModelError for any failure (4xx: the request; 500: the model)."""
        model, version = self.get(request.model_name, request.model_version)
        if model.decoupled and not allow_decoupled:
            raise ModelError(
                400,
                f"model '{model.name}' is decoupled (it may send any number of responses per request); "
                "use the streaming RPC ModelStreamInfer",
            )
        t0 = time.perf_counter_ns()
        try:
            self.shm.resolve_inputs(request)
            arrays = model.check_request(request, lenient_datatypes=lenient_datatypes)
        except ModelError:
            model.record(version, False, 0, {"compute_input": time.perf_counter_ns() - t0})
            raise
        t1 = time.perf_counter_ns()
        params = dict(request.parameters)
        loop = asyncio.get_running_loop()
        queued = time.perf_counter_ns()
        started: list[int] = []

        def run() -> Any:
            started.append(time.perf_counter_ns())
            return model.fn(arrays, params)

        try:
            result = await loop.run_in_executor(self.executor, run)
            t2 = time.perf_counter_ns()
            response = model.build_response(result, request, version)
            self.shm.place_outputs(request, response)
        except ModelError:
            model.record(version, False, 0, {"compute_infer": time.perf_counter_ns() - t1})
            raise
        except Exception as exc:
            model.record(version, False, 0, {"compute_infer": time.perf_counter_ns() - t1})
            raise ModelError(500, f"model '{model.name}' failed: {type(exc).__name__}: {exc}") from exc
        t3 = time.perf_counter_ns()
        start = started[0] if started else queued
        model.record(
            version,
            True,
            model.batch_size(arrays),
            {
                "queue": start - queued,
                "compute_input": t1 - t0,
                "compute_infer": t2 - start,
                "compute_output": t3 - t2,
            },
        )
        return response

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """Yield every response of one request (one for an ordinary model, any number for a decoupled one).

        An error before the first response or in the middle raises ModelError after the responses so far.
        """
        model, version = self.get(request.model_name, request.model_version)
        if not model.decoupled:
            yield await self.infer(request)
            return
        t0 = time.perf_counter_ns()
        self.shm.resolve_inputs(request)
        arrays = model.check_request(request)
        params = dict(request.parameters)
        loop = asyncio.get_running_loop()
        executor = self.executor
        count = 0
        try:
            gen = await loop.run_in_executor(executor, model.fn, arrays, params)
            while True:
                item = await loop.run_in_executor(executor, next, gen, _END)
                if item is _END:
                    break
                count += 1
                response = model.build_response(item, request, version)  # type: ignore[arg-type]
                self.shm.place_outputs(request, response)
                yield response
        except ModelError:
            model.record(version, False, 0, {"compute_infer": time.perf_counter_ns() - t0})
            raise
        except Exception as exc:
            model.record(version, False, 0, {"compute_infer": time.perf_counter_ns() - t0})
            raise ModelError(
                500, f"model '{model.name}' failed after {count} responses: {type(exc).__name__}: {exc}"
            ) from exc
        model.record(version, True, model.batch_size(arrays), {"compute_infer": time.perf_counter_ns() - t0})

    def explain(self, name: str, arrays: Mapping[str, Any], params: dict[str, Any]) -> Any:
        model, _ = self.get(name)
        if model.explainer is None:
            raise ModelError(501, f"model '{name}' has no explainer")
        return model.explainer(dict(arrays), params)
