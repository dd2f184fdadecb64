"""pytest fixtures for users of inferkit (registered through the ``pytest11`` entry point ``inferkit``).

Fixtures:
    ``inferkit_server``: a running :class:`~inferkit.testing.ReferenceServer` with the demo models (one per
        session, REST and gRPC), reset (faults, counters, statistics, unloaded models) before and after each test.
    ``inferkit_server_factory``: ``make(models, **kwargs) -> ReferenceServer``: start servers of your own
        (TLS, auth, custom models); every server it made is stopped at the end of the test.

Example::

    def test_my_service(inferkit_server):
        client = InferenceRESTClient(inferkit_server.http_url)
        assert client.is_model_ready("iris")

This module is imported by every pytest run in an environment where inferkit is installed, so it imports
nothing heavy at module level: aiohttp, grpc and the models load when a fixture is first used.
Must not import at module level: aiohttp, grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pytest

if TYPE_CHECKING:
    from inferkit.testing import Model, ReferenceServer

__all__ = ["inferkit_server", "inferkit_server_factory"]


@pytest.fixture(scope="session")
def _inferkit_session_server() -> Iterator[ReferenceServer]:
    from inferkit.testing import ReferenceServer  # noqa: PLC0415 - loaded on first use
    from inferkit.testing.models import demo_models  # noqa: PLC0415

    server = ReferenceServer(demo_models(), grpc=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def inferkit_server(_inferkit_session_server: ReferenceServer) -> Iterator[ReferenceServer]:
    """A running reference server with the demo models, reset around the test."""
    _inferkit_session_server.reset()
    yield _inferkit_session_server
    _inferkit_session_server.reset()


@pytest.fixture
def inferkit_server_factory() -> Iterator[Callable[..., ReferenceServer]]:
    """Start reference servers with given models: ``inferkit_server_factory(models, tls=..., auth=...)``."""
    from inferkit.testing import ReferenceServer  # noqa: PLC0415

    started: list[ReferenceServer] = []

    def make(models: Iterable[Model] | None = None, **kwargs: Any) -> ReferenceServer:
        if models is None:
            from inferkit.testing.models import demo_models  # noqa: PLC0415

            models = demo_models()
        server = ReferenceServer(models, **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.stop()
