"""``infer_batched`` without its I/O: aligned arrays split into requests, the responses stitched back together.

Owns: :func:`split_batches` (validated eagerly, requests built lazily, slices without copies),
:func:`stitch_outputs` (each output concatenated along the first axis) and :class:`BatchedJob` (one
``infer_batched`` call: the requests for a driver, the stitching of its responses). Shared by the sync and the
asyncio clients.

Must not import: requests, urllib3, aiohttp, grpc, the drivers (``engines``, ``hedging``, ``mixin``,
``inferkit.aio``), nor tqdm.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

from inferkit.batching.scheduler import _many_options
from inferkit.codec.datatypes import dtype_to_datatype
from inferkit.codec.tensors import InferInput, InferRequest, InferRequestedOutput, InferResponse
from inferkit.errors import DecodeError, EncodeError

__all__ = ["BatchedJob", "OutputSpec", "split_batches", "stitch_outputs"]

OutputSpec = Union[str, InferRequestedOutput]


# -- splitting ---------------------------------------------------------------------------------------------------
class _Split:
    """Validated ``infer_batched`` arguments: how many rows and batches, and the requests (built lazily)."""

    def __init__(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        batch_size: int,
        outputs: Sequence[OutputSpec] | None = None,
        datatypes: Mapping[str, str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        model_version: str | None = None,
    ) -> None:
        if not isinstance(inputs, Mapping) or not inputs:
            raise EncodeError(
                f"model {model_name!r}: infer_batched needs inputs as a non-empty dict of input name -> numpy array"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EncodeError(f"model {model_name!r}: batch_size must be an integer >= 1, got {batch_size!r}")
        datatypes = dict(datatypes or {})
        unknown = sorted(set(datatypes) - set(inputs))
        if unknown:
            raise EncodeError(
                f"model {model_name!r}: datatypes given for {unknown}, which are not inputs ({sorted(inputs)})"
            )
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        rows: int | None = None
        first = ""
        for name, value in inputs.items():
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            if array.ndim == 0:
                raise EncodeError(
                    f"model {model_name!r}: input {name!r} is a scalar; infer_batched splits along the first axis, "
                    "so every input needs one (add a batch dimension, e.g. array[None])"
                )
            if rows is None:
                rows, first = int(array.shape[0]), name
            elif array.shape[0] != rows:
                raise EncodeError(
                    f"model {model_name!r}: inputs are not aligned along the first axis: {first!r} has {rows} rows "
                    f"but {name!r} has {array.shape[0]}; every input needs one row per example"
                )
            if name not in datatypes:
                try:
                    datatypes[name] = dtype_to_datatype(array.dtype)
                except EncodeError as exc:
                    raise EncodeError(
                        f"model {model_name!r}: input {name!r} has dtype {array.dtype}, which has no inference "
                        "datatype; convert the array or pass datatypes={name: ...}"
                    ) from exc
            arrays[name] = array
        self.model_name = model_name
        self.arrays = arrays
        self.rows = int(rows or 0)
        self.batch_size = batch_size
        self.batches = -(-self.rows // batch_size)
        self.datatypes = datatypes
        self.parameters = dict(parameters) if parameters else None
        self.model_version = model_version
        self.outputs = (
            None
            if outputs is None
            else [o if isinstance(o, InferRequestedOutput) else InferRequestedOutput(o) for o in outputs]
        )

    def bounds(self, batch: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of batch number ``batch``."""
        start = batch * self.batch_size
        return start, min(start + self.batch_size, self.rows)

    def requests(self) -> Iterator[InferRequest]:
        """One request per batch, built when pulled (slices are views: no copy before encoding)."""
        for batch in range(self.batches):
            start, stop = self.bounds(batch)
            tensors = []
            for name, array in self.arrays.items():
                part = array[start:stop]
                tensor = InferInput(name, part.shape, self.datatypes[name])
                tensor.set_data_from_numpy(part)
                tensors.append(tensor)
            yield InferRequest(
                self.model_name,
                tensors,
                parameters=self.parameters,
                outputs=self.outputs,
                model_version=self.model_version,
            )

    def annotate(self, exc: BaseException) -> BaseException:
        """Say which rows the failed batch held."""
        index = getattr(exc, "index", None)
        if isinstance(index, int) and sys.version_info >= (3, 11):
            start, stop = self.bounds(index)
            exc.add_note(f"infer_batched: batch #{index} held rows {start}:{stop} of model {self.model_name!r}")
        return exc


def split_batches(
    model_name: str,
    inputs: Mapping[str, Any],
    batch_size: int,
    outputs: Sequence[OutputSpec] | None = None,
    datatypes: Mapping[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    model_version: str | None = None,
) -> Iterator[InferRequest]:
    """Split arrays aligned along axis 0 into requests of ``batch_size`` rows (the last one may be shorter).

    Validates eagerly (EncodeError naming the model and tensor); builds each request lazily.
    """
    return _Split(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version).requests()


# -- stitching ---------------------------------------------------------------------------------------------------
class _Stitcher:
    """Collects responses in order and concatenates each output along axis 0."""

    def __init__(self, model_name: str, wanted: Sequence[str] | None) -> None:
        self.model_name = model_name
        self.wanted = list(wanted) if wanted is not None else None
        self.parts: Dict[str, list[np.ndarray[Any, Any]]] = {}
        self.count = 0

    def add(self, response: InferResponse) -> None:
        names = self.wanted if self.wanted is not None else [o.name for o in response.outputs]
        if self.count == 0:
            self.parts = {name: [] for name in names}
        elif set(names) != set(self.parts):
            raise DecodeError(
                f"model {self.model_name!r}: batch #{self.count} returned outputs {sorted(names)} but earlier "
                f"batches returned {sorted(self.parts)}; cannot stitch them"
            )
        for name in names:
            try:
                self.parts[name].append(response.as_numpy(name))
            except KeyError as exc:
                raise DecodeError(f"model {self.model_name!r}: batch #{self.count} has no output {name!r}") from exc
        self.count += 1

    def result(self) -> dict[str, np.ndarray[Any, Any]]:
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name, parts in self.parts.items():
            try:
                out[name] = parts[0].copy() if len(parts) == 1 else np.concatenate(parts, axis=0)
            except ValueError as exc:
                raise DecodeError(
                    f"model {self.model_name!r}: output {name!r} cannot be concatenated along the first axis "
                    f"(shapes {[list(p.shape) for p in parts[:4]]}...): {exc}"
                ) from exc
        return out


def _output_names(outputs: Sequence[OutputSpec] | None) -> list[str] | None:
    if outputs is None:
        return None
    return [o.name if isinstance(o, InferRequestedOutput) else o for o in outputs]


def stitch_outputs(
    model_name: str, responses: Iterable[InferResponse], outputs: Sequence[OutputSpec] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """Concatenate each output of ``responses`` (in order) along the first axis into one array per output."""
    stitcher = _Stitcher(model_name, _output_names(outputs))
    for response in responses:
        stitcher.add(response)
    return stitcher.result()


class BatchedJob:
    """One ``infer_batched`` call without its I/O: validated arguments, the requests to send (via :meth:`options`,
    for a driver), and the stitching of the responses (:meth:`add`, :meth:`result`, :meth:`failed`)."""

    def __init__(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        batch_size: int,
        outputs: Sequence[OutputSpec] | None,
        datatypes: Mapping[str, str] | None,
        parameters: Mapping[str, Any] | None,
        model_version: str | None,
    ) -> None:
        self.split = _Split(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
        self.stitcher = _Stitcher(model_name, _output_names(outputs))

    def options(
        self,
        infer: Callable[..., Any],
        concurrency: int,
        progress: bool,
        timeout: Any,
        headers: Mapping[str, str] | None,
        hedge_after: float | None,
        hedge_budget: float,
    ) -> dict[str, Any]:
        """A driver's keyword arguments: the batches in order, failing fast."""
        rest = (concurrency, True, False, progress, timeout, headers, hedge_after, hedge_budget, self.split.batches)
        return _many_options(infer, self.split.requests(), *rest)

    def collect(self, results: Iterable[InferResponse]) -> dict[str, np.ndarray[Any, Any]]:
        """Stitch the responses of a sync driver; a failed batch is re-raised with a note naming its rows."""
        try:
            for response in results:
                self.add(response)
        except Exception as exc:
            raise self.failed(exc)  # noqa: B904 - the same exception, annotated with the failed batch's rows
        return self.result()

    def add(self, response: InferResponse) -> None:
        """The next batch's response, in order."""
        self.stitcher.add(response)

    def failed(self, exc: BaseException) -> BaseException:
        """``exc`` (a failed batch) with a note naming its rows, to re-raise."""
        self.split.annotate(exc)
        return exc

    def result(self) -> dict[str, np.ndarray[Any, Any]]:
        """Output name -> the batches' outputs concatenated along the first axis."""
        return self.stitcher.result()
