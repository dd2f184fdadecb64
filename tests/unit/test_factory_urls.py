"""One URL rule for every entry point: a URL without a scheme means ``http://`` (REST).

``InferenceRESTClient("localhost:8000")``, both factories (sync and ``inferkit.aio``) and ``inferkit bench -u``
read ``"localhost:8000"`` the same way; an unknown scheme is an error that names the URL and what is accepted.
No server is contacted: making a client opens no connection.
"""

from __future__ import annotations

import asyncio

import pytest

from inferkit import InferenceClientFactory, InferenceRESTClient
from inferkit._factory_common import scheme_of
from inferkit.bench import BenchOptions


@pytest.mark.parametrize(
    "url, scheme",
    [
        ("localhost:8000", "http"),
        ("127.0.0.1:8000/base", "http"),
        ("HTTPS://h:1", "https"),
        ("grpc://h:1", "grpc"),
        ("grpcs://h:1", "grpcs"),
    ],
)
def test_scheme_of(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme


@pytest.mark.parametrize("url", ["localhost:8000", "127.0.0.1:8000"])
def test_sync_factory_reads_a_schemeless_url_as_http(url: str) -> None:
    with InferenceRESTClient(url) as direct:
        expected = direct.host
    for make in (InferenceClientFactory.get_inference_client, InferenceClientFactory.get_rest_client):
        with make(url) as client:
            assert isinstance(client, InferenceRESTClient)
            assert client.host == expected == f"http://{url}"


def test_aio_factory_reads_a_schemeless_url_as_http() -> None:
    pytest.importorskip("aiohttp")
    from inferkit.aio import InferenceClientFactory as AioFactory
    from inferkit.aio import InferenceRESTClient as AioRESTClient

    async def main() -> str:
        async with AioFactory.get_inference_client("localhost:8000") as client:
            assert isinstance(client, AioRESTClient)
            return str(client.host)

    assert asyncio.run(main()) == "http://localhost:8000"


@pytest.mark.parametrize("url", ["htp://h:1", "unix:///tmp/x", ""])
def test_unknown_schemes_name_the_url_and_what_is_accepted(url: str) -> None:
    with pytest.raises(ValueError) as info:
        InferenceClientFactory.get_inference_client(url)
    if url:
        assert repr(url) in str(info.value) and "no scheme means http://" in str(info.value)


def test_a_schemeless_url_is_not_a_grpc_url() -> None:
    with pytest.raises(ValueError, match="grpc://"):
        InferenceClientFactory.get_grpc_client("localhost:8001")


def test_bench_reads_a_schemeless_url_as_rest() -> None:
    assert BenchOptions(url="localhost:8000", model="m").transport == "rest"
    assert BenchOptions(url="grpc://localhost:8001", model="m").transport == "grpc"
