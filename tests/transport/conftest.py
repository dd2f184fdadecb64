"""Fixtures of the batch-job tests (test_batching, test_aio_batching, test_rest_mux): one reference server with
the probe, hedge and add_sub models per module, reset around every test."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.transport._batch_support import BatchServer


@pytest.fixture(scope="module")
def batch_server() -> Iterator[BatchServer]:
    with BatchServer() as server:
        yield server


@pytest.fixture
def bs(batch_server: BatchServer) -> Iterator[BatchServer]:
    batch_server.reset()
    yield batch_server
    batch_server.hedge.release.set()
    batch_server.reset()
