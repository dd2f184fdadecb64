"""Scaling batch jobs out with Ray Data: a callable class for ``Dataset.map_batches`` that sends each block of
rows to a model server through an inferkit client.

Owns: :class:`ClientSpec` (a picklable recipe for a client: URL and settings, rebuilt on each worker),
:class:`InferencePredictor` (the callable class: one client per Ray actor, ``infer_batched`` on each batch) and
:func:`infer_dataset` (the ``map_batches`` call with sensible options).

Must not import: ray (nothing here needs it: Ray calls the class; ``infer_dataset`` only calls methods of the
dataset it is given), nor the transports at import time (the client is built on the worker, on first use).

How the work is spread: Ray runs ``actors`` copies of :class:`InferencePredictor` (processes, possibly on other
machines); each receives blocks of ``rows_per_batch`` rows as a dict of numpy arrays and splits them into
requests of ``batch_size`` rows, of which ``concurrency`` are in flight at once. So the model server sees at
most ``actors * concurrency`` requests at a time.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from inferkit.config import RESTConfig
from inferkit.errors import DecodeError, EncodeError

__all__ = ["ClientSpec", "InferencePredictor", "infer_dataset"]

ColumnMap = Union[Sequence[str], Mapping[str, str]]


def _config_kwargs(config: RESTConfig) -> dict[str, Any]:
    """A RESTConfig as plain constructor keywords (mappings as dicts), so it pickles with the standard pickle."""
    kwargs = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Mapping):
            value = dict(value)
        kwargs[f.name] = value
    return kwargs


class ClientSpec:
    """How to build a client: picklable, so it can travel to Ray workers (or any other process).

    Args:
        url: ``http(s)://host:port`` for REST, ``grpc://host:port`` or ``grpcs://host:port`` for gRPC.
        transport: ``"rest"``, ``"grpc"``, or ``"auto"`` (decided by the URL's scheme).
        rest_config: The REST client's :class:`~inferkit.RESTConfig` (or a dict of its fields).
        grpc_options: Keyword arguments of :class:`~inferkit.InferenceGRPCClient` (``timeout``, ``retries``,
            ``root_certificates`` as PEM bytes, ``channel_args``...). They must be picklable: pass certificates
            as bytes or paths rather than ``creds``.
    """

    __slots__ = ("url", "transport", "rest_config", "grpc_options")

    def __init__(
        self,
        url: str,
        transport: str = "auto",
        rest_config: Optional[Union[RESTConfig, Mapping[str, Any]]] = None,
        grpc_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"ClientSpec needs the server URL as a string, got {url!r}")
        if transport == "auto":
            transport = "grpc" if url.split("://", 1)[0].lower() in ("grpc", "grpcs") else "rest"
        if transport not in ("rest", "grpc"):
            raise ValueError(f"transport must be 'rest', 'grpc' or 'auto', got {transport!r}")
        if isinstance(rest_config, Mapping):
            rest_config = RESTConfig(**rest_config)
        if rest_config is not None and not isinstance(rest_config, RESTConfig):
            raise ValueError(f"rest_config must be a RESTConfig, got {type(rest_config).__name__}")
        if transport == "grpc" and rest_config is not None:
            raise ValueError("rest_config applies to REST clients; pass grpc_options for a gRPC URL")
        if transport == "rest" and grpc_options:
            raise ValueError("grpc_options apply to gRPC clients; pass rest_config for a REST URL")
        self.url = url
        self.transport = transport
        self.rest_config = rest_config
        self.grpc_options = dict(grpc_options or {})

    def build(self) -> Any:
        """A new client (new connections) for this spec."""
        if self.transport == "grpc":
            from inferkit.grpc_client import InferenceGRPCClient  # noqa: PLC0415 - the grpc extra, on the worker

            return InferenceGRPCClient(self.url, **self.grpc_options)
        from inferkit.rest_client import InferenceRESTClient  # noqa: PLC0415 - built on the worker, not the driver

        return InferenceRESTClient(self.url, self.rest_config)

    def __reduce__(self) -> tuple[Any, ...]:
        config = None if self.rest_config is None else _config_kwargs(self.rest_config)
        return (ClientSpec, (self.url, self.transport, config, self.grpc_options))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientSpec) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash((self.url, self.transport))

    def __repr__(self) -> str:
        return f"ClientSpec(url={self.url!r}, transport={self.transport!r})"


def _columns(spec: Optional[ColumnMap], what: str) -> Optional[dict[str, str]]:
    if spec is None:
        return None
    if isinstance(spec, str):
        raise ValueError(f"{what} must be a list of names or a dict, not a single string {spec!r}")
    return dict(spec) if isinstance(spec, Mapping) else {name: name for name in spec}


def _as_arrays(batch: Any) -> dict[str, np.ndarray[Any, Any]]:
    """A Ray batch as a dict of numpy arrays (``batch_format="numpy"``; pandas frames are converted)."""
    if isinstance(batch, Mapping):
        return {str(k): v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in batch.items()}
    columns = getattr(batch, "columns", None)
    if columns is not None:  # a pandas DataFrame (batch_format="pandas")
        return {
            str(c): np.stack(batch[c].to_numpy()) if batch[c].dtype == object else batch[c].to_numpy() for c in columns
        }
    raise EncodeError(
        f"InferencePredictor needs a batch as a dict of numpy arrays (map_batches(batch_format='numpy')), "
        f"got {type(batch).__name__}"
    )


class InferencePredictor:
    """A callable class for ``ray.data.Dataset.map_batches``: each batch of rows goes through one model.

    Ray builds one instance per actor (worker process); the instance builds its client from ``client`` on first
    use and keeps it for every later batch. Each call splits the batch into requests of ``batch_size`` rows and
    runs them with ``infer_batched`` (``concurrency`` in flight), so the outputs come back as arrays with one row
    per input row.

    Args:
        client: A :class:`ClientSpec`, or a URL (REST defaults; ``grpc://`` for gRPC).
        model_name: The model to run.
        inputs: Which columns are model inputs: a list of names, or ``{column: input_name}``; None: every column
            that is not in ``keep_columns``.
        outputs: Which outputs to return: a list of names, or ``{output_name: column}``; None: all of them,
            under their own names.
        keep_columns: Columns copied unchanged into the result (ids, labels...).
        batch_size: Rows per request.
        concurrency: Requests in flight at once per actor.
        datatypes: ``{input_name: datatype}`` where a column's dtype does not say it (e.g. ``"BF16"``).
        parameters: Request parameters sent with every request.
        model_version: A specific model version.
        timeout: Per-request timeout, passed to ``infer``.
        headers: Per-request headers, passed to ``infer``.

    Example:
        >>> ds.map_batches(InferencePredictor, fn_constructor_kwargs={"client": url, "model_name": "m"},
        ...                batch_size=1024, batch_format="numpy", concurrency=2)
    """

    def __init__(
        self,
        client: Union[ClientSpec, str],
        model_name: str,
        inputs: Optional[ColumnMap] = None,
        outputs: Optional[ColumnMap] = None,
        keep_columns: Sequence[str] = (),
        batch_size: int = 64,
        concurrency: int = 4,
        datatypes: Optional[Mapping[str, str]] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        model_version: Optional[str] = None,
        timeout: Any = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.spec = client if isinstance(client, ClientSpec) else ClientSpec(client)
        self.model_name = model_name
        self.inputs = _columns(inputs, "inputs")
        self.outputs = _columns(outputs, "outputs")
        self.keep_columns = list(keep_columns)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.datatypes = dict(datatypes) if datatypes else None
        self.parameters = dict(parameters) if parameters else None
        self.model_version = model_version
        self.timeout = timeout
        self.headers = dict(headers) if headers else None
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The client of this worker (built on first use)."""
        if self._client is None:
            self._client = self.spec.build()
        return self._client

    def __call__(self, batch: Any) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model on one batch of rows; returns the output columns (and ``keep_columns``)."""
        arrays = _as_arrays(batch)
        missing = [c for c in [*(self.inputs or ()), *self.keep_columns] if c not in arrays]
        if missing:
            raise EncodeError(
                f"model {self.model_name!r}: the batch has no column(s) {missing}; columns: {sorted(arrays)}"
            )
        if self.inputs is None:
            model_inputs = {c: a for c, a in arrays.items() if c not in self.keep_columns}
        else:
            model_inputs = {name: arrays[column] for column, name in self.inputs.items()}
        rows = len(next(iter(arrays.values()))) if arrays else 0
        result: dict[str, np.ndarray[Any, Any]] = {c: arrays[c] for c in self.keep_columns}
        if rows == 0:
            return result
        wanted = None if self.outputs is None else list(self.outputs)
        from inferkit.batching import infer_batched  # noqa: PLC0415 - keeps `import inferkit.integrations.ray` light

        method = getattr(self.client, "infer_batched", None)
        call = method if method is not None else (lambda *a, **k: infer_batched(self.client.infer, *a, **k))
        out = call(
            self.model_name,
            model_inputs,
            self.batch_size,
            outputs=wanted,
            concurrency=self.concurrency,
            datatypes=self.datatypes,
            parameters=self.parameters,
            model_version=self.model_version,
            timeout=self.timeout,
            headers=self.headers,
        )
        for name, array in out.items():
            column = self.outputs[name] if self.outputs is not None else name
            if column in result:
                raise DecodeError(
                    f"model {self.model_name!r}: output {name!r} would overwrite kept column {column!r}; "
                    "rename it with outputs={output: column}"
                )
            if len(array) != rows:
                raise DecodeError(
                    f"model {self.model_name!r}: output {name!r} has {len(array)} rows for {rows} input rows; "
                    "a Ray batch needs one output row per input row"
                )
            result[column] = array
        return result

    def close(self) -> None:
        """Close this worker's client (Ray ends actors by ending their process; this is for other uses)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        # The client never travels: the receiving process builds its own from the spec.
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def infer_dataset(
    dataset: Any,
    client: Union[ClientSpec, str],
    model_name: str,
    *,
    actors: int = 2,
    rows_per_batch: int = 1024,
    map_batches_options: Optional[Mapping[str, Any]] = None,
    **predictor_options: Any,
) -> Any:
    """Add a model's outputs to a Ray dataset: ``dataset.map_batches`` with :class:`InferencePredictor`.

    Args:
        dataset: A ``ray.data.Dataset``.
        client: A :class:`ClientSpec` or URL.
        model_name: The model to run.
        actors: How many predictor actors (each with its own client) Ray runs.
        rows_per_batch: Rows Ray hands each call (split further into requests of ``batch_size``).
        map_batches_options: More keyword arguments for ``map_batches`` (``num_cpus``, ``zero_copy_batch``...).
            The work is network-bound, so ``num_cpus=0.5`` or less packs more actors on a machine.
        **predictor_options: Keyword arguments of :class:`InferencePredictor` (``inputs``, ``outputs``,
            ``keep_columns``, ``batch_size``, ``concurrency``...).

    Returns:
        The lazily mapped dataset (nothing runs until it is consumed).
    """
    options: dict[str, Any] = {"batch_format": "numpy", "batch_size": rows_per_batch}
    options.update(map_batches_options or {})
    if "compute" not in options and "concurrency" not in options:
        # A fixed pool of actors. Imported here, by name: the dataset proves Ray is installed, and type checkers
        # of inferkit need no Ray stubs.
        ray_data = importlib.import_module("ray.data")
        options["compute"] = ray_data.ActorPoolStrategy(min_size=actors, max_size=actors)
    return dataset.map_batches(
        InferencePredictor,
        fn_constructor_kwargs={"client": client, "model_name": model_name, **predictor_options},
        **options,
    )
