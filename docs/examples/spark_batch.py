"""Score a Spark DataFrame with a model server, using inferkit's Spark adapter, two ways: Spark's own
``predict_batch_udf`` (a column of structs) and ``mapInPandas`` (a new DataFrame with typed columns).

Runs anywhere with ``pip install "inferkit[grpc,aio,spark]"`` and Java 17: without ``--url`` it starts inferkit's
embedded reference server (serving Triton's classic ``add_sub`` model on 127.0.0.1) and a local Spark
(``local[2]``), so the whole job runs on one machine. Point ``--url`` at a real Triton/KServe server
(``http://...`` for REST, ``grpc://...`` for gRPC) serving a model with the same inputs to run it for real.

    python docs/examples/spark_batch.py --rows 10000
    python docs/examples/spark_batch.py --url grpc://triton.internal:8001
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Iterator, Optional, Sequence

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import SparkSession
from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

from inferkit import RESTConfig
from inferkit.integrations.spark import ClientSpec, infer_dataframe, make_predict_fn
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model


@contextlib.contextmanager
def model_server(url: Optional[str]) -> Iterator[str]:
    """The URL to use: the one given, or that of an embedded reference server started for the run."""
    if url:
        yield url
        return
    with ReferenceServer([add_sub_model()], grpc=True, max_workers=8) as server:
        yield server.http_url


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="model server URL (default: start an embedded reference server)")
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args(argv)

    # Spark's Python workers are new processes: this interpreter, able to import inferkit (installed, or this
    # checkout). On a cluster, install inferkit on the workers instead.
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))
    spark = SparkSession.builder.master("local[2]").config("spark.driver.host", "127.0.0.1").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")

    # An id column and two INT32 [16] feature columns; in real life: spark.read.parquet(...).
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, size=(args.rows, 16), dtype=np.int32)
    df = spark.createDataFrame(
        [(i, a[i].tolist(), [1] * 16) for i in range(args.rows)], "id long, a array<int>, b array<int>"
    )

    with model_server(args.url) as url:
        if url.startswith("grpc"):
            spec = ClientSpec(url, grpc_options={"timeout": 30, "retries": 3})
        else:
            spec = ClientSpec(url, rest_config=RESTConfig(timeout=30, retries=3))

        # 1. predict_batch_udf: Spark hands each worker 1024 rows at a time; inferkit sends them as requests of
        #    128 rows, 4 in flight per worker, through one client per worker.
        add_sub = predict_batch_udf(
            make_predict_fn(spec, "add_sub", ["INPUT0", "INPUT1"], {"OUTPUT0": "sum"}, batch_size=128, concurrency=4),
            return_type=StructType([StructField("sum", ArrayType(IntegerType()))]),
            batch_size=1024,
            input_tensor_shapes=[[16], [16]],
        )
        t0 = time.perf_counter()
        udf_rows = df.withColumn("out", add_sub("a", "b")).select("id", "out.sum").collect()
        udf_seconds = time.perf_counter() - t0

        # 2. mapInPandas: a new DataFrame with typed columns; a failed request's rows get an error instead of
        #    failing the job (on_error="column").
        scored = infer_dataframe(
            df,
            spec,
            "add_sub",
            inputs={"a": "INPUT0", "b": "INPUT1"},
            output_schema="sum array<int>, diff array<int>",
            outputs={"OUTPUT0": "sum", "OUTPUT1": "diff"},
            keep_columns=["id"],
            batch_size=128,
            concurrency=4,
            on_error="column",
        )
        assert scored.schema["error"].dataType == StringType()
        t0 = time.perf_counter()
        rows = scored.collect()
        pandas_seconds = time.perf_counter() - t0

    for r in udf_rows:
        assert r["sum"] == (a[r["id"]] + 1).tolist()
    for r in rows:
        assert r["error"] is None and r["diff"] == (a[r["id"]] - 1).tolist()
    print(f"predict_batch_udf: {len(udf_rows)} rows in {udf_seconds:.2f} s")
    print(f"mapInPandas: {len(rows)} rows in {pandas_seconds:.2f} s; first: {rows[0].asDict()}")
    spark.stop()


if __name__ == "__main__":
    main()
