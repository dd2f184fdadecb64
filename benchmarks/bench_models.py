"""Models for the batch-job benchmark, served in their own process by ``inferkit serve``.

Owns: ``make_models()``, the factory that ``inferkit serve benchmarks.bench_models:make_models`` loads:

* ``add_sub``: the standard test model (INT32 [1,16] x 2), answered at once: the throughput comparison, where
  the client's own cost per request is what differs between the variants.
* ``tail``: one input ``INPUT0`` (INT32 [-1,16]) echoed as ``OUTPUT0``. Every call sleeps ``TAIL_BASE_S``
  (1 ms), and every ``TAIL_EVERY``-th call (50th) sleeps ``TAIL_DELAY_S`` (80 ms) instead. The choice is made by a
  counter of calls in the server process, not by the request's content, so a hedged second copy of a delayed
  request is a different call and is normally fast, as with a server that stalls now and then (a GC pause, a
  noisy neighbour) rather than a request that is slow by nature.

Must not import: the inferkit clients (this module runs inside the server process).

Run by hand::

    python -m inferkit.cli serve benchmarks.bench_models:make_models --http-port 0 --grpc-port 0
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from inferkit.testing import Model, TensorSpec
from inferkit.testing.models import add_sub_model

TAIL_EVERY = 50
TAIL_BASE_S = 0.001
TAIL_DELAY_S = 0.080

# itertools.count's __next__ is atomic under the GIL: the server runs model calls on several threads.
_calls = itertools.count(1)


def tail(inputs: dict[str, np.ndarray[Any, Any]], parameters: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Echo ``INPUT0``; 1 ms per call, 80 ms for every 50th call (by arrival order in this process)."""
    slow = next(_calls) % TAIL_EVERY == 0
    time.sleep(TAIL_DELAY_S if slow else TAIL_BASE_S)
    return {"OUTPUT0": inputs["INPUT0"]}


def make_models() -> list[Model]:
    """The benchmark's models: ``add_sub`` and ``tail``."""
    return [
        add_sub_model(),
        Model(
            "tail",
            tail,
            inputs=[TensorSpec("INPUT0", "INT32", [-1, 16])],
            outputs=[TensorSpec("OUTPUT0", "INT32", [-1, 16])],
        ),
    ]
