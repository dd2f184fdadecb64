"""The Ray Data adapter (``inferkit.integrations.ray``): picklable client specs, the predictor on its own, and the
predictor inside ``Dataset.map_batches`` on a local Ray instance against the reference server (127.0.0.1).

Run with ``tox -e ray`` (Ray is not a test dependency of the main suite); the Ray-free tests run anywhere.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest

import inferkit
from inferkit import RESTConfig
from inferkit.errors import DecodeError, EncodeError
from inferkit.integrations.ray import (
    AsyncGeneratePredictor,
    AsyncInferencePredictor,
    ClientSpec,
    GeneratePredictor,
    InferencePredictor,
    generate_dataset,
    infer_dataset,
)
from inferkit.testing import Fault, Model, ReferenceServer, TensorSpec
from inferkit.testing.models import add_sub_model, identity_model, llm_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(inferkit.__file__)))


class InFlight:
    """A model that records the most requests it was running at once (it holds each for 20 ms)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __call__(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.02)
        with self.lock:
            self.now -= 1
        return {"OUTPUT0": inputs["INPUT0"]}

    def model(self) -> Model:
        spec = [TensorSpec("INPUT0", "INT32", [-1, 16])]
        return Model("in_flight", self, inputs=spec, outputs=[TensorSpec("OUTPUT0", "INT32", [-1, 16])])

    def generate_model(self) -> Model:
        """The same count for generate payloads: echoes ``text_input`` as ``text_output``."""

        def echo(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
            return {"OUTPUT0": self({"INPUT0": inputs["text_input"]}, parameters)["OUTPUT0"]}

        def answer(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
            return {"text_output": echo(inputs, parameters)["OUTPUT0"]}

        return Model(
            "gen_in_flight",
            answer,
            inputs=[TensorSpec("text_input", "BYTES", [1])],
            outputs=[TensorSpec("text_output", "BYTES", [1])],
        )


IN_FLIGHT = InFlight()


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    models = [
        add_sub_model(),
        identity_model("identity", "FP32", [-1, 3]),
        IN_FLIGHT.model(),
        IN_FLIGHT.generate_model(),
        llm_model("llm_once", decoupled=False),  # the stand-in LLM: answers /generate once with the prompt's words
    ]
    with ReferenceServer(models, grpc=True, max_workers=16) as s:
        yield s


@pytest.fixture
def counted(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()
    yield server
    server.reset()


def _rows(n: int) -> dict[str, np.ndarray]:
    a = np.arange(n * 16, dtype=np.int32).reshape(n, 16)
    return {"id": np.arange(n, dtype=np.int64), "a": a, "b": np.ones_like(a)}


# -- without Ray -------------------------------------------------------------------------------------------------
def test_importing_the_adapter_does_not_import_ray() -> None:
    code = "import sys, inferkit.integrations.ray; assert 'ray' not in sys.modules, 'ray imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_client_spec_pickles_with_the_standard_pickle(server: ReferenceServer) -> None:
    config = RESTConfig(retries=1, headers={"x-job": "nightly"}, timeout=(2, 30))
    rest = pickle.loads(pickle.dumps(ClientSpec(server.http_url, rest_config=config)))
    assert rest.transport == "rest" and rest.rest_config == config
    assert dict(rest.rest_config.headers) == {"x-job": "nightly"}
    grpc_spec = pickle.loads(pickle.dumps(ClientSpec(server.grpc_url, grpc_options={"timeout": 5, "retries": 0})))
    assert grpc_spec.transport == "grpc" and grpc_spec.grpc_options == {"timeout": 5, "retries": 0}
    for spec in (rest, grpc_spec):
        with spec.build() as client:
            assert client.is_server_live()


def test_client_spec_rejects_mismatched_settings() -> None:
    with pytest.raises(ValueError, match="grpc_options"):
        ClientSpec("http://h:1", grpc_options={"timeout": 1})
    with pytest.raises(ValueError, match="rest_config"):
        ClientSpec("grpc://h:1", rest_config=RESTConfig())
    with pytest.raises(ValueError, match="transport"):
        ClientSpec("http://h:1", transport="carrier-pigeon")


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_predictor_maps_columns_and_keeps_ids(counted: ReferenceServer, transport: str) -> None:
    url = counted.http_url if transport == "rest" else counted.grpc_url
    predictor = InferencePredictor(
        url,
        "add_sub",
        inputs={"a": "INPUT0", "b": "INPUT1"},
        outputs={"OUTPUT0": "sum"},
        keep_columns=["id"],
        batch_size=8,
        concurrency=2,
    )
    batch = _rows(21)
    try:
        out = predictor(batch)
        assert sorted(out) == ["id", "sum"]
        np.testing.assert_array_equal(out["id"], batch["id"])
        np.testing.assert_array_equal(out["sum"], batch["a"] + 1)
        assert counted.count(route="infer", model="add_sub") == 3
        # The client is built once and reused; pickling the predictor leaves it behind.
        client = predictor.client
        predictor({k: v[:2] for k, v in batch.items()})
        assert predictor.client is client
        clone = pickle.loads(pickle.dumps(predictor))
        assert clone._client is None
        np.testing.assert_array_equal(clone({k: v[:2] for k, v in batch.items()})["sum"], batch["a"][:2] + 1)
        clone.close()
    finally:
        predictor.close()


def test_predictor_errors_name_the_problem(counted: ReferenceServer) -> None:
    predictor = InferencePredictor(counted.http_url, "add_sub", inputs={"a": "INPUT0", "missing": "INPUT1"})
    with pytest.raises(EncodeError, match=r"no column\(s\) \['missing'\]"):
        predictor(_rows(2))
    clash = InferencePredictor(
        counted.http_url,
        "add_sub",
        inputs={"a": "INPUT0", "b": "INPUT1"},
        keep_columns=["id"],
        outputs={"OUTPUT0": "id"},
    )
    with pytest.raises(DecodeError, match="overwrite kept column 'id'"):
        clash(_rows(2))
    assert InferencePredictor(counted.http_url, "add_sub", keep_columns=["id"])({"id": np.zeros(0)})["id"].size == 0
    with pytest.raises(ValueError, match="batch_size"):
        InferencePredictor(counted.http_url, "add_sub", batch_size=0)
    predictor.close()
    clash.close()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_failed_requests_become_an_error_column(counted: ReferenceServer, transport: str) -> None:
    url = counted.http_url if transport == "rest" else counted.grpc_url
    spec = ClientSpec(url, rest_config=RESTConfig(retries=0)) if transport == "rest" else ClientSpec(url)
    predictor = InferencePredictor(
        spec, "add_sub", inputs={"a": "INPUT0", "b": "INPUT1"}, outputs={"OUTPUT0": "sum"}, keep_columns=["id"],
        batch_size=8, concurrency=1, on_error="column",
    )  # fmt: skip
    counted.inject(Fault(route="infer", model="add_sub", status=400, message="bad rows", times=1, protocol=transport))
    batch = _rows(20)
    try:
        out = predictor(batch)
        assert [e is not None for e in out["error"]] == [True] * 8 + [False] * 12  # the first request's rows
        assert "InvalidInputError" in out["error"][0] and "bad rows" in out["error"][0]
        np.testing.assert_array_equal(out["sum"][:8], np.zeros((8, 16), np.int32))  # filled, shaped like the others
        np.testing.assert_array_equal(out["sum"][8:], batch["a"][8:] + 1)
        # Every request failing on a fresh predictor: the output's shape comes from the model's metadata.
        fresh = InferencePredictor(spec, "add_sub", outputs={"OUTPUT0": "sum"}, keep_columns=["id"], on_error="column")
        counted.inject(Fault(route="infer", model="add_sub", status=400, times=None, protocol=transport))
        out = fresh({k: v[:3] for k, v in batch.items()})
        assert out["sum"].shape == (3, 16) and all("InvalidInputError" in e for e in out["error"])
        fresh.close()
    finally:
        predictor.close()
    strict = InferencePredictor(spec, "add_sub", batch_size=8, concurrency=1, keep_columns=["id"])  # in order
    with pytest.raises(inferkit.errors.InvalidInputError) as info:
        strict(batch)
    if sys.version_info >= (3, 11):
        assert any("rows 0:8" in note for note in info.value.__notes__)
    strict.close()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_async_predictor_bounds_requests_in_flight_across_batches(counted: ReferenceServer, transport: str) -> None:
    url = counted.http_url if transport == "rest" else counted.grpc_url
    predictor = AsyncInferencePredictor(url, "in_flight", inputs={"a": "INPUT0"}, batch_size=2, concurrency=3)
    batch = _rows(24)
    IN_FLIGHT.most = 0

    async def three_batches_at_once() -> list[dict[str, np.ndarray]]:
        try:
            return list(await asyncio.gather(*(predictor(batch) for _ in range(3))))
        finally:
            await predictor.aclose()

    for out in asyncio.run(three_batches_at_once()):
        np.testing.assert_array_equal(out["OUTPUT0"], batch["a"])
    assert counted.count(route="infer", model="in_flight") == 36
    assert 1 <= IN_FLIGHT.most <= 3  # one semaphore per actor: 3 batches x 12 requests, never more than 3 at once


def test_sync_predictor_bounds_requests_in_flight(counted: ReferenceServer) -> None:
    predictor = InferencePredictor(counted.http_url, "in_flight", inputs={"a": "INPUT0"}, batch_size=2, concurrency=3)
    IN_FLIGHT.most = 0
    try:
        np.testing.assert_array_equal(predictor(_rows(24))["OUTPUT0"], _rows(24)["a"])
    finally:
        predictor.close()
    assert 1 <= IN_FLIGHT.most <= 3


# -- generate payloads (LLM prompts) -------------------------------------------------------------------------------
PROMPTS = ["the quick brown fox", "jumps over", "the lazy dog", "and runs", "far away"]


def _prompts(n: int) -> dict[str, np.ndarray]:
    return {
        "id": np.arange(n, dtype=np.int64),
        "prompt": np.array([PROMPTS[i % len(PROMPTS)] for i in range(n)]),
        "max_tokens": np.array([1 + i % 3 for i in range(n)], dtype=np.int64),  # a per-row parameter
    }


def _expected(prompt: str, max_tokens: int) -> str:
    words = prompt.split()
    return (
        "".join([w + " " for w in words[:-1]] + words[-1:][:max_tokens])[:None]
        if False
        else "".join(([w + " " for w in words[:-1]] + words[-1:])[:max_tokens])
    )


def _bad_row(row: dict[str, Any]) -> dict[str, Any]:
    """A payload function: every third row's payload names no input of the model, so its request fails."""
    if row["id"] % 3 == 1:
        return {"prompt": row["prompt"]}
    return {"text_input": row["prompt"], "max_tokens": row["max_tokens"]}


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_generate_predictor_maps_prompts_to_answers(counted: ReferenceServer, transport: str) -> None:
    url = counted.http_url if transport == "rest" else counted.grpc_url
    predictor = GeneratePredictor(
        url,
        "llm_once",
        inputs={"prompt": "text_input", "max_tokens": "max_tokens"},
        outputs={"text_output": "answer"},
        keep_columns=["id"],
        concurrency=2,
    )
    batch = _prompts(7)
    try:
        out = predictor(batch)
        assert sorted(out) == ["answer", "id"] and out["answer"].dtype == object
        np.testing.assert_array_equal(out["id"], batch["id"])
        assert list(out["answer"]) == [_expected(p, int(m)) for p, m in zip(batch["prompt"], batch["max_tokens"])]
        if transport == "rest":
            assert counted.count(route="generate", model="llm_once") == 7  # one request per row
        # Fixed parameters go into every payload; the defaults are the "prompt" column and "text_output".
        fixed = GeneratePredictor(url, "llm_once", parameters={"max_tokens": 1}, keep_columns=["id"])
        assert list(fixed(batch)["text_output"]) == [_expected(p, 1) for p in batch["prompt"]]
        assert list(fixed({"id": np.zeros(0), "prompt": np.zeros(0, dtype=object)})) == ["id"]  # an empty batch
        clone = pickle.loads(pickle.dumps(fixed))  # the client stays behind
        assert clone._client is None and list(clone(batch)["text_output"]) == list(fixed(batch)["text_output"])
        clone.close()
        fixed.close()
    finally:
        predictor.close()


def test_generate_predictor_errors_name_the_problem(counted: ReferenceServer) -> None:
    with pytest.raises(ValueError, match="not both"):
        GeneratePredictor(counted.http_url, "llm_once", inputs=["prompt"], payload=_bad_row)
    with pytest.raises(ValueError, match="on_error"):
        GeneratePredictor(counted.http_url, "llm_once", on_error="ignore")
    predictor = GeneratePredictor(counted.http_url, "llm_once", inputs={"text": "text_input"})
    with pytest.raises(EncodeError, match=r"no column\(s\) \['text'\]"):
        predictor(_prompts(2))
    unknown = GeneratePredictor(counted.http_url, "llm_once", outputs=["tokens"])
    with pytest.raises(DecodeError, match="no field 'tokens'"):
        unknown(_prompts(2))
    clash = GeneratePredictor(counted.http_url, "llm_once", outputs={"text_output": "id"}, keep_columns=["id"])
    with pytest.raises(DecodeError, match="overwrite kept column 'id'"):
        clash(_prompts(2))
    for p in (predictor, unknown, clash):
        p.close()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_failed_generate_requests_become_an_error_column(counted: ReferenceServer, transport: str) -> None:
    url = counted.http_url if transport == "rest" else counted.grpc_url
    spec = ClientSpec(url, rest_config=RESTConfig(retries=0)) if transport == "rest" else ClientSpec(url)
    batch = _prompts(6)
    column = GeneratePredictor(spec, "llm_once", payload=_bad_row, keep_columns=["id"], on_error="column")
    try:
        out = column(batch)
        assert [e is not None for e in out["error"]] == [False, True, False, False, True, False]
        assert "text_input" in out["error"][1] and (
            "InvalidInputError" in out["error"][1] or "EncodeError" in out["error"][1]
        )
        assert out["text_output"][1] is None and out["text_output"][4] is None
        assert out["text_output"][0] == _expected(PROMPTS[0], 1) and out["text_output"][5] == _expected(PROMPTS[0], 3)
    finally:
        column.close()
    if transport == "rest":  # a server-side failure too: the first request answers 503 (no retries)
        counted.inject(Fault(route="generate", model="llm_once", status=503, message="overloaded", times=1))
        one = GeneratePredictor(spec, "llm_once", concurrency=1, on_error="column", parameters={"max_tokens": 2})
        out = one(batch)
        assert "overloaded" in out["error"][0] and all(e is None for e in out["error"][1:])
        one.close()
    strict = GeneratePredictor(spec, "llm_once", payload=_bad_row, concurrency=1)  # one in flight: row 1 fails first
    with pytest.raises(inferkit.errors.InferkitError, match="text_input") as info:
        strict(batch)
    if sys.version_info >= (3, 11):
        assert any("row 1 of the block" in note for note in info.value.__notes__)
    strict.close()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_async_generate_predictor_bounds_requests_across_batches(counted: ReferenceServer, transport: str) -> None:
    url = counted.http_url if transport == "rest" else counted.grpc_url
    predictor = AsyncGeneratePredictor(url, "gen_in_flight", concurrency=3)
    errors = AsyncGeneratePredictor(url, "llm_once", payload=_bad_row, keep_columns=["id"], on_error="column")
    batch = _prompts(12)
    IN_FLIGHT.most = 0

    async def three_batches_at_once() -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        try:
            outs = list(await asyncio.gather(*(predictor(batch) for _ in range(3))))
            return outs, await errors(batch)
        finally:
            await predictor.aclose()
            await errors.aclose()

    outs, failed = asyncio.run(three_batches_at_once())
    for out in outs:
        assert list(out["text_output"]) == list(batch["prompt"])
    assert 1 <= IN_FLIGHT.most <= 3  # one semaphore per actor: 3 batches x 12 rows, never more than 3 at once
    assert [e is not None for e in failed["error"]] == [i % 3 == 1 for i in range(12)]
    assert [t is None for t in failed["text_output"]] == [i % 3 == 1 for i in range(12)]


def test_sync_generate_predictor_bounds_requests_in_flight(counted: ReferenceServer) -> None:
    predictor = GeneratePredictor(counted.http_url, "gen_in_flight", concurrency=3)
    IN_FLIGHT.most = 0
    try:
        assert list(predictor(_prompts(24))["text_output"]) == list(_prompts(24)["prompt"])
    finally:
        predictor.close()
    assert 1 <= IN_FLIGHT.most <= 3


# -- with Ray ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # Workers are new processes: they must find this checkout of inferkit.
    pythonpath = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        configure_logging=False,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_map_batches_on_local_ray(ray_local: Any, counted: ReferenceServer, transport: str) -> None:
    n = 120
    rows = _rows(n)
    dataset = ray_local.data.from_items([{"id": int(i), "a": rows["a"][i], "b": rows["b"][i]} for i in range(n)])
    if transport == "rest":
        spec = ClientSpec(counted.http_url, rest_config=RESTConfig(retries=0, headers={"x-job": "ray-test"}))
    else:
        spec = ClientSpec(counted.grpc_url, grpc_options={"retries": 0, "timeout": 30})
    mapped = infer_dataset(
        dataset,
        spec,
        "add_sub",
        actors=2,
        rows_per_batch=32,
        map_batches_options={"num_cpus": 0.5},
        inputs={"a": "INPUT0", "b": "INPUT1"},
        outputs={"OUTPUT0": "sum", "OUTPUT1": "diff"},
        keep_columns=["id"],
        batch_size=16,
        concurrency=2,
    )
    out = sorted(mapped.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in out] == list(range(n))
    for r in out:
        np.testing.assert_array_equal(r["sum"], rows["a"][r["id"]] + 1)
        np.testing.assert_array_equal(r["diff"], rows["a"][r["id"]] - 1)
    # Each Ray batch (<= 32 rows) became requests of <= 16 rows.
    assert counted.count(route="infer", model="add_sub") >= n // 16


def test_async_predictor_and_error_column_on_local_ray(ray_local: Any, counted: ReferenceServer) -> None:
    n = 96
    rows = _rows(n)
    dataset = ray_local.data.from_items([{"id": int(i), "a": rows["a"][i], "b": rows["b"][i]} for i in range(n)])
    counted.inject(Fault(route="infer", model="add_sub", status=400, message="bad rows", times=1))
    mapped = infer_dataset(
        dataset,
        ClientSpec(counted.http_url, rest_config=RESTConfig(retries=0)),
        "add_sub",
        actors=1,
        rows_per_batch=32,
        map_batches_options={"num_cpus": 0.5, "max_concurrency": 2},
        asynchronous=True,
        inputs={"a": "INPUT0", "b": "INPUT1"},
        outputs={"OUTPUT0": "sum"},
        keep_columns=["id"],
        batch_size=16,
        concurrency=2,
        on_error="column",
    )
    out = sorted(mapped.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in out] == list(range(n))
    failed = [r for r in out if r["error"] is not None]
    assert len(failed) == 16 and all("bad rows" in r["error"] for r in failed)
    for r in out:
        if r["error"] is None:
            np.testing.assert_array_equal(r["sum"], rows["a"][r["id"]] + 1)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_generate_dataset_on_local_ray(ray_local: Any, counted: ReferenceServer, asynchronous: bool) -> None:
    n = 60
    rows = _prompts(n)
    items = [
        {"id": int(i), "prompt": str(rows["prompt"][i]), "max_tokens": int(rows["max_tokens"][i])} for i in range(n)
    ]
    dataset = ray_local.data.from_items(items)
    if asynchronous:  # gRPC, an asyncio client per actor, failed rows in the error column
        spec = ClientSpec(counted.grpc_url, grpc_options={"retries": 0, "timeout": 30})
        options: dict[str, Any] = {"payload": _bad_row, "on_error": "column"}
    else:
        spec = ClientSpec(counted.http_url, rest_config=RESTConfig(retries=0))
        options = {"inputs": {"prompt": "text_input", "max_tokens": "max_tokens"}}
    mapped = generate_dataset(
        dataset,
        spec,
        "llm_once",
        actors=2,
        rows_per_batch=16,
        map_batches_options={"num_cpus": 0.5, **({"max_concurrency": 2} if asynchronous else {})},
        asynchronous=asynchronous,
        outputs={"text_output": "answer"},
        keep_columns=["id", "prompt"],
        concurrency=4,
        **options,
    )
    out = sorted(mapped.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in out] == list(range(n))
    for r in out:
        failing = asynchronous and r["id"] % 3 == 1
        if failing:
            assert r["answer"] is None and "text_input" in r["error"]
        else:
            assert r["answer"] == _expected(r["prompt"], int(rows["max_tokens"][r["id"]]))
            assert not asynchronous or r["error"] is None
