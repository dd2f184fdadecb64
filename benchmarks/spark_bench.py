"""Rows per second of one Spark job (local[2]) that scores 100k rows with Triton's ``add_sub`` model over HTTP:
through inferkit's Spark adapter (one client per Python worker, requests in flight) against the same job through
tritonclient in a pandas UDF that makes a client per batch, as tritonclient's examples do. One run, the variants
interleaved, medians reported.

    python benchmarks/spark_bench.py [--rows 100000] [--repeats 3] [--json out.json]

Needs pyspark, pandas, pyarrow and tritonclient[http] in the running interpreter (``tox -e spark-bench``), Java 17,
and Triton's cached venv (tests/interop/harness.py builds it on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd  # at module level: pandas_udf resolves the UDF's (string) annotations in this module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inferkit.integrations.spark import ClientSpec, make_predict_fn  # noqa: E402
from tests.interop.harness import start_server  # noqa: E402

ROWS_PER_BATCH = 1024  # rows Spark hands the UDF at a time (Arrow batch), the same for every variant


def tritonclient_udf(url: str) -> Any:
    """tritonclient in a pandas UDF, written as its examples write it: a client per batch, one request per batch."""
    from pyspark.sql.functions import pandas_udf

    host = url.split("://", 1)[1]

    @pandas_udf("array<int>")  # type: ignore[call-overload]
    def add(a: pd.Series, b: pd.Series) -> pd.Series:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(host)
        x0, x1 = np.vstack(a.to_numpy()).astype(np.int32), np.vstack(b.to_numpy()).astype(np.int32)
        inputs = [
            httpclient.InferInput("INPUT0", list(x0.shape), "INT32"),
            httpclient.InferInput("INPUT1", list(x1.shape), "INT32"),
        ]
        inputs[0].set_data_from_numpy(x0)
        inputs[1].set_data_from_numpy(x1)
        result = client.infer("add_sub", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
        client.close()
        return pd.Series(list(result.as_numpy("OUTPUT0")))

    return add


def inferkit_udf(url: str, batch_size: int, concurrency: int) -> Any:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, IntegerType

    spec = ClientSpec(url)
    return predict_batch_udf(
        make_predict_fn(
            spec, "add_sub", ["INPUT0", "INPUT1"], "OUTPUT0", batch_size=batch_size, concurrency=concurrency
        ),
        return_type=ArrayType(IntegerType()),
        batch_size=ROWS_PER_BATCH,
        input_tensor_shapes=[[16], [16]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(ROWS_PER_BATCH))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    a = (np.arange(args.rows * 16, dtype=np.int64).reshape(args.rows, 16) % 1000).astype(np.int32)
    df = spark.createDataFrame([(a[i].tolist(), [1] * 16) for i in range(args.rows)], "a array<int>, b array<int>")
    df = df.repartition(2).cache()
    df.count()  # materialized once: the jobs below time the inference, not building the rows

    with start_server("triton") as triton:
        url = triton.http_url
        variants: dict[str, Callable[[], Any]] = {
            "tritonclient pandas UDF (client per batch, 1 request of 1024 rows)": lambda: tritonclient_udf(url),
            "inferkit predict_batch_udf (client per worker, 1 request of 1024 rows)": lambda: inferkit_udf(
                url, 1024, 1
            ),
            "inferkit predict_batch_udf (client per worker, 4 x 256 rows in flight)": lambda: inferkit_udf(url, 256, 4),
        }
        udfs = {name: make() for name, make in variants.items()}
        rates: dict[str, list[float]] = {name: [] for name in udfs}
        check = df.limit(5).select("a").collect()
        for name, udf in udfs.items():  # a warm-up run of each (and a correctness check)
            out = df.limit(5).select(udf("a", "b").alias("sum")).collect()
            assert [r["sum"] for r in out] == [[v + 1 for v in r["a"]] for r in check], name
        for _ in range(args.repeats):
            for name, udf in udfs.items():
                t0 = time.perf_counter()
                df.select(udf("a", "b").alias("sum")).write.format("noop").mode("overwrite").save()
                rates[name].append(args.rows / (time.perf_counter() - t0))
    spark.stop()

    medians = {name: statistics.median(r) for name, r in rates.items()}
    base = medians[next(iter(medians))]
    print(f"{args.rows} rows, local[2], Triton 2.51 add_sub INT32 [rows, 16] over HTTP; median of {args.repeats}:")
    for name, rate in medians.items():
        print(f"  {rate:>10,.0f} rows/s  x{rate / base:.2f}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "runs": rates, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
