"""Scaling batch jobs out with Apache Spark: a model server called from Spark's Python workers through inferkit.

Owns: :func:`make_predict_fn` (the ``make_predict_fn`` argument of ``pyspark.ml.functions.predict_batch_udf``),
:func:`infer_pandas` (the function for ``DataFrame.mapInPandas``) and :func:`infer_dataframe` (``mapInPandas``
with the output schema put together), and for generate payloads (LLM prompts, one request per row)
:func:`generate_pandas` / :func:`generate_dataframe`. Each Spark Python worker process builds ONE client per
:class:`~inferkit.integrations.ray.ClientSpec` on first use (after Spark forked it) and reuses it for every later
batch and task it runs; each batch is split into requests of ``batch_size`` rows sent with ``infer_many``, at most
``concurrency`` in flight, each under the client's retry policy (429 and ``Retry-After`` included).

Must not import: pyspark and pandas at import time (``import inferkit.integrations.spark`` stays light; pandas is
there whenever Spark calls these functions), nor at import time inferkit.rest_client, inferkit.grpc_client.

Columns: a tensor column (a Spark array) becomes one input with one row per Spark row (``input_shapes`` reshapes
each row, e.g. ``[4, 4]``); a string column becomes a BYTES input. An output whose rows hold one element becomes a
scalar column, any other a flat array per row; BYTES outputs come back as ``str`` (``decode_bytes=False``: bytes).
With ``on_error="column"``, the rows of a failed request have the error's text in the error column; their outputs
are null with :func:`infer_pandas` and zeros with :func:`make_predict_fn` (Spark's ``predict_batch_udf`` accepts no
nulls in array results).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from inferkit.errors import EncodeError
from inferkit.integrations._rows import (
    ClientSpec,
    ColumnMap,
    GenerateRows,
    RowBlock,
    check_count,
    check_on_error,
    column_map,
    run_block,
    run_generate,
    worker_client,
)

__all__ = ["ClientSpec", "generate_dataframe", "generate_pandas", "infer_dataframe", "infer_pandas", "make_predict_fn"]


class _Job:
    """The settings of one Spark job's calls, shipped to the workers (picklable: no client inside)."""

    def __init__(
        self,
        client: Union[ClientSpec, str],
        model_name: str,
        outputs: Optional[ColumnMap],
        batch_size: int,
        concurrency: int,
        datatypes: Optional[Mapping[str, str]],
        parameters: Optional[Mapping[str, Any]],
        model_version: Optional[str],
        timeout: Any,
        headers: Optional[Mapping[str, str]],
        on_error: str,
        error_column: str,
        decode_bytes: bool,
    ) -> None:
        self.spec = ClientSpec.of(client)
        self.model_name = model_name
        self.outputs = column_map(outputs, "outputs")
        self.batch_size = check_count(batch_size, "batch_size")
        self.concurrency = check_count(concurrency, "concurrency")
        self.datatypes = dict(datatypes) if datatypes else None
        self.parameters = dict(parameters) if parameters else None
        self.model_version = model_version
        self.timeout = timeout
        self.headers = dict(headers) if headers else None
        self.on_error = check_on_error(on_error)
        self.error_column = error_column
        self.decode_bytes = decode_bytes
        self.templates: dict[str, Any] = {}  # per worker (each worker unpickles its own copy)

    def run(
        self, inputs: Mapping[str, np.ndarray[Any, Any]]
    ) -> tuple[dict[str, np.ndarray[Any, Any]], Optional[list[Optional[str]]]]:
        """Output column -> array (one row per input row), and the errors per row (``on_error="column"``)."""
        block = RowBlock(
            self.model_name,
            inputs,
            self.batch_size,
            None if self.outputs is None else list(self.outputs),
            self.datatypes,
            self.parameters,
            self.model_version,
        )
        out, errors = run_block(
            worker_client(self.spec),
            block,
            concurrency=self.concurrency,
            on_error=self.on_error,
            templates=self.templates,
            timeout=self.timeout,
            headers=self.headers,
        )
        columns = {}
        for name, array in out.items():
            column = self.outputs[name] if self.outputs is not None else name
            columns[column] = self._column(array)
        return columns, errors

    def _column(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """One value per row: a scalar where a row holds one element, else the row flattened."""
        rows = len(array)
        if array.dtype == np.dtype(object) and self.decode_bytes:
            array = np.array(
                [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.reshape(-1)], dtype=object
            ).reshape(array.shape)
        if array.size == rows:
            return array.reshape(rows)
        return array.reshape(rows, -1)


class _PredictFn:
    """Called once per Spark Python worker by ``predict_batch_udf``: the predict function (the client is built on
    the first batch, and shared by every predict function of that worker with the same client spec)."""

    def __init__(self, job: _Job, inputs: Sequence[str], single: Optional[str]) -> None:
        self.job = job
        self.inputs = list(inputs)
        self.single = single

    def __call__(self) -> Callable[..., Any]:
        job, names, single = self.job, self.inputs, self.single

        def predict(*arrays: np.ndarray[Any, Any]) -> Any:
            columns, errors = job.run(dict(zip(names, arrays)))
            if single is not None:
                return columns[single]  # an array (or scalar) return type rather than a struct
            if errors is not None:
                columns[job.error_column] = np.array(errors, dtype=object)
            return columns

        # predict_batch_udf passes one array per input column and counts the function's parameters to know how many.
        params = [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(names))]
        predict.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return predict


def make_predict_fn(
    client: Union[ClientSpec, str],
    model_name: str,
    inputs: Sequence[str],
    outputs: Optional[ColumnMap] = None,
    *,
    batch_size: int = 64,
    concurrency: int = 4,
    datatypes: Optional[Mapping[str, str]] = None,
    parameters: Optional[Mapping[str, Any]] = None,
    model_version: Optional[str] = None,
    timeout: Any = None,
    headers: Optional[Mapping[str, str]] = None,
    on_error: str = "raise",
    error_column: str = "error",
    decode_bytes: bool = True,
) -> Callable[[], Callable[..., Any]]:
    """The ``make_predict_fn`` argument of ``pyspark.ml.functions.predict_batch_udf`` for a model on a server.

    Args:
        client: A :class:`ClientSpec` or URL (``grpc://`` for gRPC).
        model_name: The model to run.
        inputs: The model's input names, in the order of the UDF's columns.
        outputs: Output names (each the name of a field of the UDF's struct return type), or ``{output: field}``;
            None: every output, under its own name. A single name as a string (``"OUTPUT0"``): that output is the
            UDF's value itself (an array or scalar return type, not a struct).
        batch_size: Rows per request (``predict_batch_udf``'s own ``batch_size`` is rows per call, split here).
        concurrency: Requests in flight at once per Spark Python worker.
        datatypes, parameters, model_version, timeout, headers: As for ``infer_batched``.
        on_error: ``"raise"`` (a failed request fails the Spark task) or ``"column"`` (its rows get zeros and the
            error's text in the ``error_column`` field, which the return type must then have, as a string).
        decode_bytes: BYTES outputs as ``str`` (for string fields); False: ``bytes`` (for binary fields).

    Example:
        >>> add = predict_batch_udf(make_predict_fn(url, "add_sub", ["INPUT0", "INPUT1"], {"OUTPUT0": "sum"}),
        ...                         return_type=StructType([StructField("sum", ArrayType(IntegerType()))]),
        ...                         batch_size=1024, input_tensor_shapes=[[16], [16]])
        >>> df.withColumn("out", add("a", "b"))
    """
    if isinstance(inputs, str) or not inputs:
        raise ValueError(f"inputs must list the model's input names in column order, got {inputs!r}")
    single = outputs if isinstance(outputs, str) else None
    if single is not None:
        if on_error == "column":
            raise ValueError("on_error='column' needs a struct return type: pass outputs as a list or dict")
        outputs = [single]
    job = _Job(
        client,
        model_name,
        outputs,
        batch_size,
        concurrency,
        datatypes,
        parameters,
        model_version,
        timeout,
        headers,
        on_error,
        error_column,
        decode_bytes,
    )
    return _PredictFn(job, inputs, single)


def _column_array(series: Any, column: str, shape: Optional[Sequence[int]]) -> np.ndarray[Any, Any]:
    """A pandas column as one array with one row per Spark row (arrays stacked and reshaped; strings as objects)."""
    if series.isna().any():
        raise EncodeError(f"column {column!r} has nulls; filter or fill them before inference (df.na.drop/fill)")
    values: np.ndarray[Any, Any] = np.asarray(series.to_numpy())
    if values.dtype == np.dtype(object) and len(values) and isinstance(values[0], (np.ndarray, list, tuple)):
        values = np.stack([np.asarray(v) for v in values])
    if shape:
        values = values.reshape([len(series), *shape])
    return values


def infer_pandas(
    client: Union[ClientSpec, str],
    model_name: str,
    inputs: ColumnMap,
    outputs: Optional[ColumnMap] = None,
    *,
    keep_columns: Sequence[str] = (),
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    batch_size: int = 64,
    concurrency: int = 4,
    datatypes: Optional[Mapping[str, str]] = None,
    parameters: Optional[Mapping[str, Any]] = None,
    model_version: Optional[str] = None,
    timeout: Any = None,
    headers: Optional[Mapping[str, str]] = None,
    on_error: str = "raise",
    error_column: str = "error",
    decode_bytes: bool = True,
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The function for ``DataFrame.mapInPandas``: each pandas batch goes through one model.

    Args:
        client: A :class:`ClientSpec` or URL (``grpc://`` for gRPC).
        model_name: The model to run.
        inputs: Which columns are model inputs: ``{column: input_name}``, or a list of names used for both.
        outputs: Which outputs to return: ``{output_name: column}`` or a list; None: all, under their own names.
        keep_columns: Columns copied unchanged into the result (ids...).
        input_shapes: ``{column: shape of one row}`` to reshape a flat array column (e.g. ``[4, 4]``).
        on_error: ``"raise"`` or ``"column"`` (failed rows: null outputs, the error's text in ``error_column``).
        batch_size, concurrency, datatypes, parameters, model_version, timeout, headers, decode_bytes: As for
            :func:`make_predict_fn`.

    The schema given to ``mapInPandas`` must list ``keep_columns``, the output columns and, with
    ``on_error="column"``, ``error_column`` (a string); :func:`infer_dataframe` puts it together.
    """
    columns = column_map(inputs, "inputs") or {}
    if not columns:
        raise ValueError("inputs must name at least one column")
    shapes = {c: list(s) for c, s in (input_shapes or {}).items()}
    keep = list(keep_columns)
    job = _Job(
        client,
        model_name,
        outputs,
        batch_size,
        concurrency,
        datatypes,
        parameters,
        model_version,
        timeout,
        headers,
        on_error,
        error_column,
        decode_bytes,
    )

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        pd = importlib.import_module("pandas")
        for frame in frames:
            missing = [c for c in [*columns, *keep] if c not in frame.columns]
            if missing:
                raise EncodeError(f"model {model_name!r}: no column(s) {missing}; columns: {list(frame.columns)}")
            result = pd.DataFrame({c: frame[c].to_numpy() for c in keep})
            if len(frame) == 0:
                yield result
                continue
            arrays = {name: _column_array(frame[c], c, shapes.get(c)) for c, name in columns.items()}
            out, errors = job.run(arrays)
            failed = None if errors is None else np.array([e is not None for e in errors])
            for column, array in out.items():
                values = list(array) if array.ndim > 1 else array
                series = pd.Series(values, dtype=object if array.ndim > 1 else None)
                if failed is not None and failed.any():
                    series = series.astype(object).where(~failed, None)
                result[column] = series
            if errors is not None:
                result[error_column] = pd.Series(errors, dtype=object)
            yield result

    return run


def infer_dataframe(
    df: Any,
    client: Union[ClientSpec, str],
    model_name: str,
    inputs: ColumnMap,
    output_schema: Any,
    outputs: Optional[ColumnMap] = None,
    *,
    keep_columns: Sequence[str] = (),
    **options: Any,
) -> Any:
    """``df.mapInPandas`` with :func:`infer_pandas`, the result's schema put together: the kept columns (types from
    ``df``), the outputs (``output_schema``: a ``StructType`` or a DDL string such as ``"sum array<int>"``) and,
    with ``on_error="column"``, the error column (string).

    Returns:
        The lazily mapped DataFrame.
    """
    types = importlib.import_module("pyspark.sql.types")
    if isinstance(output_schema, str):
        output_schema = types._parse_datatype_string(output_schema)
    fields = [df.schema[c] for c in keep_columns] + list(output_schema.fields)
    if options.get("on_error", "raise") == "column":
        fields.append(types.StructField(options.get("error_column", "error"), types.StringType(), True))
    function = infer_pandas(client, model_name, inputs, outputs, keep_columns=keep_columns, **options)
    return df.mapInPandas(function, types.StructType(fields))


def generate_pandas(
    client: Union[ClientSpec, str],
    model_name: str,
    inputs: Optional[ColumnMap] = None,
    outputs: Optional[ColumnMap] = None,
    *,
    payload: Optional[Callable[[dict[str, Any]], Mapping[str, Any]]] = None,
    parameters: Optional[Mapping[str, Any]] = None,
    keep_columns: Sequence[str] = (),
    concurrency: int = 4,
    model_version: Optional[str] = None,
    timeout: Any = None,
    headers: Optional[Mapping[str, str]] = None,
    on_error: str = "raise",
    error_column: str = "error",
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The function for ``DataFrame.mapInPandas`` that sends one generate payload per row (LLM prompts).

    Args:
        client: A :class:`ClientSpec` or URL (``grpc://`` for gRPC).
        model_name: The model.
        inputs: ``{column: payload key}`` or a list of names used for both; None (and no ``payload``):
            ``{"prompt": "text_input"}``. A column may carry a per-row parameter (``max_tokens``).
        outputs: The answer's fields to return: a list, or ``{field: column}``; None: ``["text_output"]``.
        payload: Instead of ``inputs``: a function of one row (a dict of column -> Python value) returning its payload.
        parameters: Keys added to every payload (a row's own keys win).
        keep_columns: Columns copied unchanged into the result.
        concurrency: Requests in flight at once per Spark Python worker (``generate_many``; one client per worker).
        model_version, timeout, headers: Passed to each ``generate``.
        on_error: ``"raise"`` or ``"column"`` (a failed row: null outputs, the error's text in ``error_column``).

    The schema given to ``mapInPandas`` lists ``keep_columns``, the output columns and, with ``on_error="column"``,
    ``error_column`` (a string); :func:`generate_dataframe` puts it together.
    """
    if inputs is None and payload is None:
        inputs = {"prompt": "text_input"}
    rows = GenerateRows(
        model_name,
        column_map(inputs, "inputs"),
        payload,
        parameters,
        column_map(outputs, "outputs") or {"text_output": "text_output"},
    )
    spec = ClientSpec.of(client)
    keep = list(keep_columns)
    concurrency = check_count(concurrency, "concurrency")
    on_error = check_on_error(on_error)
    headers = dict(headers) if headers else None

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        pd = importlib.import_module("pandas")
        for frame in frames:
            missing = [c for c in [*rows.columns(), *keep] if c not in frame.columns]
            if missing:
                raise EncodeError(f"model {model_name!r}: no column(s) {missing}; columns: {list(frame.columns)}")
            result = pd.DataFrame({c: frame[c].to_numpy() for c in keep})
            if len(frame) == 0:
                yield result
                continue
            columns = {str(c): frame[c].to_numpy() for c in frame.columns}
            out, errors = run_generate(
                worker_client(spec),
                rows,
                rows.payloads(columns, len(frame)),
                concurrency=concurrency,
                on_error=on_error,
                model_version=model_version,
                timeout=timeout,
                headers=headers,
            )
            for column, values in out.items():
                result[column] = pd.Series(values, dtype=object)
            if errors is not None:
                result[error_column] = pd.Series(errors, dtype=object)
            yield result

    return run


def generate_dataframe(
    df: Any,
    client: Union[ClientSpec, str],
    model_name: str,
    inputs: Optional[ColumnMap] = None,
    outputs: Optional[ColumnMap] = None,
    *,
    output_schema: Any = None,
    keep_columns: Sequence[str] = (),
    **options: Any,
) -> Any:
    """``df.mapInPandas`` with :func:`generate_pandas`, the result's schema put together: the kept columns (types
    from ``df``), the output columns (strings, or ``output_schema``: a ``StructType`` or DDL string such as
    ``"answer string, tokens int"``) and, with ``on_error="column"``, the error column (string).

    Returns:
        The lazily mapped DataFrame.
    """
    types = importlib.import_module("pyspark.sql.types")
    if isinstance(output_schema, str):
        output_schema = types._parse_datatype_string(output_schema)
    if output_schema is None:
        names = list((column_map(outputs, "outputs") or {"text_output": "text_output"}).values())
        output_schema = types.StructType([types.StructField(n, types.StringType(), True) for n in names])
    fields = [df.schema[c] for c in keep_columns] + list(output_schema.fields)
    if options.get("on_error", "raise") == "column":
        fields.append(types.StructField(options.get("error_column", "error"), types.StringType(), True))
    function = generate_pandas(client, model_name, inputs, outputs, keep_columns=keep_columns, **options)
    return df.mapInPandas(function, types.StructType(fields))
