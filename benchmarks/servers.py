"""Real servers for benchmarks, started through the interop harness (tests/interop/harness.py).

Owns: a small import surface so a benchmark can say ``with real_server("triton") as server:`` and get Triton (or
KServe ModelServer, MLServer) on 127.0.0.1 with free ports, its cached venv built on first use, and the process
group stopped afterwards. Must not import inferkit (benchmarks choose their clients) nor pytest.

Example::

    from servers import real_server, server_available

    ok, why = server_available("triton")
    if ok:
        with real_server("triton") as triton:
            url, grpc_address = triton.http_url, triton.grpc_address   # models: add_sub, identity (INPUT_<T>)

Set ``INFERKIT_INTEROP_CACHE`` to move the venv cache (default ``~/.cache/inferkit-interop``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # benchmarks run as scripts: make the repository importable
    sys.path.insert(0, str(_ROOT))

from tests.interop import harness  # noqa: E402

Server = harness.Server
SERVERS = tuple(harness.STARTERS)


def server_available(name: str) -> tuple[bool, str]:
    """Whether ``name``'s venv exists or can be built here (builds it on first call); (False, reason) if not."""
    try:
        venv = harness.ensure_venv(name)
    except harness.EnvironmentUnavailable as exc:
        return False, str(exc).splitlines()[0]
    return True, f"{venv.path} ({'built' if venv.built else 'cached'})"


@contextlib.contextmanager
def real_server(name: str = "triton", **kwargs: Any) -> Iterator[harness.Server]:
    """Start a real server for the duration of the block; raises harness.HarnessError if it cannot start."""
    server = harness.start_server(name, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def identity_io(server: harness.Server, datatype: str = "FP32") -> tuple[str, str, str]:
    """(model, input name, output name) of the server's identity model for ``datatype``."""
    return server.identity(datatype)


if __name__ == "__main__":
    # `python benchmarks/servers.py [triton|kserve|mlserver]`: start one, print where, stop.
    which = sys.argv[1] if len(sys.argv) > 1 else "triton"
    ok, why = server_available(which)
    if not ok:
        sys.exit(f"{which}: unavailable: {why}")
    with real_server(which) as srv:
        print(
            f"{which}: {srv.http_url} grpc {srv.grpc_address} ready in {srv.startup_seconds:.1f}s models {srv.models}"
        )
