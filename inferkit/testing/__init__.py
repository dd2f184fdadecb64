"""inferkit.testing: an embedded Open Inference Protocol server for tests and demos.

``ReferenceServer`` serves Python callables as models over REST (aiohttp) and gRPC (grpc.aio) from one
background thread, with fault injection (``Fault``) and request counters, TLS/mTLS (``ServerTLS``) and an
optional required auth header. Standard models live in ``inferkit.testing.models``; pytest fixtures in
``inferkit.testing.pytest_plugin``.

Layering: testing -> codec (it speaks the wire only through ``inferkit.codec``). Importing this package does
not import aiohttp or grpc; ``ReferenceServer.start()`` does, and raises an ImportError naming the extra.
Must not import: aiohttp, grpc, requests.
"""

from inferkit.testing._engine import interruptible_sleep
from inferkit.testing._faults import ACTIONS, ROUTES, Fault
from inferkit.testing._model import Model, ModelError, TensorSpec
from inferkit.testing.server import ReferenceServer, ServerTLS

__all__ = [
    "ReferenceServer",
    "ServerTLS",
    "Model",
    "TensorSpec",
    "Fault",
    "ModelError",
    "ROUTES",
    "ACTIONS",
    "interruptible_sleep",
]
