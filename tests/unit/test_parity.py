"""Sync and async clients have the same public API: names, parameters, defaults and return annotations.

An intended difference is listed in ALLOWED with the reason; anything else that differs fails here.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("grpc")

import inferkit.aio as aio  # noqa: E402
from inferkit import _grpc_generate  # noqa: E402
from inferkit import factory as sync_factory  # noqa: E402
from inferkit import grpc_client as sync_grpc  # noqa: E402
from inferkit import rest_client as sync_rest  # noqa: E402
from inferkit._transport import stream as sync_sse  # noqa: E402
from inferkit.aio import _stream as aio_sse  # noqa: E402
from inferkit.aio import grpc_client as aio_grpc  # noqa: E402

PAIRS = [
    (sync_rest.InferenceRESTClient, aio.InferenceRESTClient),
    (sync_grpc.InferenceGRPCClient, aio.InferenceGRPCClient),
    (sync_factory.InferenceClientFactory, aio.InferenceClientFactory),
    (sync_grpc.InferStream, aio_grpc.AsyncInferStream),
    (sync_sse.EventStream, aio_sse.AsyncEventStream),
    (_grpc_generate.GenerateStream, _grpc_generate.AsyncGenerateStream),
]

# Intended differences: (class name, member) -> why.
ALLOWED = {
    # Context managers: `with` for sync, `async with` for async.
    ("*", "__enter__"): "sync context manager",
    ("*", "__exit__"): "sync context manager",
    ("*", "__aenter__"): "async context manager",
    ("*", "__aexit__"): "async context manager",
    # Iteration: a stream is an iterator in sync code, an async iterator in async code.
    ("InferStream", "__iter__"): "sync iterator",
    ("InferStream", "__next__"): "sync iterator",
    ("AsyncInferStream", "__aiter__"): "async iterator",
    ("AsyncInferStream", "__anext__"): "async iterator",
    ("EventStream", "__iter__"): "sync iterator",
    ("EventStream", "__next__"): "sync iterator",
    ("AsyncEventStream", "__aiter__"): "async iterator",
    ("AsyncEventStream", "__anext__"): "async iterator",
    ("AsyncEventStream", "aclose"): "the name async generators use for close()",
    ("GenerateStream", "__iter__"): "sync iterator",
    ("GenerateStream", "__next__"): "sync iterator",
    ("AsyncGenerateStream", "__aiter__"): "async iterator",
    ("AsyncGenerateStream", "__anext__"): "async iterator",
    ("AsyncGenerateStream", "aclose"): "the name async generators use for close()",
    # The factory and streams have no batch mixin; the clients have BatchMixin / AsyncBatchMixin, whose parity is
    # asserted in tests/transport/test_aio_batching.py (infer_many returns an iterator vs an async iterator).
}


def _public(cls: type) -> set[str]:
    names = {n for n in dir(cls) if not n.startswith("_")}
    return names | {
        n
        for n in ("__enter__", "__exit__", "__aenter__", "__aexit__", "__iter__", "__next__", "__aiter__", "__anext__")
        if hasattr(cls, n)
    }


def _allowed(cls: type, name: str) -> bool:
    return ("*", name) in ALLOWED or (cls.__name__, name) in ALLOWED


def _shape(sig: inspect.Signature) -> list[tuple[Any, ...]]:
    """Names, kinds, defaults (sentinels by type) and annotations as strings."""
    out = []
    for p in sig.parameters.values():
        default = p.default
        if default is not inspect.Parameter.empty and type(default) is object:
            default = "<sentinel>"
        out.append((p.name, p.kind, default, str(p.annotation)))
    return out


def _ret(sig: inspect.Signature) -> str:
    ret = str(sig.return_annotation)
    # Streams and client self-types differ by name only: the sync and async classes of the same thing.
    for a, b in (
        ("AsyncIterator", "Iterator"),
        ("AsyncInferStream", "InferStream"),
        ("AsyncEventStream", "EventStream"),
        ("AsyncGenerateStream", "GenerateStream"),
        ("AsyncInferManyIterator", "InferManyIterator"),
        ("InferManyIterator[Any]", "InferManyIterator"),
    ):
        ret = ret.replace(a, b)
    return ret


# Methods that return an (async) iterator object at once rather than a coroutine: plain def in both.
RETURN_ITERATORS = {"infer_many", "stream", "generate_stream", "generate_many"}


@pytest.mark.parametrize(("sync_cls", "aio_cls"), PAIRS, ids=lambda c: c.__name__)
def test_same_public_names(sync_cls: type, aio_cls: type) -> None:
    missing = {n for n in _public(sync_cls) - _public(aio_cls) if not _allowed(sync_cls, n)}
    extra = {n for n in _public(aio_cls) - _public(sync_cls) if not _allowed(aio_cls, n)}
    assert not missing, f"{aio_cls.__module__}.{aio_cls.__name__} lacks {sorted(missing)}"
    assert not extra, f"{aio_cls.__module__}.{aio_cls.__name__} has extra {sorted(extra)}"


@pytest.mark.parametrize(("sync_cls", "aio_cls"), PAIRS, ids=lambda c: c.__name__)
def test_same_signatures_and_async_methods(sync_cls: type, aio_cls: type) -> None:
    for name in sorted(_public(sync_cls) & _public(aio_cls)):
        if name.startswith("__"):
            continue
        s, a = inspect.getattr_static(sync_cls, name), inspect.getattr_static(aio_cls, name)
        if isinstance(s, property):
            assert isinstance(a, property), name
            continue
        s_fn, a_fn = getattr(sync_cls, name), getattr(aio_cls, name)
        s_sig, a_sig = inspect.signature(s_fn), inspect.signature(a_fn)
        assert _shape(s_sig) == _shape(a_sig), f"{aio_cls.__name__}.{name}: parameters differ"
        if name in ("stream", "__init__"):
            continue  # stream() returns the sync / async stream class: compared in the InferStream pair
        assert _ret(s_sig) == _ret(a_sig), f"{aio_cls.__name__}.{name}: return annotation differs"
        if inspect.isgeneratorfunction(s_fn):
            assert inspect.isasyncgenfunction(a_fn), f"{aio_cls.__name__}.{name} must be an async generator"
        elif aio_cls is not aio.InferenceClientFactory and name not in RETURN_ITERATORS | {"cancel"}:
            assert inspect.iscoroutinefunction(a_fn), f"{aio_cls.__name__}.{name} must be async def"


GENERATE = ("generate", "generate_stream", "generate_many")


@pytest.mark.parametrize("name", GENERATE)
def test_generate_calls_on_all_four_clients(name: str) -> None:
    # The same parameters on REST and gRPC too (the contract), sync and aio.
    clients = (
        sync_rest.InferenceRESTClient,
        sync_grpc.InferenceGRPCClient,
        aio.InferenceRESTClient,
        aio.InferenceGRPCClient,
    )
    shapes = {cls.__module__ + "." + cls.__name__: _shape(inspect.signature(getattr(cls, name))) for cls in clients}
    first = next(iter(shapes.values()))
    for where, shape in shapes.items():
        assert [p[:3] for p in shape] == [p[:3] for p in first], where


def test_aio_clients_pickle_as_their_arguments() -> None:
    import pickle

    rest = pickle.loads(pickle.dumps(aio.InferenceRESTClient("http://127.0.0.1:1")))
    grpc = pickle.loads(pickle.dumps(aio.InferenceGRPCClient("127.0.0.1:1", timeout=5)))
    assert rest.host == "http://127.0.0.1:1" and grpc.host == "127.0.0.1:1"


def test_async_context_managers_and_iterators() -> None:
    for cls in (aio.InferenceRESTClient, aio.InferenceGRPCClient):
        assert inspect.iscoroutinefunction(cls.__aenter__) and inspect.iscoroutinefunction(cls.close)
    stream_cls = PAIRS[3][1]
    assert inspect.iscoroutinefunction(stream_cls.__anext__)


def test_aio_factory_never_loads_the_sync_transports() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from inferkit.aio import InferenceClientFactory as F\n"
        "F.get_inference_client('http://127.0.0.1:1')\n"
        "F.get_inference_client('grpcs://127.0.0.1:2', timeout=5)\n"
        "bad = {'inferkit.rest_client', 'inferkit._transport', 'inferkit.grpc_client'} & set(sys.modules)\n"
        "print('LOADED', sorted(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
