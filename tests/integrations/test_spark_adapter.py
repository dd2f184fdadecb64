"""The Spark adapter (``inferkit.integrations.spark``) on a local Spark (``local[2]``) against the reference server
on 127.0.0.1: ``predict_batch_udf`` and ``mapInPandas``, tensor and string columns, one client per Python worker,
retries, and failed rows as an error column.

Run with ``tox -e spark`` (or .ci/run's spark step); without pyspark the Spark tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import inferkit
from inferkit import RESTConfig
from inferkit.integrations.spark import ClientSpec, generate_dataframe, infer_dataframe, make_predict_fn
from inferkit.testing import Fault, ReferenceServer
from inferkit.testing.models import add_sub_model, identity_model, llm_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(inferkit.__file__)))
ROWS = 200


class CountingSpec(ClientSpec):
    """A ClientSpec that appends ``pid`` to a file each time a client is built (in the Spark worker)."""

    __slots__ = ("log",)

    def __init__(self, url: str, log: str, rest_config: Any = None) -> None:
        super().__init__(url, rest_config=rest_config)
        self.log = log

    def build(self) -> Any:
        with open(self.log, "a") as out:
            out.write(f"{os.getpid()}\n")
        return super().build()

    def __reduce__(self) -> tuple[Any, ...]:
        return (CountingSpec, (self.url, self.log, super().__reduce__()[1][2]))


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    models = [add_sub_model(), identity_model("identity_bytes", "BYTES"), llm_model("llm_once", decoupled=False)]
    with ReferenceServer(models, grpc=True, max_workers=8) as s:
        yield s


@pytest.fixture
def counted(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers run this venv's python, with this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
    session = (
        SparkSession.builder.master("local[2]")
        .appName("inferkit-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def _frame(spark: Any, partitions: int = 4) -> Any:
    a = np.arange(ROWS * 16, dtype=np.int32).reshape(ROWS, 16)
    rows = [(i, a[i].tolist(), [1] * 16, f"row-{i}") for i in range(ROWS)]
    return spark.createDataFrame(rows, "id long, a array<int>, b array<int>, text string").repartition(partitions, "id")


# -- without Spark -----------------------------------------------------------------------------------------------
FORK_CHECK = """
import os, sys
from inferkit.integrations._rows import ClientSpec, worker_client
spec = ClientSpec(sys.argv[1])
first = worker_client(spec)
assert worker_client(ClientSpec(sys.argv[1])) is first  # equal specs share the process's client
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # Spark's daemon forks its Python workers like this
    child = worker_client(spec)
    ok = child is not first and worker_client(spec) is child and child.is_server_live()
    os.write(write, b"ok" if ok else b"no")
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read, 2).decode(), first.is_server_live())
"""


def test_one_client_per_process_and_a_new_one_after_fork(server: ReferenceServer) -> None:
    # In a fresh interpreter: forking this one (with the reference server's gRPC threads) is not safe.
    out = subprocess.run(
        [sys.executable, "-c", FORK_CHECK, server.http_url], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.stdout.split() == ["ok", "True"], out.stderr


def test_importing_the_adapter_does_not_import_spark_or_pandas() -> None:
    code = (
        "import sys, inferkit.integrations.spark; "
        "loaded = [m for m in ('pyspark', 'pandas', 'grpc', 'aiohttp') if m in sys.modules]; print(loaded or 'ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_make_predict_fn_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="inputs must list"):
        make_predict_fn("http://127.0.0.1:1", "m", "INPUT0")
    with pytest.raises(ValueError, match="on_error"):
        make_predict_fn("http://127.0.0.1:1", "m", ["INPUT0"], on_error="ignore")
    with pytest.raises(ValueError, match="concurrency"):
        make_predict_fn("http://127.0.0.1:1", "m", ["INPUT0"], concurrency=0)


# -- on local Spark ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_predict_batch_udf_with_tensor_columns(spark: Any, counted: ReferenceServer, transport: str) -> None:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, IntegerType, StructField, StructType

    url = counted.http_url if transport == "rest" else counted.grpc_url
    returns = StructType([StructField("sum", ArrayType(IntegerType())), StructField("diff", ArrayType(IntegerType()))])
    add_sub = predict_batch_udf(
        make_predict_fn(url, "add_sub", ["INPUT0", "INPUT1"], {"OUTPUT0": "sum", "OUTPUT1": "diff"}, batch_size=16),
        return_type=returns,
        batch_size=50,
        input_tensor_shapes=[[16], [16]],
    )
    out = _frame(spark).withColumn("out", add_sub("a", "b")).select("id", "a", "out.*").collect()
    assert sorted(r["id"] for r in out) == list(range(ROWS))
    for r in out:
        assert r["sum"] == [v + 1 for v in r["a"]] and r["diff"] == [v - 1 for v in r["a"]]
    assert counted.count(route="infer", model="add_sub") >= ROWS // 16


def test_predict_batch_udf_with_one_output_as_the_value(spark: Any, counted: ReferenceServer) -> None:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, IntegerType

    udf = predict_batch_udf(
        make_predict_fn(counted.http_url, "add_sub", ["INPUT0", "INPUT1"], "OUTPUT1", batch_size=32),
        return_type=ArrayType(IntegerType()),
        batch_size=64,
        input_tensor_shapes=[[16], [16]],
    )
    out = _frame(spark).select("a", udf("a", "b").alias("diff")).collect()
    assert len(out) == ROWS and all(r["diff"] == [v - 1 for v in r["a"]] for r in out)
    with pytest.raises(ValueError, match="struct return type"):
        make_predict_fn(counted.http_url, "add_sub", ["INPUT0", "INPUT1"], "OUTPUT1", on_error="column")


def test_one_client_per_worker_reused_across_batches_and_tasks(
    spark: Any, counted: ReferenceServer, tmp_path: Path
) -> None:
    log = tmp_path / "builds.txt"
    spec = CountingSpec(counted.http_url, str(log), rest_config=RESTConfig(retries=0))
    out = infer_dataframe(
        _frame(spark, partitions=8),
        spec,
        "add_sub",
        {"a": "INPUT0", "b": "INPUT1"},
        "sum array<int>",
        {"OUTPUT0": "sum"},
        keep_columns=["id"],
        batch_size=16,
    ).collect()
    assert len(out) == ROWS
    builds = log.read_text().split()
    # 8 tasks of several Arrow batches each, on (at most) two reused Python workers: one client per worker.
    assert len(builds) == len(set(builds)) <= 2
    assert counted.count(route="infer", model="add_sub") >= ROWS // 16


def test_string_columns_and_typed_outputs(spark: Any, counted: ReferenceServer) -> None:
    df = infer_dataframe(
        _frame(spark),
        counted.grpc_url,
        "identity_bytes",
        {"text": "INPUT0"},
        "echo string",
        {"OUTPUT0": "echo"},
        keep_columns=["id"],
    )
    assert [(f.name, f.dataType.simpleString()) for f in df.schema.fields] == [("id", "bigint"), ("echo", "string")]
    assert sorted((r["id"], r["echo"]) for r in df.collect()) == [(i, f"row-{i}") for i in range(ROWS)]


def test_retries_follow_the_client_policy(spark: Any, counted: ReferenceServer) -> None:
    counted.inject(Fault(route="infer", model="add_sub", status=429, retry_after=0.05, times=2))
    spec = ClientSpec(counted.http_url, rest_config=RESTConfig(retries=3))
    out = infer_dataframe(
        _frame(spark, partitions=2),
        spec,
        "add_sub",
        {"a": "INPUT0", "b": "INPUT1"},
        "sum array<int>",
        {"OUTPUT0": "sum"},
        keep_columns=["id"],
        batch_size=50,
    ).collect()
    assert all(r["sum"] is not None for r in out) and len(out) == ROWS
    assert counted.count(route="infer", model="add_sub") >= ROWS // 50 + 2  # the two 429s were retried


@pytest.mark.parametrize("api", ["mapInPandas", "predict_batch_udf"])
def test_failed_rows_become_an_error_column(spark: Any, counted: ReferenceServer, api: str) -> None:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

    counted.inject(Fault(route="infer", model="add_sub", status=400, message="bad batch", times=1))
    spec = ClientSpec(counted.http_url, rest_config=RESTConfig(retries=0))
    frame = _frame(spark, partitions=1)
    options: dict[str, Any] = {"batch_size": 20, "concurrency": 1, "on_error": "column"}
    if api == "mapInPandas":
        df = infer_dataframe(
            frame, spec, "add_sub", {"a": "INPUT0", "b": "INPUT1"}, "sum array<int>", {"OUTPUT0": "sum"},
            keep_columns=["id"], **options,
        )  # fmt: skip
    else:
        returns = StructType([StructField("sum", ArrayType(IntegerType())), StructField("error", StringType())])
        udf = predict_batch_udf(
            make_predict_fn(spec, "add_sub", ["INPUT0", "INPUT1"], {"OUTPUT0": "sum"}, **options),
            return_type=returns,
            batch_size=ROWS,
            input_tensor_shapes=[[16], [16]],
        )
        df = frame.withColumn("out", udf("a", "b")).select("id", "out.*")
    rows = df.collect()
    failed = [r for r in rows if r["error"] is not None]
    assert len(rows) == ROWS and len(failed) == 20  # exactly the rows of the one failed request
    assert all("InvalidInputError" in r["error"] and "bad batch" in r["error"] for r in failed)
    empty = None if api == "mapInPandas" else [0] * 16
    assert all(r["sum"] == empty for r in failed)
    assert all(r["sum"] is not None and len(r["sum"]) == 16 for r in rows if r["error"] is None)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_generate_dataframe_with_prompts_and_an_error_column(
    spark: Any, counted: ReferenceServer, transport: str
) -> None:
    prompts = ["the quick brown fox", "jumps over", "the lazy dog"]
    rows = [(i, prompts[i % 3], 1 + i % 4) for i in range(60)]
    frame = spark.createDataFrame(rows, "id long, prompt string, max_tokens int").repartition(2, "id")
    url = counted.http_url if transport == "rest" else counted.grpc_url

    def expected(prompt: str, max_tokens: int) -> str:  # the stand-in LLM: the prompt's first max_tokens words
        words = prompt.split()
        return "".join(([w + " " for w in words[:-1]] + words[-1:])[:max_tokens])

    # Columns -> payload keys (a per-row max_tokens), the answer renamed, typed schema put together.
    df = generate_dataframe(
        frame, url, "llm_once", {"prompt": "text_input", "max_tokens": "max_tokens"}, {"text_output": "answer"},
        keep_columns=["id", "prompt"], concurrency=2,
    )  # fmt: skip
    assert [(f.name, f.dataType.simpleString()) for f in df.schema.fields] == [
        ("id", "bigint"), ("prompt", "string"), ("answer", "string"),
    ]  # fmt: skip
    assert sorted((r["id"], r["answer"]) for r in df.collect()) == [(i, expected(p, m)) for i, p, m in rows]

    # A payload function; every fifth row's payload names no input of the model: its error is in the column.
    def payload(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": row["prompt"]} if row["id"] % 5 == 0 else {"text_input": row["prompt"]}

    out = generate_dataframe(
        frame, ClientSpec(url) if transport == "grpc" else ClientSpec(url, rest_config=RESTConfig(retries=0)),
        "llm_once", payload=payload, parameters={"max_tokens": 2}, keep_columns=["id"], on_error="column",
    ).collect()  # fmt: skip
    assert len(out) == 60
    for r in out:
        if r["id"] % 5 == 0:
            assert r["text_output"] is None and "text_input" in r["error"]
        else:
            assert r["error"] is None and r["text_output"] == expected(prompts[r["id"] % 3], 2)
