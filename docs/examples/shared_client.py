"""One inference client per process, shared by every request of a web app (used by flask_app.py and django_app.py).

A client owns a connection pool and is thread-safe: build it once and let every view, on every worker thread,
call it. Building a client per request throws the pool away each time (a new TCP and TLS handshake per call).

The client is created lazily, on first use, and again in a child process after ``fork()`` (gunicorn and uWSGI
fork their workers after importing the app, and a pool must never be shared across processes).

Configuration comes from the environment:

    INFERKIT_URL      the model server, e.g. http://triton:8000 (default http://127.0.0.1:8000)
    INFERKIT_MODEL    the classifier to call (default "iris": 4 FP32 features in, a BYTES "label" out)
"""

from __future__ import annotations

import os
import threading
from typing import Optional, Sequence

import numpy as np

from inferkit import InferenceRESTClient, InferInput, InferRequest, InferRequestedOutput, RESTConfig, Timeout

_lock = threading.Lock()
_client: Optional[InferenceRESTClient] = None
_client_pid = -1

# Interactive traffic: fail fast on connect, leave the model time to answer, retry transient failures twice.
CONFIG = RESTConfig(timeout=Timeout(connect=2, read=30, write=10, pool=5), retries=2, pool_maxsize=64)


def get_client() -> InferenceRESTClient:
    """The process-wide client (created on first call, and again after a fork)."""
    global _client, _client_pid
    client = _client
    if client is not None and _client_pid == os.getpid():
        return client
    with _lock:
        if _client is None or _client_pid != os.getpid():
            _client = InferenceRESTClient(os.environ.get("INFERKIT_URL", "http://127.0.0.1:8000"), config=CONFIG)
            _client_pid = os.getpid()
        return _client


def classify(rows: Sequence[Sequence[float]]) -> list[str]:
    """Classify rows of 4 measurements; returns one label per row.

    Raises:
        ValueError: The rows are not a non-empty list of 4 numbers each (the caller's fault: answer 400).
        inferkit.errors.InferkitError: The model server failed (answer 502/503).
    """
    features = np.asarray(rows, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] != 4:
        raise ValueError(f"expected a list of rows of 4 numbers, got shape {list(features.shape)}")
    x = InferInput("input", list(features.shape), "FP32").set_data_from_numpy(features)
    request = InferRequest(os.environ.get("INFERKIT_MODEL", "iris"), [x], outputs=[InferRequestedOutput("label")])
    response = get_client().infer(request)
    return [label.decode() for label in response.as_numpy("label").tolist()]


def close() -> None:
    """Close the shared client (at shutdown, or between tests)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
            _client = None
