"""gRPC streaming with a decoupled model: several responses per request over one ``ModelStreamInfer`` call.

    pip install "inferkit[grpc]"
    python docs/examples/grpc_stream.py --url grpc://127.0.0.1:8001

The ``repeat`` demo model answers a request whose input ``IN`` has N values with N responses (``OUT`` one value,
``IDX`` its position). The URL comes from ``--url`` or ``INFERKIT_GRPC_URL``; without either, an embedded
reference server is started for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, Optional, Sequence

import numpy as np

from inferkit import InferenceGRPCClient, InferInput, InferRequest
from inferkit.errors import InferkitError


def repeat_request(values: Sequence[int], request_id: str) -> InferRequest:
    x = InferInput("IN", [len(values)], "INT32").set_data_from_numpy(np.array(values, dtype=np.int32))
    return InferRequest("repeat", [x], request_id=request_id)


@contextlib.contextmanager
def server_url(url: Optional[str]) -> Iterator[str]:
    if url:
        yield url
        return
    from inferkit.testing import ReferenceServer  # noqa: PLC0415
    from inferkit.testing.models import repeat_model  # noqa: PLC0415

    with ReferenceServer([repeat_model()], rest=False, grpc=True) as server:
        yield server.grpc_url


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="gRPC stream with a decoupled model")
    parser.add_argument("--url", default=os.environ.get("INFERKIT_GRPC_URL"))
    args = parser.parse_args(argv)
    with server_url(args.url) as url, InferenceGRPCClient(url, timeout=30) as client:
        # 1. The explicit form: send, then read as responses arrive; the stream's timeout bounds every wait.
        received = 0
        with client.stream(timeout=30) as stream:
            stream.send(repeat_request([10, 20, 30], "first"))
            stream.send(repeat_request([7, 8], "second"))
            stream.close_send()  # no more requests: iteration ends after the last response
            for response in stream:
                received += 1
                print(f"  {response.id}: OUT={int(response.as_numpy('OUT')[0])} IDX={int(response.as_numpy('IDX')[0])}")
        # 2. The short form: an iterable of requests in, responses out.
        values = [int(r.as_numpy("OUT")[0]) for r in client.stream_infer([repeat_request([1, 2, 3, 4], "third")])]
        print(f"  stream_infer: {values}")
        # 3. A failed request inside a stream raises its typed error at that point; results() yields it instead.
        with client.stream(timeout=30) as stream:
            bad = InferInput("IN", [2], "FP32").set_data_from_numpy(np.array([1, 2], dtype=np.float32))
            stream.send(InferRequest("repeat", [bad], request_id="wrong-datatype"))
            stream.send(repeat_request([5], "after-the-error"))
            stream.close_send()
            for item in stream.results():
                if isinstance(item, InferkitError):
                    print(f"  error: {type(item).__name__}")
                else:
                    print(f"  {item.id}: OUT={int(item.as_numpy('OUT')[0])}")
    print(f"received {received + len(values)} streamed responses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
