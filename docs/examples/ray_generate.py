"""Run an LLM over a column of prompts from Ray Data, using inferkit's Ray adapter (one generate request per row).

Runs anywhere with ``pip install inferkit[aio] "ray[data]"``: without ``--url`` it starts inferkit's embedded
reference server with its stand-in LLM (``llm_once``: it answers with the first ``max_tokens`` words of the prompt)
and a local Ray instance. Point ``--url`` and ``--model`` at a real Triton serving an LLM (TensorRT-LLM and vLLM
models take ``text_input`` and ``max_tokens`` and answer ``text_output``) to run it for real.

    python docs/examples/ray_generate.py --rows 200 --actors 2
    python docs/examples/ray_generate.py --url http://triton.internal:8000 --model ensemble
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Iterator

import ray

from inferkit import RESTConfig
from inferkit.integrations.ray import ClientSpec, GeneratePredictor
from inferkit.testing import ReferenceServer
from inferkit.testing.models import llm_model


@contextlib.contextmanager
def model_server(url: str | None) -> Iterator[str]:
    """The URL to use: the one given, or that of an embedded reference server with the stand-in LLM."""
    if url:
        yield url
        return
    with ReferenceServer([llm_model("llm_once", decoupled=False)], max_workers=8) as server:
        yield server.http_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="model server URL (default: start an embedded reference server)")
    parser.add_argument("--model", default="llm_once")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()

    # Ray workers are new processes: they must be able to import inferkit (installed, or this checkout).
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": checkout}}, include_dashboard=False)

    # A prompt column and a per-row parameter; in real life: ray.data.read_parquet(...).
    topics = ["the sea", "a mountain", "the city at night", "an old library"]
    ds = ray.data.from_items(
        [
            {"id": i, "prompt": f"Write one line about {topics[i % 4]}", "max_tokens": 4 + i % 3}
            for i in range(args.rows)
        ]
    )

    with model_server(args.url) as url:
        answered = ds.map_batches(
            GeneratePredictor,
            fn_constructor_kwargs={
                "client": ClientSpec(url, rest_config=RESTConfig(timeout=120, retries=3)),
                "model_name": args.model,
                "inputs": {"prompt": "text_input", "max_tokens": "max_tokens"},  # column -> payload key
                "parameters": {"temperature": 0.2},  # added to every payload
                "outputs": {"text_output": "answer"},  # answer field -> column
                "keep_columns": ["id", "prompt"],
                "concurrency": 8,  # generate requests in flight per actor
                "on_error": "column",  # a failed row gets its error in column "error", the job goes on
            },
            concurrency=args.actors,  # Ray actors, each with its own client
            batch_size=64,  # rows per map_batches call
            batch_format="numpy",
            num_cpus=0.5,  # network-bound: pack actors
        )
        rows = sorted(answered.take_all(), key=lambda r: r["id"])

    failed = [r for r in rows if r["error"] is not None]
    print(f"{len(rows)} prompts answered, {len(failed)} failed; first: {rows[0]['prompt']!r} -> {rows[0]['answer']!r}")
    ray.shutdown()


if __name__ == "__main__":
    main()
