"""What the Ray and Spark adapters share: a picklable client recipe, and running a block of rows through a model.

Owns: :class:`ClientSpec` (URL and settings, rebuilt in each worker process, sync or asyncio), :func:`worker_client`
(one client per spec per process, rebuilt after a fork), :class:`RowBlock` (a block of aligned input rows split
into requests, and the responses put back together: failed requests either raise or become an error per row,
``on_error="column"``), :class:`GenerateRows` with :func:`run_generate` / :func:`run_generate_async` (the same for
generate payloads: one payload per row, the answers' fields as columns), and the column-mapping helpers.

Must not import at import time: ray, pyspark, pandas, inferkit.rest_client, inferkit.grpc_client, inferkit.aio (the
adapters load their framework; a client is built in the worker, on first use).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from inferkit.batching.batched import split_batches
from inferkit.codec.datatypes import datatype_to_dtype
from inferkit.config import RESTConfig
from inferkit.errors import DecodeError, EncodeError, ItemError

__all__ = [
    "ClientSpec",
    "ColumnMap",
    "GenerateRows",
    "RowBlock",
    "check_on_error",
    "column_map",
    "run_block",
    "run_block_async",
    "run_generate",
    "run_generate_async",
    "worker_client",
]

ColumnMap = Union[Sequence[str], Mapping[str, str]]
ON_ERROR = ("raise", "column")


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
    """How to build a client: picklable, so it can travel to Ray or Spark workers (or any other process).

    Args:
        url: ``http(s)://host:port`` for REST, ``grpc://host:port`` or ``grpcs://host:port`` for gRPC.
        transport: ``"rest"``, ``"grpc"``, or ``"auto"`` (decided by the URL's scheme).
        rest_config: The REST client's :class:`~inferkit.RESTConfig` (or a dict of its fields): retry policy,
            timeouts, headers, pool size.
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

    @classmethod
    def of(cls, client: Union[ClientSpec, str]) -> ClientSpec:
        """``client`` itself, or a spec with default settings for a URL."""
        return client if isinstance(client, ClientSpec) else cls(client)

    def build(self) -> Any:
        """A new sync client (new connections) for this spec."""
        if self.transport == "grpc":
            from inferkit.grpc_client import InferenceGRPCClient  # noqa: PLC0415 - the grpc extra, on the worker

            return InferenceGRPCClient(self.url, **self.grpc_options)
        from inferkit.rest_client import InferenceRESTClient  # noqa: PLC0415 - built on the worker, not the driver

        return InferenceRESTClient(self.url, self.rest_config)

    def build_async(self) -> Any:
        """A new :mod:`inferkit.aio` client for this spec (build it inside the event loop that will use it)."""
        if self.transport == "grpc":
            from inferkit.aio import InferenceGRPCClient as AsyncGRPCClient  # noqa: PLC0415 - the aio/grpc extras

            return AsyncGRPCClient(self.url, **self.grpc_options)
        from inferkit.aio import InferenceRESTClient as AsyncRESTClient  # noqa: PLC0415 - the aio extra

        return AsyncRESTClient(self.url, self.rest_config)

    def __reduce__(self) -> tuple[Any, ...]:
        config = None if self.rest_config is None else _config_kwargs(self.rest_config)
        return (ClientSpec, (self.url, self.transport, config, self.grpc_options))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientSpec) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash((self.url, self.transport))

    def __repr__(self) -> str:
        return f"ClientSpec(url={self.url!r}, transport={self.transport!r})"


# One client per spec per process. Spark forks its Python workers from a daemon, and both engines may run several
# tasks one after another in one process: a client is built on first use in a process and reused by every later
# batch there; a client inherited through fork is never used (its process id differs), a new one is built.
_CLIENTS: dict[ClientSpec, tuple[int, Any]] = {}
_CLIENTS_LOCK = threading.Lock()


def worker_client(spec: ClientSpec) -> Any:
    """This process's sync client for ``spec`` (built on first use, then reused)."""
    pid = os.getpid()
    with _CLIENTS_LOCK:
        owner, client = _CLIENTS.get(spec, (-1, None))
        if owner != pid:
            client = spec.build()
            _CLIENTS[spec] = (pid, client)
        return client


def column_map(spec: Optional[ColumnMap], what: str) -> Optional[dict[str, str]]:
    """A list of names (each mapped to itself) or a mapping, as a dict; None stays None."""
    if spec is None:
        return None
    if isinstance(spec, str):
        raise ValueError(f"{what} must be a list of names or a dict, not a single string {spec!r}")
    return dict(spec) if isinstance(spec, Mapping) else {name: name for name in spec}


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'column', got {on_error!r}")
    return on_error


def check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class RowBlock:
    """One block of aligned input rows for one model: the requests to send, and the outputs put back in row order.

    Args:
        model_name: The model.
        inputs: Input name -> array with one row per example (all the same length).
        batch_size: Rows per request.
        outputs: Output names to ask for; None: all.
        datatypes, parameters, model_version: As for ``infer_batched``.
    """

    def __init__(
        self,
        model_name: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        batch_size: int,
        outputs: Optional[Sequence[str]] = None,
        datatypes: Optional[Mapping[str, str]] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        model_version: Optional[str] = None,
    ) -> None:
        self.model_name = model_name
        self.rows = len(next(iter(inputs.values()))) if inputs else 0
        self.batch_size = batch_size
        self.outputs = None if outputs is None else list(outputs)
        self.requests = split_batches(
            model_name, inputs, batch_size, self.outputs, datatypes, parameters, model_version
        )

    def bounds(self, batch: int) -> tuple[int, int]:
        start = batch * self.batch_size
        return start, min(start + self.batch_size, self.rows)

    def assemble(
        self, results: Iterable[Any], templates: dict[str, tuple[np.dtype[Any], tuple[int, ...]]]
    ) -> tuple[dict[str, np.ndarray[Any, Any]], list[Optional[str]]]:
        """The outputs in row order and one error per row (None where the row's request succeeded).

        ``results`` are each request's response or exception (an :class:`ItemError` is unwrapped), in order. Rows of
        a failed request get zeros (empty bytes for BYTES) in every output, shaped like the other rows; ``templates``
        (output name -> dtype and row shape, kept by the caller across blocks) says how when no request of this
        block succeeded, and is updated from every success.
        """
        errors: list[Optional[str]] = [None] * self.rows
        parts: list[Union[dict[str, np.ndarray[Any, Any]], int]] = []
        for batch, result in enumerate(results):
            start, stop = self.bounds(batch)
            if isinstance(result, (BaseException, ItemError)):
                exc = result.exception if isinstance(result, ItemError) else result
                errors[start:stop] = [_describe(exc)] * (stop - start)
                parts.append(stop - start)
                continue
            names = self.outputs if self.outputs is not None else [o.name for o in result.outputs]
            arrays = {}
            for name in names:
                array = result.as_numpy(name)
                if array is None or len(array) != stop - start:
                    raise DecodeError(
                        f"model {self.model_name!r}: output {name!r} has "
                        f"{'no data' if array is None else len(array)} rows for {stop - start} input rows; "
                        "each input row needs one output row"
                    )
                arrays[name] = array
                templates.setdefault(name, (array.dtype, tuple(array.shape[1:])))
            parts.append(arrays)
        names = list(self.outputs if self.outputs is not None else templates)
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name in names:
            if name not in templates:
                continue  # every request failed and the model's metadata was not asked: see fill_templates
            dtype, row_shape = templates[name]
            chunks = [p[name] if isinstance(p, dict) else _filler(dtype, (p, *row_shape)) for p in parts]
            out[name] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)
        return out, errors


def _filler(dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    if dtype == np.dtype(object):
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=dtype)


def fill_templates(
    metadata: Mapping[str, Any],
    outputs: Optional[Sequence[str]],
    templates: dict[str, tuple[np.dtype[Any], tuple[int, ...]]],
) -> None:
    """Learn each output's dtype and row shape from the model's metadata (when every request so far failed)."""
    for tensor in metadata.get("outputs", ()):
        name = tensor.get("name")
        if name in templates or (outputs is not None and name not in outputs):
            continue
        shape = [int(d) for d in tensor.get("shape", ())][1:]  # the first dimension is the batch
        if any(d < 0 for d in shape):
            continue  # a variable dimension: the rows of a failed request cannot be shaped
        templates[name] = (np.dtype(datatype_to_dtype(str(tensor.get("datatype")))), tuple(shape))


def _failed(block: RowBlock, exc: BaseException, batch: Optional[int]) -> BaseException:
    """``exc`` with a note naming the rows of the failed request (``on_error="raise"``)."""
    if isinstance(batch, int) and sys.version_info >= (3, 11):
        start, stop = block.bounds(batch)
        exc.add_note(f"model {block.model_name!r}: the failed request held rows {start}:{stop} of the block")
    return exc


def _finish(
    block: RowBlock,
    results: list[Any],
    on_error: str,
    templates: dict[str, tuple[np.dtype[Any], tuple[int, ...]]],
) -> tuple[dict[str, np.ndarray[Any, Any]], Optional[list[Optional[str]]]]:
    out, errors = block.assemble(results, templates)
    return out, (errors if on_error == "column" else None)


def _missing(block: RowBlock, out: Mapping[str, Any], templates: Mapping[str, Any]) -> bool:
    """Every request failed before any output's shape was known (so the outputs could not be filled)."""
    wanted = block.outputs if block.outputs is not None else list(templates)
    return block.rows > 0 and (not wanted or any(name not in out for name in wanted))


def _no_shape(block: RowBlock) -> DecodeError:
    return DecodeError(
        f"model {block.model_name!r}: every request of the block failed and the model's metadata does not give "
        "each output a fixed row shape, so the failed rows cannot be filled; pass outputs=[...] naming "
        "fixed-shape outputs, or on_error='raise'"
    )


def run_block(
    client: Any,
    block: RowBlock,
    *,
    concurrency: int,
    on_error: str,
    templates: dict[str, tuple[np.dtype[Any], tuple[int, ...]]],
    timeout: Any = None,
    headers: Optional[Mapping[str, str]] = None,
) -> tuple[dict[str, np.ndarray[Any, Any]], Optional[list[Optional[str]]]]:
    """Send a block's requests with a sync client (``infer_many``: at most ``concurrency`` in flight, each under
    the client's retry policy); the outputs in row order and, with ``on_error="column"``, one error per row."""
    column = on_error == "column"
    many = client.infer_many(
        block.requests, concurrency=concurrency, return_exceptions=column, timeout=timeout, headers=headers
    )
    try:
        results = list(many)
    except Exception as exc:  # on_error="raise": the first failure, once the requests in flight have ended
        raise _failed(block, exc, getattr(exc, "index", None))  # noqa: B904 - the same exception, with a note
    out, errors = _finish(block, results, on_error, templates)
    if errors is not None and _missing(block, out, templates):
        fill_templates(client.get_model_metadata(block.model_name), block.outputs, templates)
        out, errors = _finish(block, results, on_error, templates)
        if _missing(block, out, templates):
            raise _no_shape(block)
    return out, errors


async def run_block_async(
    client: Any,
    block: RowBlock,
    *,
    semaphore: asyncio.Semaphore,
    on_error: str,
    templates: dict[str, tuple[np.dtype[Any], tuple[int, ...]]],
    timeout: Any = None,
    headers: Optional[Mapping[str, str]] = None,
) -> tuple[dict[str, np.ndarray[Any, Any]], Optional[list[Optional[str]]]]:
    """:func:`run_block` with an :mod:`inferkit.aio` client; ``semaphore`` bounds the requests in flight (shared
    by every block the caller runs at once)."""

    async def one(request: Any) -> Any:
        async with semaphore:
            return await client.infer(request, headers=headers, timeout=timeout)

    results = list(await asyncio.gather(*(one(r) for r in block.requests), return_exceptions=True))
    for batch, result in enumerate(results):
        if isinstance(result, BaseException) and (on_error == "raise" or not isinstance(result, Exception)):
            raise _failed(block, result, batch)  # cancellation and interrupts are never a row's error
    out, errors = _finish(block, results, on_error, templates)
    if errors is not None and _missing(block, out, templates):
        fill_templates(await client.get_model_metadata(block.model_name), block.outputs, templates)
        out, errors = _finish(block, results, on_error, templates)
        if _missing(block, out, templates):
            raise _no_shape(block)
    return out, errors


# -- generate payloads: one per row ------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A column value as JSON-ready Python: numpy scalars as Python scalars, arrays as lists, bytes as text."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _objects(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    """A 1-D object array holding ``values`` as they are (a list stays one element, not a row of a 2-D array)."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


class GenerateRows:
    """Rows as generate payloads (``client.generate``, for LLM prompts), and the answers' fields as columns.

    Args:
        model_name: The model.
        inputs: ``{column: payload key}`` (or a list of names used for both): each row's values under those keys,
            e.g. ``{"prompt": "text_input"}``; a column may as well carry a per-row parameter (``max_tokens``).
        payload: Instead of ``inputs``: a function of one row (a dict of column -> Python value) returning its
            payload.
        parameters: Fixed keys added to every payload (``{"max_tokens": 64}``); a row's own keys win.
        outputs: ``{answer field: column}`` (or a list of fields used for both); each must be in every answer.
    """

    def __init__(
        self,
        model_name: str,
        inputs: Optional[Mapping[str, str]],
        payload: Optional[Callable[[dict[str, Any]], Mapping[str, Any]]],
        parameters: Optional[Mapping[str, Any]],
        outputs: Mapping[str, str],
    ) -> None:
        if (inputs is None) == (payload is None):
            raise ValueError("pass either inputs={column: payload key} or payload=<function of a row>, not both")
        if payload is not None and not callable(payload):
            raise ValueError(f"payload must be a function of a row returning a dict, got {type(payload).__name__}")
        if inputs is not None and not inputs:
            raise ValueError("inputs must name at least one column")
        if not outputs:
            raise ValueError("outputs must name at least one field of the answer (e.g. ['text_output'])")
        self.model_name = model_name
        self.inputs = None if inputs is None else dict(inputs)
        self.payload = payload
        self.parameters = dict(parameters or {})
        self.outputs = dict(outputs)

    def columns(self) -> list[str]:
        """The columns the payloads are made of (with a payload function: none in particular, it gets them all)."""
        return list(self.inputs or ())

    def payloads(self, columns: Mapping[str, np.ndarray[Any, Any]], rows: int) -> list[dict[str, Any]]:
        """One payload per row."""
        if self.inputs is not None:
            pairs = [(key, columns[column]) for column, key in self.inputs.items()]
            return [{**self.parameters, **{key: _plain(values[i]) for key, values in pairs}} for i in range(rows)]
        assert self.payload is not None
        made = []
        for i in range(rows):
            payload = self.payload({name: _plain(values[i]) for name, values in columns.items()})
            if not isinstance(payload, Mapping):
                raise EncodeError(
                    f"model {self.model_name!r}: the payload function returned {type(payload).__name__} for row {i}, "
                    "not a dict"
                )
            made.append({**self.parameters, **payload})
        return made

    def assemble(self, results: Sequence[Any]) -> tuple[dict[str, np.ndarray[Any, Any]], list[Optional[str]]]:
        """Output column -> object array (None in the rows that failed), and one error per row (None: answered)."""
        errors: list[Optional[str]] = [None] * len(results)
        values: dict[str, list[Any]] = {column: [None] * len(results) for column in self.outputs.values()}
        for i, result in enumerate(results):
            if isinstance(result, (BaseException, ItemError)):
                errors[i] = _describe(result.exception if isinstance(result, ItemError) else result)
                continue
            for field, column in self.outputs.items():
                if field not in result:
                    raise DecodeError(
                        f"model {self.model_name!r}: the answer has no field {field!r} (it has {sorted(result)}); "
                        "name the answer's fields in outputs=[...]"
                    )
                values[column][i] = result[field]
        return {column: _objects(v) for column, v in values.items()}, errors


def _row_failed(model_name: str, exc: BaseException, row: Optional[int]) -> BaseException:
    if isinstance(row, int) and sys.version_info >= (3, 11):
        exc.add_note(f"model {model_name!r}: the failed generate request was row {row} of the block")
    return exc


def run_generate(
    client: Any,
    rows: GenerateRows,
    payloads: Sequence[Mapping[str, Any]],
    *,
    concurrency: int,
    on_error: str,
    model_version: Optional[str] = None,
    timeout: Any = None,
    headers: Optional[Mapping[str, str]] = None,
) -> tuple[dict[str, np.ndarray[Any, Any]], Optional[list[Optional[str]]]]:
    """Send one payload per row with a sync client's ``generate_many`` (at most ``concurrency`` in flight, each
    under the client's retry policy); the output columns in row order and, with ``on_error="column"``, the errors."""
    column = on_error == "column"
    many = client.generate_many(
        rows.model_name,
        payloads,
        model_version=model_version,
        concurrency=concurrency,
        return_exceptions=column,
        timeout=timeout,
        headers=headers,
    )
    try:
        results = list(many)
    except Exception as exc:  # on_error="raise": the first failure, once the requests in flight have ended
        raise _row_failed(rows.model_name, exc, getattr(exc, "index", None))  # noqa: B904 - the same exception
    out, errors = rows.assemble(results)
    return out, (errors if column else None)


async def run_generate_async(
    client: Any,
    rows: GenerateRows,
    payloads: Sequence[Mapping[str, Any]],
    *,
    semaphore: asyncio.Semaphore,
    on_error: str,
    model_version: Optional[str] = None,
    timeout: Any = None,
    headers: Optional[Mapping[str, str]] = None,
) -> tuple[dict[str, np.ndarray[Any, Any]], Optional[list[Optional[str]]]]:
    """:func:`run_generate` with an :mod:`inferkit.aio` client; ``semaphore`` bounds the requests in flight (shared
    by every block the caller runs at once)."""

    async def one(payload: Mapping[str, Any]) -> Any:
        async with semaphore:
            return await client.generate(
                rows.model_name, payload, model_version=model_version, headers=headers, timeout=timeout
            )

    results = list(await asyncio.gather(*(one(p) for p in payloads), return_exceptions=True))
    for row, result in enumerate(results):
        if isinstance(result, BaseException) and (on_error == "raise" or not isinstance(result, Exception)):
            raise _row_failed(rows.model_name, result, row)  # cancellation and interrupts are never a row's error
    out, errors = rows.assemble(results)
    return out, (errors if on_error == "column" else None)
