"""The sync entry points of batch jobs: :class:`BatchMixin` for the clients, the function forms, and pickling.

Owns: :class:`BatchMixin` (``infer_many`` and ``infer_batched`` for the sync clients, written only in terms of
``self.infer`` and, where a client has one, its non-blocking start), the function forms :func:`infer_many` and
:func:`infer_batched` (for any callable with ``infer``'s signature), ``_iterate_sync`` (the pooled driver, or
with hedging the hedged one), and :class:`RebuildOnUnpickle` (clients pickle as their constructor arguments).

Must not import: requests, urllib3, aiohttp, grpc (the work goes through ``self.infer``), the clients (they
import this module), ``inferkit.aio``, nor tqdm at import time.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Generator, Iterable, Mapping, Optional, Sequence, TypeVar

import numpy as np

from inferkit.batching.batched import BatchedJob, OutputSpec
from inferkit.batching.engines import StartFn, _iterate_pooled
from inferkit.batching.hedging import _iterate_hedged
from inferkit.batching.results import InferManyIterator
from inferkit.batching.scheduler import HedgePolicy, _many_options, generate_call
from inferkit.codec.tensors import InferRequest

__all__ = ["BatchMixin", "RebuildOnUnpickle", "infer_batched", "infer_many"]


# -- the sync driver and the function forms ----------------------------------------------------------------------
def _iterate_sync(
    infer: Callable[[Any], Any],
    requests: Iterable[Any],
    *,
    hedge: HedgePolicy | None,
    start: StartFn | None = None,
    scope: Callable[[], Any] | None = None,
    **common: Any,
) -> Generator[Any, None, None]:
    """The sync driver for :func:`_many_options`' arguments: :func:`_iterate_pooled`, or with hedging
    :func:`_iterate_hedged` (``common``: concurrency, ordered, return_exceptions, progress, total)."""
    if hedge is None:
        return _iterate_pooled(infer, requests, start=start, scope=scope, **common)
    return _iterate_hedged(infer, requests, hedge=hedge, start=start, scope=scope, **common)


def infer_many(
    infer: Callable[..., Any],
    requests: Iterable[Any],
    *,
    concurrency: int = 8,
    ordered: bool = True,
    return_exceptions: bool = False,
    progress: bool = False,
    timeout: Any = None,
    headers: Mapping[str, str] | None = None,
    hedge_after: float | None = None,
    hedge_budget: float = 0.1,
) -> InferManyIterator[Any]:
    """Run ``infer(request, headers=..., timeout=...)`` over many requests from a thread pool.

    The function form of :meth:`BatchMixin.infer_many`, for any callable with the client's ``infer`` signature.
    Arguments are validated here, before iteration starts.
    """
    options = _many_options(
        infer, requests, concurrency, ordered, return_exceptions, progress, timeout, headers, hedge_after, hedge_budget
    )
    return InferManyIterator(_iterate_sync(**options))


def infer_batched(
    infer: Callable[..., Any],
    model_name: str,
    inputs: Mapping[str, Any],
    batch_size: int,
    outputs: Sequence[OutputSpec] | None = None,
    concurrency: int = 8,
    datatypes: Mapping[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    model_version: str | None = None,
    *,
    progress: bool = False,
    timeout: Any = None,
    headers: Mapping[str, str] | None = None,
    hedge_after: float | None = None,
    hedge_budget: float = 0.1,
) -> dict[str, np.ndarray[Any, Any]]:
    """The function form of :meth:`BatchMixin.infer_batched`, for any callable with ``infer``'s signature."""
    job = BatchedJob(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
    results = _iterate_sync(**job.options(infer, concurrency, progress, timeout, headers, hedge_after, hedge_budget))
    return job.collect(results)


# -- the mixin ---------------------------------------------------------------------------------------------------
class BatchMixin:
    """``infer_many`` and ``infer_batched`` for a sync client; needs only ``self.infer(request, headers, timeout)``.

    The client is shared by every worker thread (clients are thread-safe), so its connection pool should have at
    least ``concurrency`` connections (``RESTConfig.max_connections``, 256 by default).
    """

    infer: Callable[..., Any]
    generate: Callable[..., Any]
    #: A factory of cancel scopes for requests run on worker threads (the REST client's ``CancelScope``: leaving
    #: early or a losing hedge copy closes that request's connection); None: they cannot be cancelled.
    _many_scope: Optional[Callable[[], Any]] = None

    def infer_many(
        self,
        requests: Iterable[InferRequest],
        concurrency: int = 8,
        ordered: bool = True,
        return_exceptions: bool = False,
        progress: bool = False,
        timeout: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        hedge_after: Optional[float] = None,
        hedge_budget: float = 0.1,
    ) -> InferManyIterator[Any]:
        """Run many requests concurrently; an iterator over the results.

        Args:
            requests: Any iterable of :class:`InferRequest`, consumed lazily (a generator of millions is fine: at
                most ``2 * concurrency`` requests are held at a time).
            concurrency: Most requests in flight at once (the number of worker threads), hedge copies included.
            ordered: True: yield responses in input order (a bounded reorder buffer waits for slow ones).
                False: yield ``(index, response)`` pairs as they complete.
            return_exceptions: True: a failed request yields an :class:`ItemError` (``.index``, ``.exception``,
                ``.request``) in its place (as ``(index, ItemError)`` when unordered). False: the first failure
                stops submitting, waits for the requests in flight and is raised with ``.index`` set.
            progress: Show a tqdm progress bar (the ``progress`` extra).
            timeout: Passed to each ``infer`` call (per request; retries and deadlines are the client's).
            headers: Passed to each ``infer`` call.
            hedge_after: Seconds after which a request still unanswered gets a second copy (None: never).
                See :class:`HedgePolicy`; the losing copy is cancelled (on worker threads: run to its end and
                discarded).
            hedge_budget: Most hedge copies as a fraction of requests (0.1: 10% extra at most).

        Returns:
            An iterator (also a context manager); closing it stops the work and joins the worker threads.

        Raises:
            ValueError: Bad ``concurrency`` or hedging arguments (at the call, before any request is sent).
            ImportError: ``progress=True`` without tqdm.
        """
        options = _many_options(
            self.infer,
            requests,
            concurrency,
            ordered,
            return_exceptions,
            progress,
            timeout,
            headers,
            hedge_after,
            hedge_budget,
        )
        start = self._starter(headers, timeout, options)
        return InferManyIterator(_iterate_sync(**options, start=start, scope=self._many_scope))

    def generate_many(
        self,
        model_name: str,
        payloads: Iterable[Mapping[str, Any]],
        model_version: Optional[str] = None,
        concurrency: int = 8,
        ordered: bool = True,
        return_exceptions: bool = False,
        progress: bool = False,
        timeout: Any = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> InferManyIterator[Any]:
        """Run ``generate(model_name, payload)`` for many payloads concurrently; an iterator over the answers (dicts).

        The batch job of LLM users: ``concurrency``, ``ordered``, ``return_exceptions`` (an :class:`ItemError` whose
        ``.request`` is the payload), ``progress`` and the early exit work as in :meth:`infer_many`.
        """
        call = generate_call(self.generate, model_name, model_version)
        options = _many_options(
            call, payloads, concurrency, ordered, return_exceptions, progress, timeout, headers, None, 0.1
        )
        return InferManyIterator(_iterate_sync(**options, scope=self._many_scope))

    def _starter(self, headers: Optional[Mapping[str, str]], timeout: Any, options: dict[str, Any]) -> StartFn | None:
        """The client's non-blocking start, bound to the call's headers and timeout; None: worker threads.

        ``options`` come from :func:`_many_options`. The client's ``_many_starter(headers, timeout, concurrency)``
        makes it (gRPC futures); None means worker threads (each in a ``_many_scope`` when the client has one),
        and a start with a ``close(graceful)`` is closed when the driver stops.
        """
        make = getattr(self, "_many_starter", None)
        if make is None:
            return None
        start: StartFn | None = make(headers, timeout, options["concurrency"])
        return start

    def infer_batched(
        self,
        model_name: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        batch_size: int,
        outputs: Optional[Sequence[OutputSpec]] = None,
        concurrency: int = 8,
        datatypes: Optional[Mapping[str, str]] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        model_version: Optional[str] = None,
        progress: bool = False,
        timeout: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        hedge_after: Optional[float] = None,
        hedge_budget: float = 0.1,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Infer over arrays of any length: split them into requests of ``batch_size`` rows, stitch the outputs.

        Args:
            model_name: The model to run.
            inputs: Input name -> array; every array has the same length along the first axis (one row per
                example). Slices are sent without copying.
            batch_size: Rows per request (the last request may have fewer).
            outputs: Output names (or :class:`InferRequestedOutput`) to ask for and return; None: all of them.
            concurrency: Requests in flight at once.
            datatypes: Input name -> protocol datatype, where the array's dtype does not say it (e.g. ``"BF16"``).
            parameters: Request parameters sent with every batch.
            model_version: A specific model version.
            progress, timeout, headers, hedge_after, hedge_budget: As for :meth:`infer_many`.

        Returns:
            Output name -> one array: the batches' outputs concatenated along the first axis, in order.
            Zero rows give an empty dict (nothing is sent).

        Raises:
            EncodeError: Inputs not aligned along the first axis, a scalar input, an unknown dtype, a bad
                ``batch_size``: before anything is sent.
            DecodeError: Batches returned different outputs, or outputs that cannot be concatenated.
            InferkitError: The first failed batch, with ``.index`` (the batch number) and a note naming its rows.
        """
        job = BatchedJob(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
        options = job.options(self.infer, concurrency, progress, timeout, headers, hedge_after, hedge_budget)
        results = _iterate_sync(**options, start=self._starter(headers, timeout, options), scope=self._many_scope)
        return job.collect(results)


# -- pickling ----------------------------------------------------------------------------------------------------
class RebuildOnUnpickle:
    """Pickle a client as its constructor arguments; unpickling builds a new client (new connections).

    A client holds sockets, pools and locks, none of which can cross a process boundary, but the arguments it
    was built from can (URL, ``RESTConfig``, gRPC options). Each subclass's ``__init__`` (its own or the one it
    inherits) is wrapped once, when the subclass is defined, to record the arguments of the outermost call;
    ``__reduce__`` returns them. The wrapper keeps the real signature (``inspect.signature`` shows it) and type
    checkers see the class's own ``__init__``, so ``InferenceRESTClient(...)`` is typed as the client. Arguments
    that cannot be pickled (a custom ``requests`` adapter, ``grpc.ChannelCredentials``) make pickling fail with
    pickle's own error naming the type: pass picklable settings (paths, PEM bytes) instead.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__init__
        if getattr(init, _RECORDS_ARGS, False):
            return  # inherited from a class already wrapped: it records the arguments
        cls.__init__ = _recording_init(init)  # type: ignore[method-assign]

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = getattr(self, _INIT_ARGS, ((), {}))
        return (_rebuild_client, (type(self), args, kwargs))


_INIT_ARGS = "_inferkit_init_args"
_RECORDS_ARGS = "_inferkit_records_args"
_Init = TypeVar("_Init", bound=Callable[..., None])


def _recording_init(init: _Init) -> _Init:
    """``init`` that first records its arguments on the instance (once: a subclass's call records, the
    ``super().__init__`` calls it makes do not), for :meth:`RebuildOnUnpickle.__reduce__`."""

    @functools.wraps(init)  # __wrapped__: inspect.signature(cls) shows init's parameters
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if _INIT_ARGS not in self.__dict__:
            # Stored on the instance (not a slot) so that clients need no field of their own.
            object.__setattr__(self, _INIT_ARGS, (args, dict(kwargs)))
        init(self, *args, **kwargs)

    setattr(__init__, _RECORDS_ARGS, True)
    return __init__  # type: ignore[return-value]


def _rebuild_client(cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)
