"""The Ray and Spark adapters against real Triton (2.51, from tests/interop/harness.py): the interop part of the
engine suites. .ci/run runs this module in the Ray venv (the Spark tests skip there) and in the Spark venv (the Ray
tests skip), with ``-m interop``; under CI=true a Triton that cannot be started fails the run.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator

import numpy as np
import pytest

import inferkit
from inferkit import RESTConfig
from inferkit.integrations.ray import ClientSpec, infer_dataset
from inferkit.integrations.spark import infer_dataframe, make_predict_fn
from tests.interop import harness

pytestmark = pytest.mark.interop
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(inferkit.__file__)))
ROWS = 300


@pytest.fixture(scope="module")
def triton() -> Iterator[harness.Server]:
    try:
        server = harness.start_server("triton")
    except harness.EnvironmentUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Triton's venv is unavailable under CI=true: {exc}")
        pytest.skip(f"Triton's venv could not be built here: {str(exc).splitlines()[0]}")
    try:
        yield server
    finally:
        server.stop()


def _rows() -> np.ndarray:
    return np.arange(ROWS * 16, dtype=np.int32).reshape(ROWS, 16) % 1000


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    pythonpath = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        configure_logging=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.parametrize("transport, asynchronous", [("rest", False), ("grpc", True)])
def test_ray_map_batches_on_triton(ray_local: Any, triton: harness.Server, transport: str, asynchronous: bool) -> None:
    a = _rows()
    dataset = ray_local.data.from_items([{"id": i, "a": a[i], "b": np.ones(16, np.int32)} for i in range(ROWS)])
    url = triton.http_url if transport == "rest" else f"grpc://{triton.grpc_address}"
    mapped = infer_dataset(
        dataset,
        ClientSpec(url),
        "add_sub",
        actors=2,
        rows_per_batch=64,
        map_batches_options={"num_cpus": 0.5},
        asynchronous=asynchronous,
        inputs={"a": "INPUT0", "b": "INPUT1"},
        outputs={"OUTPUT0": "sum", "OUTPUT1": "diff"},
        keep_columns=["id"],
        batch_size=32,
        concurrency=2,
        on_error="column",
    )
    out = sorted(mapped.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in out] == list(range(ROWS))
    assert all(r["error"] is None for r in out)
    for r in out:
        np.testing.assert_array_equal(r["sum"], a[r["id"]] + 1)
        np.testing.assert_array_equal(r["diff"], a[r["id"]] - 1)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    pytest.importorskip("pyarrow")
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
    session = (
        SparkSession.builder.master("local[2]")
        .appName("inferkit-triton")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def test_spark_predict_batch_udf_on_triton_grpc(spark: Any, triton: harness.Server) -> None:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, IntegerType, StructField, StructType

    a = _rows()
    df = spark.createDataFrame(
        [(i, a[i].tolist(), [1] * 16) for i in range(ROWS)], "id long, a array<int>, b array<int>"
    )
    returns = StructType([StructField("sum", ArrayType(IntegerType())), StructField("diff", ArrayType(IntegerType()))])
    spec = ClientSpec(f"grpc://{triton.grpc_address}", grpc_options={"retries": 3, "timeout": 60})
    udf = predict_batch_udf(
        make_predict_fn(spec, "add_sub", ["INPUT0", "INPUT1"], {"OUTPUT0": "sum", "OUTPUT1": "diff"}, batch_size=50),
        return_type=returns,
        batch_size=100,
        input_tensor_shapes=[[16], [16]],
    )
    out = df.withColumn("out", udf("a", "b")).select("id", "out.*").collect()
    assert sorted(r["id"] for r in out) == list(range(ROWS))
    for r in out:
        assert r["sum"] == (a[r["id"]] + 1).tolist() and r["diff"] == (a[r["id"]] - 1).tolist()


def test_spark_map_in_pandas_strings_on_triton_rest(spark: Any, triton: harness.Server) -> None:
    df = spark.createDataFrame([(i, f"text {i} é") for i in range(ROWS)], "id long, text string")
    out = infer_dataframe(
        df,
        ClientSpec(triton.http_url, rest_config=RESTConfig(retries=3)),
        "identity",
        {"text": "INPUT_BYTES"},
        "echo string",
        {"OUTPUT_BYTES": "echo"},
        keep_columns=["id"],
        input_shapes={"text": [1]},  # Triton's identity takes [rows, n]
        batch_size=64,
    )
    assert sorted((r["id"], r["echo"]) for r in out.collect()) == [(i, f"text {i} é") for i in range(ROWS)]
