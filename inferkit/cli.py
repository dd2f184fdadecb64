"""The ``inferkit`` command: ``inferkit serve`` (serve Python callables over REST and gRPC) and ``inferkit demo``.

Owns: argument parsing, loading ``module:callable`` model specs, and the demo, which runs the reference server
with the demo models and calls it with inferkit's own clients (sync REST, sync gRPC, asyncio), printing results
and timings. A client that cannot be imported yet is reported as "not available" and skipped.
Layering: cli -> testing, factory, clients. Optional dependencies (aiohttp, grpc) load only when a command
needs them.
Must not import at module level: aiohttp, grpc.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from inferkit._version import __version__

__all__ = ["main", "load_models", "parse_tensor_spec"]


# -- serve -------------------------------------------------------------------------------------------------


def parse_tensor_spec(text: str) -> Any:
    """``NAME:DATATYPE[:D0,D1,...]`` -> TensorSpec (shape defaults to ``-1``), e.g. ``x:FP32:-1,4``."""
    from inferkit.testing import TensorSpec  # noqa: PLC0415 - keeps `inferkit --version` light

    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise argparse.ArgumentTypeError(f"tensor spec {text!r}: expected NAME:DATATYPE[:D0,D1,...]")
    try:
        shape = [int(d) for d in parts[2].split(",")] if len(parts) == 3 and parts[2] else [-1]
        return TensorSpec(parts[0], parts[1], shape)
    except Exception as exc:
        raise argparse.ArgumentTypeError(f"tensor spec {text!r}: {exc}") from exc


def _resolve(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r}: expected module:callable (e.g. mypkg.models:make_models)")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _required_positional(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 0
    return sum(
        1
        for p in params
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def load_models(
    specs: Sequence[str], inputs: Sequence[Any] = (), outputs: Sequence[Any] = (), name: str | None = None
) -> list[Any]:
    """Turn ``module:callable`` specs into Models.

    Each spec names a Model, a list of Models, a factory taking no arguments that returns either, or a plain
    model function ``fn(inputs, parameters) -> dict`` which is wrapped in a Model named ``name`` (or the
    function's name) with the declared ``inputs``/``outputs`` specs (none declared: any inputs are accepted and
    output datatypes follow the arrays).
    """
    from inferkit.testing import Model  # noqa: PLC0415

    models: list[Any] = []
    for spec in specs:
        obj = _resolve(spec)
        if callable(obj) and not isinstance(obj, Model) and _required_positional(obj) == 0:
            obj = obj()
        if isinstance(obj, Model):
            models.append(obj)
        elif isinstance(obj, (list, tuple)) and obj and all(isinstance(m, Model) for m in obj):
            models.extend(obj)
        elif callable(obj):
            model_name = name if name and len(specs) == 1 else getattr(obj, "__name__", "model")
            models.append(Model(model_name, obj, inputs=list(inputs), outputs=list(outputs)))
        else:
            raise ValueError(f"{spec!r} is a {type(obj).__name__}: expected a Model, a list of Models or a callable")
    return models


def _port(text: str) -> int:
    """A TCP port for ``--http-port`` / ``--grpc-port``: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number from 0 (any free port) to 65535")
    return port


def _serve(args: argparse.Namespace) -> int:
    from inferkit.testing import ReferenceServer  # noqa: PLC0415
    from inferkit.testing.models import demo_models  # noqa: PLC0415

    models = load_models(args.models, args.input or (), args.output or (), args.name) if args.models else demo_models()
    server = ReferenceServer(
        models, grpc=not args.no_grpc, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port
    )
    try:
        server.start()
    except (OSError, RuntimeError) as exc:  # a port in use, a host that is not this machine's (grpc: RuntimeError)
        ports = f"REST port {args.http_port}" + ("" if args.no_grpc else f", gRPC port {args.grpc_port}")
        raise OSError(f"cannot listen on {args.host} ({ports}): {exc}") from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if _main_thread() else None
    try:
        print(f"inferkit reference server {__version__}: {len(models)} model(s): {', '.join(server.models)}")
        print(f"  REST  {server.http_url}")
        if not args.no_grpc:
            print(f"  gRPC  {server.grpc_url}")
        print("Ctrl-C to stop", flush=True)
        stop.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# -- demo --------------------------------------------------------------------------------------------------

IRIS_SAMPLES = np.array([[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.9, 3.1, 5.4, 2.1]], dtype=np.float32)

TOP1_EXPLAINED = (
    "    (one 'score:index:label' per sample: the probability, index and name of its most likely class; the\n"
    "     server computes it when the request asks InferRequestedOutput('probabilities', class_count=1))"
)

#: The "infer iris" call of the demo as a user writes it (docs/cli.md shows the same code; a test runs it).
DEMO_CODE = f"""\
from inferkit import InferenceRESTClient, InferInput, InferRequest

client = InferenceRESTClient("http://127.0.0.1:8000")
x = InferInput("input", [3, 4], "FP32", data={IRIS_SAMPLES.astype(float).round(2).tolist()})
print(client.infer(InferRequest("iris", [x])).as_numpy("label"))  # [b'setosa' b'versicolor' b'virginica']
"""

NEXT_STEPS = (
    "\n== your turn\n"
    "  `inferkit serve` serves these models on http://127.0.0.1:8000 (REST) and 127.0.0.1:8001 (gRPC);\n"
    "  the 'infer iris' call above is then, in your code:\n\n"
    + "".join(f"    {line}\n" if line else "\n" for line in DEMO_CODE.splitlines())
    + "\nread on: docs/quickstart.md (first calls), docs/rest.md, docs/grpc.md and docs/async.md (the clients),\n"
    "  docs/errors.md (what fails and how), docs/cli.md (serve your own models; `inferkit bench` to load-test)"
)


class _Demo:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.failures = 0

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def timed(self, label: str, fn: Callable[[], Any], show: Callable[[Any], Any] = repr) -> Any:
        start = time.perf_counter()
        value = fn()
        elapsed = (time.perf_counter() - start) * 1000
        self.say(f"  {label:<44} {elapsed:8.2f} ms  {show(value)}")
        return value

    def section(self, title: str, body: Callable[[], Any], is_async: bool = False) -> None:
        self.say(f"\n== {title}")
        try:
            if is_async:
                asyncio.run(body())
            else:
                body()
        except (ImportError, AttributeError, NotImplementedError) as exc:
            self.say(f"  not available yet: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a real failure of an available client: shown, and the exit status says so
            self.failures += 1
            self.say(f"  FAILED: {type(exc).__name__}: {exc}")


def _iris_request(model: str = "iris") -> Any:
    from inferkit import InferInput, InferRequest, InferRequestedOutput  # noqa: PLC0415

    x = InferInput("input", list(IRIS_SAMPLES.shape), "FP32")
    x.set_data_from_numpy(IRIS_SAMPLES)
    outputs = [InferRequestedOutput("label"), InferRequestedOutput("probabilities", class_count=1)]
    return InferRequest(model, [x], outputs=outputs)


def _labels(response: Any) -> str:
    return str([v.decode() if isinstance(v, bytes) else v for v in response.as_numpy("label").tolist()])


def _top1(response: Any) -> str:
    return str([v.decode() if isinstance(v, bytes) else v for v in response.as_numpy("probabilities").reshape(-1)])


def _add_sub_request() -> Any:
    from inferkit import InferInput, InferRequest  # noqa: PLC0415

    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [InferInput("INPUT0", [1, 16], "INT32"), InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.ones_like(a))
    return InferRequest("add_sub", inputs)


def _repeat_request(values: Sequence[int]) -> Any:
    from inferkit import InferInput, InferRequest  # noqa: PLC0415

    x = InferInput("IN", [len(values)], "INT32")
    x.set_data_from_numpy(np.array(values, dtype=np.int32))
    return InferRequest("repeat", [x], request_id="demo-stream")


def _demo(args: argparse.Namespace) -> int:
    from inferkit.testing import Fault, ReferenceServer  # noqa: PLC0415
    from inferkit.testing.models import demo_models  # noqa: PLC0415

    demo = _Demo(sys.stdout)
    start = time.perf_counter()
    models = demo_models()
    trained = (time.perf_counter() - start) * 1000
    server = ReferenceServer(models, grpc=not args.no_grpc)
    with server:
        demo.say(f"inferkit {__version__} demo")
        demo.say(
            f"reference server ready in {server.startup_seconds * 1000:.1f} ms "  # type: ignore[operator]
            f"(models built and iris classifier trained in {trained:.1f} ms)"
        )
        demo.say(f"  REST {server.http_url}" + ("" if args.no_grpc else f"   gRPC {server.grpc_url}"))
        demo.say(f"  models: {', '.join(server.models)}")
        demo.say(f"  iris samples (cm): {IRIS_SAMPLES.astype(float).round(2).tolist()}")

        def rest() -> None:
            from inferkit import InferenceRESTClient, RESTConfig  # noqa: PLC0415

            with InferenceRESTClient(server.http_url) as client:
                demo.timed("is_server_live()", client.is_server_live)
                demo.timed("get_server_metadata()", client.get_server_metadata, lambda m: m["name"])
                demo.timed(
                    "get_model_metadata('iris')",
                    lambda: client.get_model_metadata("iris"),
                    lambda m: [(t["name"], t["datatype"], t["shape"]) for t in m["inputs"]],
                )
                for i in range(2):
                    demo.timed(f"infer iris [3,4] (call {i + 1})", lambda: client.infer(_iris_request()), _labels)
                demo.timed("infer iris top-1 (classification)", lambda: client.infer(_iris_request()), _top1)
                demo.say(TOP1_EXPLAINED)
                demo.timed(
                    "infer add_sub",
                    lambda: client.infer(_add_sub_request()),
                    lambda r: f"OUTPUT0[:4]={r.as_numpy('OUTPUT0')[0, :4].tolist()}",
                )
                server.inject(
                    Fault(route="infer", model="add_sub", action="status", status=503, retry_after=0, times=1)
                )
                before = server.count(route="infer", model="add_sub")
                demo.timed(
                    "infer add_sub after an injected 503",
                    lambda: client.infer(_add_sub_request()),
                    lambda r: f"ok after {server.count(route='infer', model='add_sub') - before} attempts",
                )
            with InferenceRESTClient(server.http_url, config=RESTConfig(protocol="v1")) as v1:
                demo.timed(
                    "v1 predict iris",
                    lambda: v1.predict("iris", instances=IRIS_SAMPLES.tolist()),
                    lambda r: [p["label"] for p in r["predictions"]],
                )
                demo.timed(
                    "v1 explain iris",
                    lambda: v1.explain("iris", instances=IRIS_SAMPLES[:1].tolist()),
                    lambda r: r["explanations"][0]["contributions"],
                )

        def grpc_sync() -> None:
            from inferkit import InferenceGRPCClient  # noqa: PLC0415

            with InferenceGRPCClient(server.grpc_address) as client:
                demo.timed("is_server_ready()", client.is_server_ready)
                for i in range(2):
                    demo.timed(f"infer iris [3,4] (call {i + 1})", lambda: client.infer(_iris_request()), _labels)
                demo.timed(
                    "stream_infer repeat [7, 8, 9] (decoupled)",
                    lambda: list(client.stream_infer([_repeat_request([7, 8, 9])])),
                    lambda rs: f"{len(rs)} responses: {[int(r.as_numpy('OUT')[0]) for r in rs]}",
                )

        async def aio() -> None:
            aio_pkg: Any = importlib.import_module("inferkit.aio")  # Any: its names land as the package grows

            async with aio_pkg.InferenceRESTClient(server.http_url) as client:
                await _atimed(demo, "aio REST infer iris", client.infer(_iris_request()), _labels)
                requests = [client.infer(_iris_request()) for _ in range(8)]
                await _atimed(
                    demo, "aio REST 8 concurrent infers", asyncio.gather(*requests), lambda rs: f"{len(rs)} responses"
                )
            if not args.no_grpc:
                async with aio_pkg.InferenceGRPCClient(server.grpc_address) as client:
                    await _atimed(demo, "aio gRPC infer iris", client.infer(_iris_request()), _labels)

        demo.section("sync REST (inferkit.InferenceRESTClient)", rest)
        if not args.no_grpc:
            demo.section("sync gRPC (inferkit.InferenceGRPCClient)", grpc_sync)
        demo.section("asyncio (inferkit.aio)", aio, is_async=True)
        demo.say(f"\nrequests served: {server.count()} ({server.count(route='infer')} infer)")
    demo.say(NEXT_STEPS)
    if demo.failures:
        demo.say(f"{demo.failures} section(s) failed")
        return 1
    return 0


async def _atimed(demo: _Demo, label: str, awaitable: Any, show: Callable[[Any], Any]) -> Any:
    start = time.perf_counter()
    value = await awaitable
    demo.say(f"  {label:<44} {(time.perf_counter() - start) * 1000:8.2f} ms  {show(value)}")
    return value


# -- entry point ------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferkit", description="inferkit: clients for model servers, and a reference server"
    )
    parser.add_argument("--version", action="version", version=f"inferkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve Python callables as models over REST and gRPC",
        description="Serve models: each MODEL is module:callable naming a Model, a list of Models, a factory "
        "returning either, or a plain function fn(inputs, parameters) -> dict (declare its tensors with "
        "--input/--output). Without MODEL, the demo models are served.",
    )
    serve.add_argument("models", nargs="*", metavar="MODEL")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--http-port", type=_port, default=8000, help="REST port (default 8000; 0: any free port)")
    serve.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001; 0: any free port)")
    serve.add_argument("--no-grpc", action="store_true", help="serve REST only")
    serve.add_argument("--name", help="model name for a plain function (default: the function's name)")
    serve.add_argument(
        "--input",
        action="append",
        type=parse_tensor_spec,
        metavar="NAME:DATATYPE[:SHAPE]",
        help="an input of a plain function, e.g. x:FP32:-1,4 (repeatable)",
    )
    serve.add_argument(
        "--output",
        action="append",
        type=parse_tensor_spec,
        metavar="NAME:DATATYPE[:SHAPE]",
        help="an output of a plain function (repeatable)",
    )
    serve.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)

    demo = commands.add_parser("demo", help="run the reference server with demo models and call it with inferkit")
    demo.add_argument("--no-grpc", action="store_true", help="REST only")

    from inferkit import bench  # noqa: PLC0415 - stdlib + numpy only; the clients load when a run starts

    bench.add_arguments(
        commands.add_parser(
            "bench",
            help="load-test a model on any V2 server (concurrency sweep or fixed request rate)",
            description="Measure throughput and latency of a model over REST or gRPC, like perf_analyzer, "
            "with inferkit's own clients. See docs/bench.md.",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``inferkit`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _warnings_to_stderr()
    if args.command == "serve":
        try:
            return _serve(args)
        except (ImportError, ValueError, AttributeError, OSError) as exc:
            print(f"inferkit serve: {exc}", file=sys.stderr)
            return 2
    if args.command == "demo":
        try:
            return _demo(args)
        except KeyboardInterrupt:
            print("inferkit demo: interrupted", file=sys.stderr)
            return 130
    if args.command == "bench":
        from inferkit.bench import run_command  # noqa: PLC0415

        return run_command(args)
    parser.print_help()
    return 0


def _warnings_to_stderr() -> None:
    """The command is the application: inferkit's warnings go to stderr, one line each (the library itself only
    gives its logger a NullHandler, which also stops Python's last-resort handler from printing them)."""
    log = logging.getLogger("inferkit")
    if not any(getattr(h, "_inferkit_cli", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._inferkit_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
