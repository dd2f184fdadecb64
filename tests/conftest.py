"""Shared fixtures for the whole test suite: a running reference server and TLS material.

``reference_server`` is one server per session (REST and gRPC, the standard test models of
``inferkit.testing.models.standard_models``), reset before and after every test so faults, counters, statistics
and unloaded models never leak between tests. ``tls_material`` is a trustme CA with a server certificate for
127.0.0.1/localhost and a client CA and certificate for mutual TLS.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import pytest

from inferkit.testing import ReferenceServer, ServerTLS
from inferkit.testing.models import standard_models


@pytest.fixture(scope="session")
def _reference_server_session() -> Iterator[ReferenceServer]:
    server = ReferenceServer(standard_models(), grpc=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def reference_server(_reference_server_session: ReferenceServer) -> Iterator[ReferenceServer]:
    """The session's reference server, with faults, counters, statistics and model states reset around the test."""
    _reference_server_session.reset()
    yield _reference_server_session
    _reference_server_session.reset()


@dataclasses.dataclass(frozen=True)
class TLSMaterial:
    """PEM files and bytes for TLS tests (see ``tls_material``)."""

    ca_pem: bytes  # trust this to verify the server
    server: ServerTLS  # server-only TLS
    server_mutual: ServerTLS  # TLS that requires client certificates (signed by the client CA)
    client_cert_pem: bytes  # client certificate chain, for mutual TLS
    client_key_pem: bytes
    ca_file: str  # the same material as files, for clients that want paths
    client_cert_file: str
    client_key_file: str


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    """A CA, server certificates (plain and mutual TLS) and a client certificate, made with trustme."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    client_ca = trustme.CA()
    client = client_ca.issue_cert("inferkit-test-client")
    server = ServerTLS.from_trustme(ca)
    mutual = dataclasses.replace(server, client_ca_pem=client_ca.cert_pem.bytes())
    cert_pem = b"".join(blob.bytes() for blob in client.cert_chain_pems)
    key_pem = client.private_key_pem.bytes()
    folder = tmp_path_factory.mktemp("tls")
    files = {"ca.pem": ca.cert_pem.bytes(), "client.pem": cert_pem, "client.key": key_pem}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return TLSMaterial(
        ca.cert_pem.bytes(),
        server,
        mutual,
        cert_pem,
        key_pem,
        str(folder / "ca.pem"),
        str(folder / "client.pem"),
        str(folder / "client.key"),
    )
