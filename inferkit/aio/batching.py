"""Batch jobs for the async clients: ``infer_many`` and ``infer_batched`` over asyncio tasks.

Owns: :class:`AsyncBatchMixin` and the asyncio driver of the shared scheduler. Everything that is not I/O
(what to send next, the reorder buffer, hedging, splitting and stitching, error records) lives in
:mod:`inferkit.batching` (``results``, ``scheduler``, ``batched``) and is the same for sync and async.

Why here and not in ``inferkit/batching/``: the ``inferkit.aio`` namespace owns every asyncio code path (one
driver per I/O model, each in its own namespace), and the dependency points one way: this module imports the
transport-free layers of :mod:`inferkit.batching`, which never import ``inferkit.aio``.

Must not import: the sync transports (requests, urllib3, ``inferkit.rest_client``, ``inferkit.grpc_client``),
aiohttp or grpc (the work goes through ``self.infer``), nor tqdm at import time.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from inferkit.batching.batched import BatchedJob, OutputSpec
from inferkit.batching.results import make_progress_bar
from inferkit.batching.scheduler import HedgePolicy, _many_options, _Scheduler, generate_call
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.errors import ItemError

__all__ = ["AsyncBatchMixin", "AsyncInferManyIterator", "ItemError", "infer_many", "infer_batched"]

Requests = Union[Iterable[Any], AsyncIterable[Any]]


class AsyncInferManyIterator:
    """The async iterator ``infer_many`` returns.

    Leaving early (``break``, an exception, ``aclose()``, or leaving an ``async with`` block) stops taking
    requests and cancels the ones in flight. An ``async for`` that breaks does not close an async generator by
    itself (the event loop does, later, when it is garbage collected): use
    ``async with client.infer_many(...) as results:`` to stop the work at once.
    """

    def __init__(self, gen: AsyncIterator[Any]) -> None:
        self._gen = gen

    def __aiter__(self) -> AsyncInferManyIterator:
        return self

    async def __anext__(self) -> Any:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop: nothing more is sent, requests in flight are cancelled (returns once they have ended)."""
        await self._gen.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncInferManyIterator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _iterate_async(
    infer: Callable[[Any], Any],
    requests: Requests,
    *,
    concurrency: int,
    ordered: bool,
    return_exceptions: bool,
    progress: bool,
    hedge: HedgePolicy | None,
    total: int | None,
) -> AsyncIterator[Any]:
    sched = _Scheduler(concurrency, ordered, hedge)
    bar = make_progress_bar(progress, total)
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    if isinstance(requests, AsyncIterable):
        async_source: AsyncIterator[Any] | None = requests.__aiter__()
        sync_source = None
    else:
        async_source, sync_source = None, iter(requests)
    done: deque[tuple[int, bool, Any]] = deque()
    wake = asyncio.Event()
    running: dict[int, list[asyncio.Task[Any]]] = {}

    def finished(index: int, task: asyncio.Task[Any]) -> None:
        copies = running.get(index)
        if copies is not None:
            copies.remove(task)
            if not copies:
                del running[index]
        if task.cancelled():
            done.append((index, False, asyncio.CancelledError()))
        else:
            exc = task.exception()  # retrieved here, so an unwatched failure never warns
            done.append((index, True, task.result()) if exc is None else (index, False, exc))
        wake.set()

    def start(index: int, request: Any) -> None:
        task = loop.create_task(infer(request))
        task.add_done_callback(functools.partial(finished, index))
        running.setdefault(index, []).append(task)

    try:
        while True:
            sched.raise_failure(return_exceptions)
            while (hedged := sched.due_hedge(clock())) is not None:
                start(*hedged)
            while sched.can_pull():
                try:
                    if async_source is not None:
                        request = await async_source.__anext__()
                    else:
                        request = next(sync_source)  # type: ignore[arg-type]
                except (StopIteration, StopAsyncIteration):
                    sched.exhausted = True
                    break
                start(sched.add(request, clock()), request)
            for result in sched.hand_out(bar, return_exceptions):
                yield result
            if sched.finished:
                return
            if sched.in_flight == 0:
                continue
            if not done:
                wake.clear()
                deadline = sched.next_hedge_deadline()
                timer = None if deadline is None else loop.call_later(max(0.0, deadline - clock()), wake.set)
                try:
                    await wake.wait()
                finally:
                    if timer is not None:
                        timer.cancel()
            while done:
                index, ok, value = done.popleft()
                sched.complete(index, ok, value)
                if sched.is_resolved(index):
                    for loser in running.get(index, ()):
                        loser.cancel()  # the first answer won; its callback still reports, as a discarded copy
    finally:
        bar.close()
        tasks = [task for copies in running.values() for task in copies]
        for task in tasks:
            task.cancel()
        if tasks:
            # Cancellation is prompt for aiohttp and grpc.aio calls; wait so that no task outlives the iterator.
            await asyncio.wait(tasks)


def infer_many(
    infer: Callable[..., Any],
    requests: Requests,
    *,
    concurrency: int = 8,
    ordered: bool = True,
    return_exceptions: bool = False,
    progress: bool = False,
    timeout: Any = None,
    headers: Mapping[str, str] | None = None,
    hedge_after: float | None = None,
    hedge_budget: float = 0.1,
) -> AsyncInferManyIterator:
    """The function form of :meth:`AsyncBatchMixin.infer_many`, for any coroutine function with ``infer``'s
    signature. Arguments are validated here, before iteration starts."""
    options = _many_options(
        infer, requests, concurrency, ordered, return_exceptions, progress, timeout, headers, hedge_after, hedge_budget
    )
    return AsyncInferManyIterator(_iterate_async(**options))


async def infer_batched(
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
    """The function form of :meth:`AsyncBatchMixin.infer_batched`."""
    job = BatchedJob(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
    return await _collect(
        job, _iterate_async(**job.options(infer, concurrency, progress, timeout, headers, hedge_after, hedge_budget))
    )


async def _collect(job: BatchedJob, results: AsyncIterator[InferResponse]) -> dict[str, np.ndarray[Any, Any]]:
    """Stitch the responses of the asyncio driver (closed at once, whatever happens)."""
    try:
        async for response in results:
            job.add(response)
    except Exception as exc:
        raise job.failed(exc)  # noqa: B904 - the same exception, annotated with the failed batch's rows
    finally:
        await results.aclose()  # type: ignore[attr-defined]
    return job.result()


class AsyncBatchMixin:
    """``infer_many`` and ``infer_batched`` for an async client; needs only ``await self.infer(request, ...)``.

    Same parameters and guarantees as :class:`inferkit.batching.BatchMixin`; the requests in flight are asyncio
    tasks on the running loop (no threads), and stopping early or a hedge's lost race cancels them.
    """

    infer: Callable[..., Any]
    generate: Callable[..., Any]

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
    ) -> AsyncInferManyIterator:
        """``await generate(model_name, payload)`` for many payloads concurrently; an async iterator over the answers
        (see :meth:`inferkit.InferenceRESTClient.generate_many`)."""
        call = generate_call(self.generate, model_name, model_version)
        options = _many_options(
            call, payloads, concurrency, ordered, return_exceptions, progress, timeout, headers, None, 0.1
        )
        return AsyncInferManyIterator(_iterate_async(**options))

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
    ) -> AsyncInferManyIterator:
        """Run many requests concurrently; an async iterator over the results (``async for``).

        Args:
            requests: Any iterable or async iterable of :class:`InferRequest`, consumed lazily (at most
                ``2 * concurrency`` held at a time). A sync generator runs on the event loop: keep it cheap.
            concurrency: Most requests in flight at once (tasks), hedge copies included.
            ordered: True: responses in input order. False: ``(index, response)`` pairs as they complete.
            return_exceptions: True: a failed request yields an :class:`ItemError` in its place. False: the first
                failure cancels the requests in flight and is raised with ``.index`` set.
            progress: Show a tqdm progress bar (the ``progress`` extra).
            timeout: Passed to each ``infer`` call.
            headers: Passed to each ``infer`` call.
            hedge_after: Seconds after which an unanswered request gets a second copy (None: never); the first
                successful answer wins and the other copy is cancelled.
            hedge_budget: Most hedge copies as a fraction of requests (0.1: 10% extra at most).

        Returns:
            An async iterator that is also an async context manager.

        Raises:
            ValueError: Bad ``concurrency`` or hedging arguments (at the call).
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
        return AsyncInferManyIterator(_iterate_async(**options))

    async def infer_batched(
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
        """Split aligned arrays into requests of ``batch_size`` rows, run them, and stitch the outputs.

        Same arguments, result and errors as :meth:`inferkit.batching.BatchMixin.infer_batched`.
        """
        job = BatchedJob(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
        return await _collect(
            job,
            _iterate_async(
                **job.options(self.infer, concurrency, progress, timeout, headers, hedge_after, hedge_budget)
            ),
        )
