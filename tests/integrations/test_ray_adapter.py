"""The Ray Data adapter (``inferkit.integrations.ray``): picklable client specs, the predictor on its own, and the
predictor inside ``Dataset.map_batches`` on a local Ray instance against the reference server (127.0.0.1).

Run with ``tox -e ray`` (Ray is not a test dependency of the main suite); the Ray-free tests run anywhere.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Any, Iterator

import numpy as np
import pytest

import inferkit
from inferkit import RESTConfig
from inferkit.errors import DecodeError, EncodeError
from inferkit.integrations.ray import ClientSpec, InferencePredictor, infer_dataset
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model, identity_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(inferkit.__file__)))


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer([add_sub_model(), identity_model("identity", "FP32", [-1, 3])], grpc=True) as s:
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
