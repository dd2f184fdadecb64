"""Batch jobs: many inference requests through one client, concurrently, in bounded memory.

The package re-exports the names the clients, :mod:`inferkit.aio.batching` and user code import from
``inferkit.batching``. Its modules, bottom layer first (each imports only the ones above it in this list):

* :mod:`~inferkit.batching.results`: how an outcome reaches the caller (:class:`~inferkit.errors.ItemError` or
  the exception with ``.index``), the progress bar, :class:`InferManyIterator`;
* :mod:`~inferkit.batching.scheduler`: :class:`HedgePolicy` and the scheduler (what to send and hand out next,
  no I/O), shared by the sync and asyncio drivers;
* :mod:`~inferkit.batching.batched`: splitting aligned arrays into requests and stitching the outputs back;
* :mod:`~inferkit.batching.engines`: the sync driver without hedging (worker threads, or requests started
  without blocking);
* :mod:`~inferkit.batching.hedging`: the sync driver with hedging;
* :mod:`~inferkit.batching.mixin`: :class:`BatchMixin`, the function forms, :class:`RebuildOnUnpickle`.

The asyncio driver is :mod:`inferkit.aio.batching` (the async namespace owns every asyncio code path); it imports
``results``, ``scheduler`` and ``batched`` from here, and nothing here imports it. ``import inferkit`` does not
import this package: the clients do.

Must not import: requests, urllib3, aiohttp, grpc (the work goes through ``self.infer``), ``inferkit.aio``, nor
tqdm at import time (it loads when ``progress=True``; it is the ``progress`` extra).

Guarantees of ``infer_many`` (sync and async alike):

* the input iterable is pulled lazily: at most ``2 * concurrency`` requests are held at any time (in flight, or
  answered and waiting in the reorder buffer for an earlier one);
* at most ``concurrency`` requests are in flight, hedge copies included;
* ordered (default): results come in input order; unordered: ``(index, result)`` pairs as they complete;
* ``return_exceptions=False``: the first failure stops submitting, waits for (sync) or cancels (async) the
  requests in flight, and is raised with ``.index`` set to the failed request's position;
  ``return_exceptions=True``: a failed request yields an :class:`ItemError` in its place;
* retries, timeouts and deadlines stay with the client, per request.
"""

from __future__ import annotations

# The names after "as" are re-exported for the clients and inferkit.aio.batching (not part of __all__).
from inferkit.batching.batched import BatchedJob as BatchedJob
from inferkit.batching.batched import OutputSpec as OutputSpec
from inferkit.batching.batched import split_batches, stitch_outputs
from inferkit.batching.engines import StartFn as StartFn
from inferkit.batching.engines import no_cancel as no_cancel
from inferkit.batching.engines import settle as settle
from inferkit.batching.mixin import BatchMixin, RebuildOnUnpickle, infer_batched, infer_many
from inferkit.batching.results import InferManyIterator
from inferkit.batching.results import Outcome as Outcome
from inferkit.batching.results import make_progress_bar as make_progress_bar
from inferkit.batching.scheduler import HedgePolicy
from inferkit.batching.scheduler import _many_options as _many_options
from inferkit.batching.scheduler import _Scheduler as _Scheduler
from inferkit.errors import ItemError

__all__ = [
    "BatchMixin",
    "ItemError",
    "InferManyIterator",
    "HedgePolicy",
    "RebuildOnUnpickle",
    "infer_many",
    "infer_batched",
    "split_batches",
    "stitch_outputs",
]
