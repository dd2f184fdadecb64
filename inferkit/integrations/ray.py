"""Scaling batch jobs out with Ray Data: callable classes for ``Dataset.map_batches`` that send each block of rows
to a model server through an inferkit client.

Owns: :class:`InferencePredictor` (the sync callable class: one client per Ray actor, ``infer_many`` on each
batch), :class:`AsyncInferencePredictor` (the same with an :mod:`inferkit.aio` client, for Ray's async actors),
:class:`GeneratePredictor` / :class:`AsyncGeneratePredictor` (one generate payload per row, for LLM prompts) and
:func:`infer_dataset` / :func:`generate_dataset` (the ``map_batches`` calls with sensible options).
:class:`ClientSpec` (the picklable client recipe) lives in :mod:`inferkit.integrations._rows`, shared with the
Spark adapter, and is re-exported here.

Must not import: ray (nothing here needs it: Ray calls the class; ``infer_dataset`` only calls methods of the
dataset it is given), nor at import time inferkit.rest_client, inferkit.grpc_client, inferkit.aio (the client is
built on the worker, on first use).

How the work is spread: Ray runs ``actors`` copies of the predictor (processes, possibly on other machines); each
receives blocks of ``rows_per_batch`` rows as a dict of numpy arrays and splits them into requests of
``batch_size`` rows, of which at most ``concurrency`` are in flight at once per actor (for the async predictor:
across all the batches Ray runs at once on that actor). So the model server sees at most
``actors * concurrency`` requests at a time.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from inferkit.errors import DecodeError, EncodeError
from inferkit.integrations._rows import (
    ClientSpec,
    ColumnMap,
    GenerateRows,
    RowBlock,
    check_count,
    check_on_error,
    column_map,
    run_block,
    run_block_async,
    run_generate,
    run_generate_async,
)

__all__ = [
    "AsyncGeneratePredictor",
    "AsyncInferencePredictor",
    "ClientSpec",
    "GeneratePredictor",
    "InferencePredictor",
    "generate_dataset",
    "infer_dataset",
]


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


def _merge(
    model_name: str,
    kept: Mapping[str, np.ndarray[Any, Any]],
    columns: Mapping[str, np.ndarray[Any, Any]],
    errors: Optional[list[Optional[str]]],
    error_column: str,
) -> dict[str, np.ndarray[Any, Any]]:
    """The kept columns, the output columns (never overwriting a kept one) and the error column (if any)."""
    result = dict(kept)
    for column, array in columns.items():
        if column in result:
            raise DecodeError(
                f"model {model_name!r}: an output would overwrite kept column {column!r}; "
                "rename it with outputs={output: column}"
            )
        result[column] = array
    if errors is not None:
        result[error_column] = np.array(errors, dtype=object)
    return result


class _Worker:
    """One client per Ray actor: built from ``spec`` on first use, never pickled with the predictor."""

    spec: ClientSpec
    _client: Any = None

    @property
    def client(self) -> Any:
        """The client of this worker (built on first use)."""
        if self._client is None:
            self._client = self.spec.build()
        return self._client

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


class _AsyncWorker(_Worker):
    """:class:`_Worker` with an :mod:`inferkit.aio` client and one semaphore per actor (built in Ray's loop)."""

    _semaphore: Optional[asyncio.Semaphore] = None

    @property
    def client(self) -> Any:
        """The asyncio client of this worker (built on first use, inside Ray's event loop)."""
        if self._client is None:
            self._client = self.spec.build_async()
        return self._client

    def semaphore(self, concurrency: int) -> asyncio.Semaphore:
        """The bound on requests in flight on this actor, shared by every batch it runs at once."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(concurrency)
        return self._semaphore

    async def aclose(self) -> None:
        """Close this worker's client."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_semaphore", None)
        return state


class InferencePredictor(_Worker):
    """A callable class for ``ray.data.Dataset.map_batches``: each batch of rows goes through one model.

    Ray builds one instance per actor (worker process); the instance builds its client from ``client`` on first
    use and keeps it for every later batch. Each call splits the batch into requests of ``batch_size`` rows and
    runs them with ``infer_many`` (at most ``concurrency`` in flight, each under the client's retry policy), so
    the outputs come back as arrays with one row per input row.

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
        on_error: ``"raise"``: a failed request (after the client's retries) fails the batch, so Ray fails the
            job. ``"column"``: the rows of a failed request get zeros (empty bytes for BYTES) in the output
            columns and the error, as text, in ``error_column``; rows that succeeded have None there.
        error_column: The error column's name (with ``on_error="column"``).

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
        on_error: str = "raise",
        error_column: str = "error",
    ) -> None:
        self.spec = ClientSpec.of(client)
        self.model_name = model_name
        self.inputs = column_map(inputs, "inputs")
        self.outputs = column_map(outputs, "outputs")
        self.keep_columns = list(keep_columns)
        self.batch_size = check_count(batch_size, "batch_size")
        self.concurrency = check_count(concurrency, "concurrency")
        self.datatypes = dict(datatypes) if datatypes else None
        self.parameters = dict(parameters) if parameters else None
        self.model_version = model_version
        self.timeout = timeout
        self.headers = dict(headers) if headers else None
        self.on_error = check_on_error(on_error)
        self.error_column = error_column
        self._client: Any = None
        self._templates: dict[str, Any] = {}  # output -> (dtype, row shape), to fill the rows of failed requests

    def _block(self, batch: Any) -> tuple[Optional[RowBlock], dict[str, np.ndarray[Any, Any]], int]:
        """The requests of a batch, the kept columns, and the number of rows."""
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
        kept = {c: arrays[c] for c in self.keep_columns}
        if rows == 0:
            return None, kept, 0
        wanted = None if self.outputs is None else list(self.outputs)
        block = RowBlock(
            self.model_name,
            model_inputs,
            self.batch_size,
            wanted,
            self.datatypes,
            self.parameters,
            self.model_version,
        )
        return block, kept, rows

    def _result(
        self,
        kept: dict[str, np.ndarray[Any, Any]],
        out: Mapping[str, np.ndarray[Any, Any]],
        errors: Optional[list[Optional[str]]],
    ) -> dict[str, np.ndarray[Any, Any]]:
        columns = {self.outputs[name] if self.outputs is not None else name: array for name, array in out.items()}
        return _merge(self.model_name, kept, columns, errors, self.error_column)

    def __call__(self, batch: Any) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model on one batch of rows; returns the output columns (and ``keep_columns``)."""
        block, kept, _ = self._block(batch)
        if block is None:
            return kept
        out, errors = run_block(
            self.client,
            block,
            concurrency=self.concurrency,
            on_error=self.on_error,
            templates=self._templates,
            timeout=self.timeout,
            headers=self.headers,
        )
        return self._result(kept, out, errors)


class AsyncInferencePredictor(_AsyncWorker, InferencePredictor):
    """:class:`InferencePredictor` with an :mod:`inferkit.aio` client: ``async def __call__``, for Ray's async
    actors, which run several batches at once on one event loop (``map_batches(max_concurrency=...)``).

    ``concurrency`` bounds the requests in flight on the actor across all those batches (one semaphore per actor),
    so the server still sees at most ``actors * concurrency``. Arguments are those of :class:`InferencePredictor`.
    """

    async def __call__(self, batch: Any) -> dict[str, np.ndarray[Any, Any]]:  # type: ignore[override]
        """Run the model on one batch of rows; returns the output columns (and ``keep_columns``)."""
        block, kept, _ = self._block(batch)
        if block is None:
            return kept
        out, errors = await run_block_async(
            self.client,
            block,
            semaphore=self.semaphore(self.concurrency),
            on_error=self.on_error,
            templates=self._templates,
            timeout=self.timeout,
            headers=self.headers,
        )
        return self._result(kept, out, errors)


class GeneratePredictor(_Worker):
    """A callable class for ``ray.data.Dataset.map_batches`` that sends one generate payload per row (LLM prompts).

    Each row becomes a payload of ``client.generate`` (Triton's generate extension; the gRPC clients send the same
    payloads as typed tensors): ``{**parameters, payload key: row[column], ...}`` from ``inputs``, or whatever the
    ``payload`` function makes of the row. Each call runs the batch's payloads with ``generate_many`` (at most
    ``concurrency`` in flight per actor, each under the client's retry policy) and returns the answers' fields as
    columns, one row per input row. Ray builds one instance (one client) per actor.

    Args:
        client: A :class:`ClientSpec`, or a URL (REST defaults; ``grpc://`` for gRPC).
        model_name: The model (e.g. a TensorRT-LLM or vLLM model on Triton).
        inputs: ``{column: payload key}``, or a list of names used for both; None (and no ``payload``):
            ``{"prompt": "text_input"}``. Extra columns can carry per-row parameters (``{"max_tokens": ...}``).
        outputs: The answer's fields to return: a list, or ``{field: column}``; None: ``["text_output"]``.
        payload: Instead of ``inputs``: a function of one row (a dict of column -> Python value) returning its
            payload dict (it must pickle with cloudpickle, as Ray ships it to the actors).
        parameters: Keys added to every payload (``{"max_tokens": 64, "temperature": 0.2}``); a row's own win.
        keep_columns: Columns copied unchanged into the result (ids, the prompt itself...).
        concurrency: Requests in flight at once per actor.
        model_version, timeout, headers: Passed to each ``generate``.
        on_error: ``"raise"``: a failed request (after the client's retries) fails the batch, so Ray fails the
            job. ``"column"``: a failed row gets None in the output columns and the error, as text, in
            ``error_column``; rows that were answered have None there.
        error_column: The error column's name (with ``on_error="column"``).

    Example:
        >>> ds.map_batches(GeneratePredictor, fn_constructor_kwargs={"client": url, "model_name": "llm",
        ...                "parameters": {"max_tokens": 64}}, batch_size=64, batch_format="numpy", concurrency=2)
    """

    def __init__(
        self,
        client: Union[ClientSpec, str],
        model_name: str,
        inputs: Optional[ColumnMap] = None,
        outputs: Optional[ColumnMap] = None,
        payload: Optional[Callable[[dict[str, Any]], Mapping[str, Any]]] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        keep_columns: Sequence[str] = (),
        concurrency: int = 4,
        model_version: Optional[str] = None,
        timeout: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        on_error: str = "raise",
        error_column: str = "error",
    ) -> None:
        self.spec = ClientSpec.of(client)
        self.model_name = model_name
        if inputs is None and payload is None:
            inputs = {"prompt": "text_input"}
        self.rows = GenerateRows(
            model_name,
            column_map(inputs, "inputs"),
            payload,
            parameters,
            column_map(outputs, "outputs") or {"text_output": "text_output"},
        )
        self.keep_columns = list(keep_columns)
        self.concurrency = check_count(concurrency, "concurrency")
        self.model_version = model_version
        self.timeout = timeout
        self.headers = dict(headers) if headers else None
        self.on_error = check_on_error(on_error)
        self.error_column = error_column
        self._client: Any = None

    def _payloads(self, batch: Any) -> tuple[list[dict[str, Any]], dict[str, np.ndarray[Any, Any]]]:
        """The payloads of a batch (one per row) and the kept columns."""
        arrays = _as_arrays(batch)
        missing = [c for c in [*self.rows.columns(), *self.keep_columns] if c not in arrays]
        if missing:
            raise EncodeError(
                f"model {self.model_name!r}: the batch has no column(s) {missing}; columns: {sorted(arrays)}"
            )
        rows = len(next(iter(arrays.values()))) if arrays else 0
        return self.rows.payloads(arrays, rows), {c: arrays[c] for c in self.keep_columns}

    def __call__(self, batch: Any) -> dict[str, np.ndarray[Any, Any]]:
        """Generate for every row of one batch; returns the answer columns (and ``keep_columns``)."""
        payloads, kept = self._payloads(batch)
        if not payloads:
            return kept
        out, errors = run_generate(
            self.client,
            self.rows,
            payloads,
            concurrency=self.concurrency,
            on_error=self.on_error,
            model_version=self.model_version,
            timeout=self.timeout,
            headers=self.headers,
        )
        return _merge(self.model_name, kept, out, errors, self.error_column)


class AsyncGeneratePredictor(_AsyncWorker, GeneratePredictor):
    """:class:`GeneratePredictor` with an :mod:`inferkit.aio` client: ``async def __call__``, for Ray's async actors
    (``map_batches(max_concurrency=...)``). ``concurrency`` bounds the requests in flight on the actor across all
    the batches it runs at once (one semaphore per actor). Arguments are those of :class:`GeneratePredictor`.
    """

    async def __call__(self, batch: Any) -> dict[str, np.ndarray[Any, Any]]:  # type: ignore[override]
        """Generate for every row of one batch; returns the answer columns (and ``keep_columns``)."""
        payloads, kept = self._payloads(batch)
        if not payloads:
            return kept
        out, errors = await run_generate_async(
            self.client,
            self.rows,
            payloads,
            semaphore=self.semaphore(self.concurrency),
            on_error=self.on_error,
            model_version=self.model_version,
            timeout=self.timeout,
            headers=self.headers,
        )
        return _merge(self.model_name, kept, out, errors, self.error_column)


def infer_dataset(
    dataset: Any,
    client: Union[ClientSpec, str],
    model_name: str,
    *,
    actors: int = 2,
    rows_per_batch: int = 1024,
    map_batches_options: Optional[Mapping[str, Any]] = None,
    asynchronous: bool = False,
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
        asynchronous: Use :class:`AsyncInferencePredictor` (an asyncio client per actor) instead of
            :class:`InferencePredictor` (a sync client with worker threads).
        **predictor_options: Keyword arguments of :class:`InferencePredictor` (``inputs``, ``outputs``,
            ``keep_columns``, ``batch_size``, ``concurrency``, ``on_error``...).

    Returns:
        The lazily mapped dataset (nothing runs until it is consumed).
    """
    predictor = AsyncInferencePredictor if asynchronous else InferencePredictor
    kwargs = {"client": client, "model_name": model_name, **predictor_options}
    return _map_batches(dataset, predictor, kwargs, actors, rows_per_batch, map_batches_options)


def generate_dataset(
    dataset: Any,
    client: Union[ClientSpec, str],
    model_name: str,
    *,
    actors: int = 2,
    rows_per_batch: int = 256,
    map_batches_options: Optional[Mapping[str, Any]] = None,
    asynchronous: bool = False,
    **predictor_options: Any,
) -> Any:
    """Add an LLM's answers to a Ray dataset: ``dataset.map_batches`` with :class:`GeneratePredictor` (one generate
    request per row). The arguments are those of :func:`infer_dataset`; ``predictor_options`` those of
    :class:`GeneratePredictor` (``inputs``, ``outputs``, ``payload``, ``parameters``, ``keep_columns``,
    ``concurrency``, ``on_error``...); ``asynchronous`` uses :class:`AsyncGeneratePredictor`.

    Returns:
        The lazily mapped dataset (nothing runs until it is consumed).
    """
    predictor = AsyncGeneratePredictor if asynchronous else GeneratePredictor
    kwargs = {"client": client, "model_name": model_name, **predictor_options}
    return _map_batches(dataset, predictor, kwargs, actors, rows_per_batch, map_batches_options)


def _map_batches(
    dataset: Any,
    predictor: type,
    kwargs: dict[str, Any],
    actors: int,
    rows_per_batch: int,
    map_batches_options: Optional[Mapping[str, Any]],
) -> Any:
    options: dict[str, Any] = {"batch_format": "numpy", "batch_size": rows_per_batch}
    options.update(map_batches_options or {})
    if "compute" not in options and "concurrency" not in options:
        # A fixed pool of actors. Imported here, by name: the dataset proves Ray is installed, and type checkers
        # of inferkit need no Ray stubs.
        ray_data = importlib.import_module("ray.data")
        options["compute"] = ray_data.ActorPoolStrategy(min_size=actors, max_size=actors)
    return dataset.map_batches(predictor, fn_constructor_kwargs=kwargs, **options)
