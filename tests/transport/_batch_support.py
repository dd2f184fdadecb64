"""Models and helpers shared by the sync and async batch-job tests (test_batching, test_aio_batching).

``probe``: OUTPUT0 = 2 * INPUT0 (INT64), records how many calls run at once (server side), sleeps ``delay``
seconds (request parameter) plus ``jitter`` * (a pseudo-random 0..4 from the first value) so answers come back
out of order, and fails with 400 when any value is negative.
``hedge``: OUTPUT0 = INPUT0 and ATTEMPT = how many times this value has been seen; the first call for a value
blocks until ``release`` is set (bounded), later calls answer at once: a hedge copy always wins.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import numpy as np

from inferkit import InferInput, InferRequest
from inferkit.testing import Model, ModelError, ReferenceServer, TensorSpec, interruptible_sleep
from inferkit.testing.models import add_sub_model


class Probe:
    """Server-side record of the probe model's calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current = 0
        self.max_seen = 0
        self.calls = 0

    def reset(self) -> None:
        with self.lock:
            self.current = self.max_seen = self.calls = 0

    def model(self) -> Model:
        def probe(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
            with self.lock:
                self.current += 1
                self.calls += 1
                self.max_seen = max(self.max_seen, self.current)
            try:
                values = inputs["INPUT0"]
                delay = float(parameters.get("delay", 0.0))
                jitter = float(parameters.get("jitter", 0.0))
                if jitter and values.size:
                    delay += jitter * ((int(values.reshape(-1)[0]) * 7919) % 5)
                if delay:
                    interruptible_sleep(delay)
                if (values < 0).any():
                    raise ModelError(400, f"probe: negative input {values.reshape(-1)[:4].tolist()}")
                return {"OUTPUT0": values * 2}
            finally:
                with self.lock:
                    self.current -= 1

        spec = [-1]
        return Model(
            "probe", probe, inputs=[TensorSpec("INPUT0", "INT64", spec)], outputs=[TensorSpec("OUTPUT0", "INT64", spec)]
        )


class Hedge:
    """Server-side state of the hedge model."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[int, int] = {}
        self.waiting: set[int] = set()  # values whose first call is blocked, waiting for `release`
        self.release = threading.Event()

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()
        self.release.clear()

    def model(self) -> Model:
        def hedge(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
            key = int(inputs["INPUT0"].reshape(-1)[0])
            with self.lock:
                attempt = self.seen[key] = self.seen.get(key, 0) + 1
            if attempt == 1 and not parameters.get("fast"):
                with self.lock:
                    self.waiting.add(key)
                try:
                    self.release.wait(5.0)  # bounded: the test releases it as soon as it has its answer
                finally:
                    with self.lock:
                        self.waiting.discard(key)
            return {"OUTPUT0": inputs["INPUT0"], "ATTEMPT": np.array([attempt], dtype=np.int64)}

        return Model(
            "hedge",
            hedge,
            inputs=[TensorSpec("INPUT0", "INT64", [-1])],
            outputs=[TensorSpec("OUTPUT0", "INT64", [-1]), TensorSpec("ATTEMPT", "INT64", [1])],
        )


class BatchServer:
    """A reference server with the probe, hedge and add_sub models, and their server-side records."""

    def __init__(self) -> None:
        self.probe = Probe()
        self.hedge = Hedge()
        self.server = ReferenceServer(
            [self.probe.model(), self.hedge.model(), add_sub_model()], grpc=True, max_workers=16
        )

    def __enter__(self) -> BatchServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hedge.release.set()
        self.server.stop()

    def reset(self) -> None:
        self.server.reset()
        self.probe.reset()
        self.hedge.reset()


def probe_request(value: int, **parameters: Any) -> InferRequest:
    """A probe request for one value (INPUT0 = [value])."""
    x = InferInput("INPUT0", [1], "INT64").set_data_from_numpy(np.array([value], dtype=np.int64))
    return InferRequest("probe", [x], parameters=parameters or None)  # type: ignore[list-item]


def value_of(response: Any) -> int:
    """The probe's answer for a one-value request."""
    return int(response.as_numpy("OUTPUT0")[0])


class CountingSource:
    """An endless request source that counts how many requests were pulled from it."""

    def __init__(self, **parameters: Any) -> None:
        self.pulled = 0
        self.parameters = parameters

    def __iter__(self) -> Iterator[InferRequest]:
        while True:
            request = probe_request(self.pulled, **self.parameters)
            self.pulled += 1
            yield request


def batch_threads() -> list[threading.Thread]:
    """infer_many's threads still alive (its worker threads)."""
    prefixes = ("inferkit-infer-many",)
    return [t for t in threading.enumerate() if t.name.startswith(prefixes)]
