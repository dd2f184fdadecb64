"""Mutual TLS: the client proves who it is with a certificate, over REST (https://) and gRPC (grpcs://).

    pip install "inferkit[grpc]" trustme
    python docs/examples/mtls.py                       # self-contained: makes certificates, starts a server
    python docs/examples/mtls.py --url https://models.internal:8443 --grpc-url grpcs://models.internal:8001 \
        --ca ca.pem --cert client.pem --key client.key

Without ``--url`` the example makes a private CA with ``trustme``, issues a server and a client certificate, and
starts inferkit's reference server requiring client certificates; then it shows that a client without a
certificate is refused. The URLs also come from ``INFERKIT_URL`` / ``INFERKIT_GRPC_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Iterator, Optional, Sequence

from inferkit import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from inferkit.errors import ConnectError


@contextlib.contextmanager
def self_signed_setup() -> Iterator[tuple[str, str, str, str, str]]:
    """(https URL, grpcs URL, CA path, client cert path, client key path) of a server made for this run."""
    import trustme  # noqa: PLC0415 - only for the self-contained run

    from inferkit.testing import ReferenceServer, ServerTLS  # noqa: PLC0415
    from inferkit.testing.models import iris_model  # noqa: PLC0415

    ca = trustme.CA()
    client_cert = ca.issue_cert("example-client")
    tls = ServerTLS.from_trustme(ca, client_ca=ca)  # client_ca set: the server requires client certificates
    with tempfile.TemporaryDirectory() as tmp, ReferenceServer([iris_model()], grpc=True, tls=tls) as server:
        paths = [os.path.join(tmp, name) for name in ("ca.pem", "client.pem", "client.key")]
        ca.cert_pem.write_to_path(paths[0])
        client_cert.cert_chain_pems[0].write_to_path(paths[1])
        client_cert.private_key_pem.write_to_path(paths[2])
        yield server.http_url, server.grpc_url, paths[0], paths[1], paths[2]


def run(url: str, grpc_url: Optional[str], ca: str, cert: str, key: str) -> None:
    # REST: verify= the CA that signed the server's certificate; cert= our certificate and key (paths).
    config = RESTConfig(verify=ca, cert=(cert, key), retries=1, timeout=10)
    with InferenceRESTClient(url, config=config) as client:
        print(f"REST  {url}: server live = {client.is_server_live()}")
    # gRPC: the same files; PEM bytes work too. grpcs:// means TLS.
    if grpc_url:
        with InferenceGRPCClient(
            grpc_url, root_certificates=ca, certificate_chain=cert, private_key=key, timeout=10, retries=1
        ) as client:
            print(f"gRPC  {grpc_url}: server live = {client.is_server_live()}")
    # Without a client certificate the server ends the handshake: a ConnectError (TLSError when the
    # failure is reported as a certificate problem), never a hang and never a raw ssl/urllib3 exception.
    with InferenceRESTClient(url, config=RESTConfig(verify=ca, retries=0, timeout=10)) as anonymous:
        try:
            anonymous.is_server_live()
            print("REST without a client certificate: accepted (this server does not require one)")
        except ConnectError as exc:
            print(f"REST without a client certificate: refused ({type(exc).__name__})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="mutual TLS over REST and gRPC")
    parser.add_argument("--url", default=os.environ.get("INFERKIT_URL"), help="https:// URL of the server")
    parser.add_argument("--grpc-url", default=os.environ.get("INFERKIT_GRPC_URL"), help="grpcs://host:port")
    parser.add_argument("--ca", help="CA bundle (PEM) that signed the server's certificate")
    parser.add_argument("--cert", help="client certificate chain (PEM)")
    parser.add_argument("--key", help="client private key (PEM)")
    args = parser.parse_args(argv)
    if args.url:
        if not (args.ca and args.cert and args.key):
            parser.error("--url needs --ca, --cert and --key")
        run(args.url, args.grpc_url, args.ca, args.cert, args.key)
    else:
        with self_signed_setup() as (url, grpc_url, ca, cert, key):
            run(url, grpc_url, ca, cert, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
