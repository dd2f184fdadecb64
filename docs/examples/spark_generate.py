"""Run an LLM over a column of prompts in a Spark DataFrame, using inferkit's Spark adapter (``mapInPandas``, one
generate request per row, one client per Spark Python worker).

Runs anywhere with ``pip install "inferkit[grpc,aio,spark]"`` and Java 17: without ``--url`` it starts inferkit's
embedded reference server with its stand-in LLM (``llm_once``: it answers with the first ``max_tokens`` words of
the prompt) and a local Spark (``local[2]``). Point ``--url`` and ``--model`` at a real Triton serving an LLM to
run it for real.

    python docs/examples/spark_generate.py --rows 200
    python docs/examples/spark_generate.py --url http://triton.internal:8000 --model ensemble
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, Optional, Sequence

from pyspark.sql import SparkSession

from inferkit import RESTConfig
from inferkit.integrations.spark import ClientSpec, generate_dataframe
from inferkit.testing import ReferenceServer
from inferkit.testing.models import llm_model


@contextlib.contextmanager
def model_server(url: Optional[str]) -> Iterator[str]:
    """The URL to use: the one given, or that of an embedded reference server with the stand-in LLM."""
    if url:
        yield url
        return
    with ReferenceServer([llm_model("llm_once", decoupled=False)], max_workers=8) as server:
        yield server.http_url


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="model server URL (default: start an embedded reference server)")
    parser.add_argument("--model", default="llm_once")
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args(argv)

    # Spark's Python workers are new processes: this interpreter, able to import inferkit (installed, or this
    # checkout). On a cluster, install inferkit on the workers instead.
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))
    spark = SparkSession.builder.master("local[2]").config("spark.driver.host", "127.0.0.1").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")

    # A prompt column and a per-row parameter; in real life: spark.read.parquet(...).
    topics = ["the sea", "a mountain", "the city at night", "an old library"]
    df = spark.createDataFrame(
        [(i, f"Write one line about {topics[i % 4]}", 4 + i % 3) for i in range(args.rows)],
        "id long, prompt string, max_tokens int",
    )

    with model_server(args.url) as url:
        answered = generate_dataframe(
            df,
            ClientSpec(url, rest_config=RESTConfig(timeout=120, retries=3)),
            args.model,
            inputs={"prompt": "text_input", "max_tokens": "max_tokens"},  # column -> payload key
            outputs={"text_output": "answer"},  # answer field -> column (a string column)
            parameters={"temperature": 0.2},  # added to every payload
            keep_columns=["id", "prompt"],
            concurrency=8,  # generate requests in flight per Spark Python worker
            on_error="column",  # a failed row gets its error in column "error", the job goes on
        )
        rows = sorted(answered.collect(), key=lambda r: r["id"])

    failed = [r for r in rows if r["error"] is not None]
    print(f"{len(rows)} prompts answered, {len(failed)} failed; first: {rows[0]['prompt']!r} -> {rows[0]['answer']!r}")
    spark.stop()


if __name__ == "__main__":
    main()
