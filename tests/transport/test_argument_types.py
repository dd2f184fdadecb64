"""A public method called with an argument of the wrong type raises one clear TypeError on every client (sync and
aio, REST and gRPC), before any I/O, saying what to write instead: tritonclient's ``infer("model", [x])``, a dict
or an InferRequest where a model name is expected, ``explain(InferRequest(...))`` on a v1 client."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("grpc")

from inferkit import (  # noqa: E402
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    RESTConfig,
    aio,
)
from inferkit.testing import ReferenceServer  # noqa: E402
from inferkit.testing.models import iris_model, standard_models  # noqa: E402

KINDS = ("rest", "aio_rest", "grpc", "aio_grpc")
X = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(np.zeros((1, 16), np.int32))
REQUEST = InferRequest("add_sub", [X])
NAME = {"name": "add_sub"}

# (method, args, what the message must say)
CASES = [
    ("infer", ("add_sub", [X]), r"client\.infer\(InferRequest\('add_sub', \[x, \.\.\.\]\)\)"),
    ("infer", (NAME,), r"infer\(\) takes one InferRequest, got a dict"),
    ("infer", (None,), r"infer\(\) takes one InferRequest, got a NoneType"),
    ("is_model_ready", (NAME,), r"is_model_ready\(\) takes a model name \(a str\) first, got a dict"),
    ("get_model_metadata", (REQUEST,), r"got an InferRequest \(model_name='add_sub'\).*get_model_metadata\('add_sub'"),
    ("get_model_config", (NAME,), r"get_model_config\(\) takes a model name"),
    ("get_model_statistics", (["add_sub"],), r"get_model_statistics\(\) takes a model name .* got a list"),
    ("load_model", (NAME,), r"load_model\(\) takes a model name"),
    ("unload_model", (NAME,), r"unload_model\(\) takes a model name"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(standard_models(), grpc=True) as srv:
        yield srv


def make(kind: str, srv: ReferenceServer) -> Any:
    return {
        "rest": lambda: InferenceRESTClient(srv.http_url),
        "aio_rest": lambda: aio.InferenceRESTClient(srv.http_url),
        "grpc": lambda: InferenceGRPCClient(srv.grpc_url),
        "aio_grpc": lambda: aio.InferenceGRPCClient(srv.grpc_url),
    }[kind]()


def raised(client: Any, method: str, args: tuple[Any, ...]) -> BaseException:
    """What ``client.method(*args)`` raised (sync or aio); fails if it raised nothing."""

    async def awaited() -> Any:
        return await getattr(client, method)(*args)

    with pytest.raises(BaseException) as info:
        if type(client).__module__.startswith("inferkit.aio"):
            asyncio.run(awaited())
        else:
            getattr(client, method)(*args)
    return info.value


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("method", "args", "says"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_wrong_argument_type_is_one_clear_type_error(
    server: ReferenceServer, kind: str, method: str, args: tuple[Any, ...], says: str
) -> None:
    server.reset()
    client = make(kind, server)
    try:
        err = raised(client, method, args)
    finally:
        closed = client.close()
        if asyncio.iscoroutine(closed):
            asyncio.run(closed)
    assert type(err) is TypeError, repr(err)
    assert re.search(says, str(err)), str(err)
    assert server.count() == 0  # found before any I/O (no binary probe either)


@pytest.mark.parametrize("aio_client", [False, True], ids=["sync", "aio"])
@pytest.mark.parametrize("method", ["explain", "predict"])
def test_v1_explain_and_predict_with_an_infer_request_say_what_to_pass(aio_client: bool, method: str) -> None:
    with ReferenceServer([iris_model()], grpc=False) as v1:
        cls = aio.InferenceRESTClient if aio_client else InferenceRESTClient
        client = cls(v1.http_url, RESTConfig(protocol="v1"))
        err = raised(client, method, (InferRequest("iris", [X]),))
        assert type(err) is TypeError, repr(err)
        message = str(err)
        assert f"{method}() takes a model name (a str) first, got an InferRequest (model_name='iris')" in message
        assert f"client.{method}('iris', instances=[...])" in message and "client.infer(request)" in message
        assert v1.count() == 0
