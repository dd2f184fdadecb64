"""What the caller of a batch job receives: each outcome presented, the progress bar, and the sync iterator.

Owns: :data:`Outcome` (a finished request as the scheduler hands it out), how an outcome reaches the caller (the
response, an :class:`~inferkit.errors.ItemError` in its place, or the exception raised with ``.index`` set),
the optional tqdm progress bar, and :class:`InferManyIterator` (what the sync ``infer_many`` returns). Shared by
the sync and the asyncio drivers, except the iterator (sync only).

Must not import: requests, urllib3, aiohttp, grpc, the other ``inferkit.batching`` modules (this is their bottom
layer), nor tqdm at import time (it loads when ``progress=True``; it is the ``progress`` extra).
"""

from __future__ import annotations

import sys
from typing import Any, Generator, Generic, Tuple, TypeVar

from inferkit.errors import ItemError

__all__ = ["InferManyIterator", "Outcome", "make_progress_bar"]

T = TypeVar("T")
Outcome = Tuple[int, bool, Any, Any]  # (index, ok, response or exception, request)


def _mark_failed(exc: BaseException, index: int, what: str = "request") -> BaseException:
    """Say on the exception itself which input failed (``.index`` and, on Python 3.11+, a note)."""
    try:
        exc.index = index  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # an exception type that refuses new attributes keeps its own story
        pass
    if sys.version_info >= (3, 11):
        exc.add_note(
            f"infer_many: {what} #{index} failed; the others were stopped "
            "(pass return_exceptions=True to get an ItemError per failed request instead)"
        )
    return exc


def _present(outcome: Outcome, ordered: bool, return_exceptions: bool) -> Any:
    index, ok, value, request = outcome
    if ok:
        result = value
    elif return_exceptions:
        result = ItemError(index, value, request)
    else:
        raise _mark_failed(value, index)
    return result if ordered else (index, result)


# -- progress bar ------------------------------------------------------------------------------------------------
class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress_bar(progress: bool, total: int | None, desc: str = "infer") -> Any:
    """A tqdm bar when ``progress`` (ImportError naming the ``progress`` extra when tqdm is missing)."""
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415 - optional dependency, loaded only when asked for
    except ImportError as exc:
        raise ImportError("progress=True needs tqdm: pip install 'inferkit[progress]'") from exc
    return tqdm(total=total, unit="req", desc=desc, dynamic_ncols=True)


# -- the sync iterator ------------------------------------------------------------------------------------------
class InferManyIterator(Generic[T]):
    """The iterator ``infer_many`` returns: results as they become available, in bounded memory.

    Leaving early (``break``, an exception, ``close()``, or leaving a ``with`` block) stops taking requests from
    the input, cancels the requests in flight (on worker threads, a blocking call cannot be interrupted and is
    waited for; the client's timeout bounds it) and joins every thread of the job, so none outlives the
    iteration. A ``for`` loop over the call itself
    closes it on ``break``; if you keep a reference, use ``with client.infer_many(...) as results:``.
    """

    def __init__(self, gen: Generator[T, None, None]) -> None:
        self._gen = gen

    def __iter__(self) -> InferManyIterator[T]:
        return self

    def __next__(self) -> T:
        return next(self._gen)

    def close(self) -> None:
        """Stop: nothing more is sent; returns once the requests in flight have returned."""
        self._gen.close()

    def __enter__(self) -> InferManyIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
