"""``inferkit bench`` against the reference server: REST and gRPC, threads and asyncio, sweep and rate modes, outputs.

Steps are bounded by tiny request counts (exact counts are asserted against the server's counters) or durations of a
fraction of a second; no test asserts a wall time or a throughput.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys

import pytest

from inferkit import bench
from inferkit.bench import BenchError, BenchOptions, InputSpec, parse_levels, resolve_inputs, run_bench
from inferkit.bench.progress import _Progress
from inferkit.cli import main
from inferkit.testing import Fault, ReferenceServer

TRANSPORTS = ["rest", "grpc"]


def url_of(server: ReferenceServer, transport: str) -> str:
    return server.http_url if transport == "rest" else server.grpc_url


# -- option parsing and inputs (no server) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, integer, expected",
    [
        ("1,2,4", True, (1, 2, 4)),
        ("1:128:x2", True, (1, 2, 4, 8, 16, 32, 64, 128)),
        ("4:16:4", True, (4, 8, 12, 16)),
        ("3:5", True, (3, 4, 5)),
        ("50.5", False, (50.5,)),
        ("100:300:100", False, (100, 200, 300)),
    ],
)
def test_parse_levels(text, integer, expected):
    assert parse_levels(text, integer=integer) == tuple(float(x) for x in expected)


@pytest.mark.parametrize("text", ["", "0", "1,-2", "a,b", "8:1", "1:8:0", "1:8:x1", "1:2:3:4", "1.5"])
def test_parse_levels_rejects(text):
    with pytest.raises(BenchError, match="--concurrency"):
        parse_levels(text)


METADATA = {
    "name": "m",
    "inputs": [
        {"name": "A", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "B", "datatype": "FP32", "shape": [-1, -1]},
    ],
}


def test_inputs_from_metadata_replace_minus_one_with_batch_size():
    assert resolve_inputs(METADATA, {}, {}, batch_size=4) == [
        InputSpec("A", "INT32", (4, 16)),
        InputSpec("B", "FP32", (4, 4)),
    ]


def test_shape_flags_select_inputs_and_datatype_flags_override():
    specs = resolve_inputs(METADATA, {"B": (2, 3)}, {"B": "FP16"})
    assert specs == [InputSpec("B", "FP16", (2, 3))]
    # without metadata, flags alone must say everything
    assert resolve_inputs(None, {"X": (1,)}, {"X": "bytes"}) == [InputSpec("X", "BYTES", (1,))]


@pytest.mark.parametrize(
    "metadata, shapes, datatypes, message",
    [
        (METADATA, {"C": (1,)}, {}, "has no input 'C'; its inputs: A, B"),
        (None, {"X": (1,)}, {}, "unknown datatype; give it with --datatype X:TYPE"),
        (METADATA, {"A": (1, 16)}, {"B": "FP32"}, "--datatype B: give its shape too"),
        (METADATA, {"A": (1, 16)}, {"A": "NOPE"}, "input 'A'"),
        ({"inputs": []}, {}, {}, "no inputs to send"),
    ],
)
def test_input_errors_name_the_model_and_what_to_do(metadata, shapes, datatypes, message):
    with pytest.raises(BenchError, match=message.replace("(", r"\(")) as info:
        resolve_inputs(metadata, shapes, datatypes, model="m")
    assert "'m'" in str(info.value)


def test_every_step_must_be_bounded():
    with pytest.raises(BenchError, match="bounded"):
        run_bench(BenchOptions(url="http://127.0.0.1:1", model="m", requests=None, duration=None))


def test_progress_choice_without_a_terminal():
    assert _Progress.choose("auto", io.StringIO()) == "none"
    assert _Progress.choose("plain", io.StringIO()) == "plain"


# -- runs against the reference server -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_concurrency_sweep_counts_exactly(reference_server, transport, tmp_path, capsys):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    argv = ["bench", "-u", url_of(reference_server, transport), "-m", "add_sub", "--concurrency", "1,3"]
    argv += ["--requests", "20", "--warmup", "4", "--json", str(out_json), "--csv", str(out_csv)]
    assert main(argv) == 0
    assert reference_server.count(route="infer", model="add_sub") == 2 * (20 + 4)  # warm-up sent, not recorded

    report = json.loads(out_json.read_text())
    assert [s["level"] for s in report["steps"]] == [1, 3]
    for step in report["steps"]:
        assert step["requests"] == step["ok"] == 20 and step["errors"] == {} and step["error_rate"] == 0
        assert 0 < step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"] <= step["max_ms"] and step["throughput"] > 0
    assert report["inputs"] == [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16]},
    ]
    assert report["options"]["transport"] == transport and report["system"]["nproc"] >= 1
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["level"], r["ok"], r["error_count"]) for r in rows] == [("1.0", "20", "0"), ("3.0", "20", "0")]

    table = capsys.readouterr().out
    assert "concurrency" in table and "p99 ms" in table and "load average" in table
    assert len([line for line in table.splitlines() if line.strip().startswith(("1 ", "3 "))]) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_request_rate_is_open_loop_and_bounded_by_duration(reference_server, transport):
    options = BenchOptions(
        url=url_of(reference_server, transport),
        model="add_sub",
        request_rates=(200.0,),
        duration=0.2,
        warmup_requests=2,
    )
    report = run_bench(options)
    (step,) = report.steps
    # due times are start + k/200 for k < 0.2 * 200: 40 requests, whatever the latency (floats: one either way)
    assert 39 <= step.requests <= 41 and step.ok == step.requests
    assert step.mode == "rate" and step.label == "200/s" and step.send_lag_p99_ms is not None
    assert reference_server.count(route="infer", model="add_sub") == step.requests + 2


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["concurrency", "rate"])
def test_asyncio_driver(reference_server, transport, mode):
    pytest.importorskip("aiohttp" if transport == "rest" else "grpc")
    options = BenchOptions(
        url=url_of(reference_server, transport),
        model="add_sub",
        use_async=True,
        concurrency=(1, 4),
        request_rates=(300.0,) if mode == "rate" else (),
        requests=12,
        duration=None if mode == "concurrency" else 5.0,
        warmup_seconds=0.05,
    )
    report = run_bench(options)
    assert [s.requests for s in report.steps] == ([12, 12] if mode == "concurrency" else [12])
    assert all(s.ok == 12 for s in report.steps)


def test_metadata_shapes_and_batch_size(reference_server):
    report = run_bench(
        BenchOptions(url=reference_server.http_url, model="identity_fp32", batch_size=3, requests=3, duration=None)
    )
    (spec,) = report.inputs
    assert spec.datatype == "FP32" and spec.shape[0] == 3 and report.steps[0].ok == 3


def test_errors_by_class_and_max_error_rate(reference_server, tmp_path, capsys):
    reference_server.inject(Fault(route="infer", model="add_sub", action="status", status=500, times=5))
    argv = ["bench", "-u", reference_server.http_url, "-m", "add_sub", "--requests", "20", "--warmup", "0"]
    argv += ["--json", str(tmp_path / "r.json")]
    assert main(argv) == 1
    step = json.loads((tmp_path / "r.json").read_text())["steps"][0]
    assert step["errors"] == {"InternalServerError": 5} and step["ok"] == 15 and step["error_rate"] == 0.25
    captured = capsys.readouterr()
    assert "InternalServerError x5" in captured.out and "error rate above 0" in captured.err

    reference_server.inject(Fault(route="infer", model="add_sub", action="status", status=500, times=5))
    assert main(argv + ["--max-error-rate", "0.3"]) == 0


def test_all_errors_step_has_no_latencies(reference_server, tmp_path):
    argv = ["bench", "-u", reference_server.grpc_url, "-m", "add_sub", "--shape", "INPUT0:1,8", "--requests", "3"]
    argv += ["--warmup", "0", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 1
    step = json.loads((tmp_path / "r.json").read_text())["steps"][0]
    assert step["errors"] == {"InvalidInputError": 3} and step["p50_ms"] is None and step["throughput"] == 0


def test_unknown_model_is_a_usage_error(reference_server, capsys):
    assert main(["bench", "-u", reference_server.http_url, "-m", "nope", "--requests", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the metadata of model 'nope'" in err and "--shape" in err


def test_a_url_without_a_scheme_means_http(reference_server, capsys):
    host_port = reference_server.http_url.split("://", 1)[1]
    assert main(["bench", "-u", host_port, "-m", "add_sub", "--requests", "3", "--warmup", "0"]) == 0
    assert reference_server.count(route="infer", model="add_sub") == 3
    assert "rest via threads" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-u", "htp://127.0.0.1:1"], "unsupported URL scheme 'htp' in 'htp://127.0.0.1:1': use http:// or https://"),
        (["-u", "grpc://"], "--url 'grpc://' has no host:port"),
        (["-u", "http://h:1/?q=1"], "--url 'http://h:1/?q=1': the server URL 'http://h:1/?q=1' must not carry"),
        (["--timeout", "-1"], "--timeout -1.0: expected a number of seconds > 0"),
        (["--timeout", "nan"], "--timeout nan: expected a number of seconds > 0"),
        (["--retries", "-1"], "--retries -1: expected an integer >= 0"),
        (["--seed", "-1"], "--seed -1: expected an integer >= 0"),
        (["--concurrency", "0"], "--concurrency '0': every level must be > 0"),
        (["--json", "/nonexistent-dir-xyz/r.json"], "--json '/nonexistent-dir-xyz/r.json': the directory"),
        (["--csv", "."], "--csv '.' is a directory"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(flags, message, capsys):
    argv = ["bench", "-u", "http://127.0.0.1:1", "-m", "m", "--requests", "1", "--warmup", "0"]
    assert main(argv + flags) == 2  # nothing is sent: each is caught before the run
    err = capsys.readouterr().err
    assert err.startswith("inferkit bench: ") and message in err and err.count("\n") == 1


def test_a_bad_url_shows_no_traceback():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "inferkit.cli", "bench", "-u", "htp://127.0.0.1:1", "-m", "m"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "inferkit bench: --url: unsupported URL scheme 'htp' in 'htp://127.0.0.1:1': use http:// or https:// (REST), "
        "grpc:// or grpcs:// (gRPC); no scheme means http://"
    ]


def test_failed_requests_show_their_message_and_stop_the_run(reference_server, tmp_path, capsys):
    argv = ["bench", "-u", reference_server.http_url, "-m", "add_sub", "--shape", "INPUT0:1,8"]
    argv += ["--concurrency", "1,2,4", "--requests", "3", "--warmup", "0", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 1
    assert reference_server.count(route="infer", model="add_sub") == 3  # step 1 only: the others would fail alike
    captured = capsys.readouterr()
    message = "unexpected shape for input 'INPUT0' for model 'add_sub'"
    assert "InvalidInputError x3" in captured.out
    assert f"InvalidInputError (step 1): {message}" in captured.out
    assert "every request of step 1 failed, so the run stopped there (--keep-going runs every step)" in captured.err
    assert f"wrote the JSON report to {tmp_path / 'r.json'}" in captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stopped_after"] == "1" and [s["label"] for s in report["steps"]] == ["1"]
    assert message in report["steps"][0]["error_messages"]["InvalidInputError"]

    reference_server.reset()
    assert main(argv + ["--keep-going"]) == 1
    assert reference_server.count(route="infer", model="add_sub") == 9
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stopped_after"] is None and [s["label"] for s in report["steps"]] == ["1", "2", "4"]
    assert "InvalidInputError (steps 1, 2, 4): " in capsys.readouterr().out


def test_a_step_with_some_errors_does_not_stop_the_run(reference_server, tmp_path):
    reference_server.inject(Fault(route="infer", model="add_sub", action="status", status=500, times=2))
    options = BenchOptions(
        url=reference_server.http_url, model="add_sub", concurrency=(1, 2), requests=4, duration=None
    )
    report = run_bench(options)
    assert [s.errors for s in report.steps] == [{"InternalServerError": 2}, {}] and report.stopped_after is None
    assert report.steps[0].error_messages["InternalServerError"]  # the server's reason, not just the class


@pytest.fixture
def fake_matplotlib(monkeypatch):
    """matplotlib's Figure and Agg canvas as mocks (savefig writes a PNG signature): --plot without the extra."""
    import types
    from unittest import mock

    def savefig(path, format):  # noqa: A002 - matplotlib's name
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")

    figure = mock.MagicMock(name="Figure")
    figure.return_value.savefig.side_effect = savefig
    modules = {
        "matplotlib": types.ModuleType("matplotlib"),
        "matplotlib.figure": types.SimpleNamespace(Figure=figure),
        "matplotlib.backends": types.ModuleType("matplotlib.backends"),
        "matplotlib.backends.backend_agg": types.SimpleNamespace(FigureCanvasAgg=mock.MagicMock()),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return figure


def test_plot_is_not_written_when_every_request_failed(reference_server, tmp_path, capsys, fake_matplotlib):
    png = tmp_path / "p.png"
    argv = ["bench", "-u", reference_server.http_url, "-m", "add_sub", "--shape", "INPUT0:1,8", "--requests", "2"]
    assert main(argv + ["--warmup", "0", "--plot", str(png), "--csv", str(tmp_path / "r.csv")]) == 1
    assert not png.exists() and not fake_matplotlib.called
    err = capsys.readouterr().err
    assert "no plot written: no step had a successful request" in err
    assert f"wrote the CSV to {tmp_path / 'r.csv'}" in err


def test_plot_written_is_said(reference_server, tmp_path, capsys, fake_matplotlib):
    png = tmp_path / "p.png"
    argv = ["bench", "-u", reference_server.http_url, "-m", "add_sub", "--requests", "2", "--warmup", "0"]
    assert main(argv + ["--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote the plot to {png}" in capsys.readouterr().err


def test_plot_writes_a_png(reference_server, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    argv = ["bench", "-u", reference_server.http_url, "-m", "add_sub", "--concurrency", "1,2", "--requests", "5"]
    assert main(argv + ["--warmup", "0", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    assert main(["bench", "-u", "http://127.0.0.1:1", "-m", "m", "--plot", "x.png"]) == 2
    assert "pip install 'inferkit[plot]'" in capsys.readouterr().err
    with pytest.raises(ImportError, match=r"inferkit\[plot\]"):
        bench.write_plot(bench.BenchReport(BenchOptions(url="http://x", model="m"), {}, []), "x.png")


def test_async_without_inferkit_aio_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "inferkit.aio", None)
    assert main(["bench", "-u", "http://127.0.0.1:1", "-m", "m", "--async", "--requests", "1"]) == 2
    assert "--async needs inferkit.aio" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["plain", "tqdm"])
def test_progress_display(reference_server, kind):
    if kind == "tqdm":
        pytest.importorskip("tqdm")
    stream = io.StringIO()
    options = BenchOptions(url=reference_server.http_url, model="add_sub", duration=0.5, concurrency=(2,))
    run_bench(options, progress=kind, stream=stream)
    shown = stream.getvalue()
    assert "concurrency 2" in shown and " req" in shown
    assert "%/s" not in shown and "s/s" not in shown  # a rate of percent or of seconds means nothing


def test_tqdm_progress_counts_requests_when_they_bound_the_step(reference_server):
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    options = BenchOptions(url=reference_server.http_url, model="add_sub", requests=2000, duration=None)
    run_bench(options, progress="tqdm", stream=stream)
    shown = stream.getvalue()
    assert "/2000" in shown and "req/s" in shown and "%/s" not in shown


def test_the_python_example_of_the_bench_page_runs(reference_server, capsys):
    pytest.importorskip("grpc")
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "bench.md").read_text()
    stream_block, block = re.findall(r"```python\n(.*?)```", page, re.S)
    namespace: dict = {}
    exec(compile(block.replace("grpc://127.0.0.1:8001", reference_server.grpc_url), "bench.md", "exec"), namespace)  # noqa: S102
    assert [s.ok for s in namespace["report"].steps] == [400, 400, 400] and namespace["best"].throughput > 0
    assert "concurrency" in capsys.readouterr().out
    namespace = {}
    stream_code = stream_block.replace("http://127.0.0.1:8000", reference_server.http_url)
    exec(compile(stream_code, "bench.md", "exec"), namespace)  # noqa: S102
    assert [(s.ok, s.events) for s in namespace["report"].steps] == [(20, 160), (20, 160)]
    assert namespace["tokens_per_s"] > 0 and "TTFE p50" in capsys.readouterr().out


# -- --stream: generate_stream steps against the stand-in LLM ------------------------------------------------------

PAYLOAD = '{"text_input": "w w w w w w", "max_tokens": 4}'  # 4 events per stream
STREAM_ROUTE = {"rest": "generate_stream", "grpc": "stream_infer"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stream_sweep_reports_events_and_their_timings(reference_server, transport, tmp_path, capsys):
    out_json, out_csv = tmp_path / "s.json", tmp_path / "s.csv"
    argv = ["bench", "-u", url_of(reference_server, transport), "-m", "llm", "--stream", "--payload", PAYLOAD]
    argv += ["--concurrency", "1,2", "--requests", "6", "--warmup", "2", "--json", str(out_json), "--csv", str(out_csv)]
    assert main(argv) == 0
    assert reference_server.count(route=STREAM_ROUTE[transport], model="llm") == 2 * (6 + 2)
    assert reference_server.count(route="infer") == 0

    report = json.loads(out_json.read_text())
    assert report["options"]["stream"] is True and report["options"]["payload"]["max_tokens"] == 4
    assert report["inputs"] == []
    for step in report["steps"]:
        assert step["requests"] == step["ok"] == 6 and step["events"] == 24 and step["errors"] == {}
        assert 0 < step["ttfe_p50_ms"] <= step["ttfe_p95_ms"] <= step["ttfe_p99_ms"]
        assert 0 < step["tbe_p50_ms"] <= step["tbe_p95_ms"] <= step["tbe_p99_ms"]
        assert step["events_per_s"] > step["throughput"] > 0  # 4 events per request
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["level"], r["events"]) for r in rows] == [("1.0", "24"), ("2.0", "24")] and rows[0]["ttfe_p99_ms"]

    table = capsys.readouterr().out
    assert "generate_stream payload" in table and "time to first event, ms" in table
    for column in ("req/s", "events/s", "TTFE p50", "TBE p50"):
        assert column in table
    assert len([line for line in table.splitlines() if line.strip().startswith(("1 ", "2 "))]) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["concurrency", "rate"])
def test_stream_asyncio_driver(reference_server, transport, mode):
    pytest.importorskip("aiohttp" if transport == "rest" else "grpc")
    options = BenchOptions(
        url=url_of(reference_server, transport),
        model="llm",
        stream=True,
        payload={"text_input": "a b c", "max_tokens": 3},
        use_async=True,
        concurrency=(1, 3),
        request_rates=(200.0,) if mode == "rate" else (),
        requests=5,
        duration=None if mode == "concurrency" else 5.0,
        warmup_requests=1,
    )
    report = run_bench(options)
    assert all(s.requests == s.ok == 5 and s.events == 15 for s in report.steps)
    assert all(s.ttfe_p50_ms and s.tbe_p50_ms for s in report.steps)
    assert reference_server.count(route=STREAM_ROUTE[transport], model="llm") == len(report.steps) * 6


def test_stream_default_payload_and_infer_steps_have_no_stream_figures(reference_server):
    report = run_bench(BenchOptions(url=reference_server.http_url, model="llm", stream=True, requests=2, duration=None))
    (step,) = report.steps
    assert step.ok == 2 and step.events == 2 * len(bench.DEFAULT_PAYLOAD["text_input"].split())
    report = run_bench(BenchOptions(url=reference_server.http_url, model="add_sub", requests=2, duration=None))
    assert report.steps[0].events is None and report.steps[0].ttfe_p50_ms is None


def test_stream_errors_mid_stream_are_counted_by_class(reference_server, tmp_path, capsys):
    argv = ["bench", "-u", reference_server.http_url, "-m", "llm", "--stream", "--requests", "3", "--warmup", "0"]
    argv += ["--payload", '{"text_input": "a b c", "fail_after": 1}', "--json", str(tmp_path / "r.json")]
    assert main(argv) == 1
    step = json.loads((tmp_path / "r.json").read_text())["steps"][0]
    assert step["errors"] == {"InternalServerError": 3} and step["events"] == 0 and step["ttfe_p50_ms"] is None
    assert "planned failure after 1 tokens" in capsys.readouterr().out


def test_stream_payload_from_a_file(reference_server, tmp_path):
    path = tmp_path / "payload.json"
    path.write_text('{"text_input": "x y", "max_tokens": 2}')
    argv = ["bench", "-u", reference_server.grpc_url, "-m", "llm", "--stream", "--payload", f"@{path}"]
    assert main(argv + ["--requests", "2", "--warmup", "0"]) == 0
    assert reference_server.count(route="stream_infer", model="llm") == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--payload", "{}"], "--payload is what --stream sends: add --stream"),
        (["--stream", "--payload", "{bad"], "--payload: not JSON"),
        (["--stream", "--payload", "[1, 2]"], "--payload: expected a JSON object"),
        (["--stream", "--payload", "@/nonexistent-dir-xyz/p.json"], "--payload file '/nonexistent-dir-xyz/p.json'"),
        (["--stream", "--shape", "INPUT0:1,16"], "--shape, --datatype, --batch-size and --data are for infer"),
        (["--stream", "-b", "4"], "with --stream the --payload says what to send"),
        (["--stream", "--data", "zeros"], "with --stream the --payload says what to send"),
    ],
)
def test_stream_user_mistakes_are_one_line_and_exit_2(flags, message, capsys):
    argv = ["bench", "-u", "http://127.0.0.1:1", "-m", "llm", "--requests", "1", "--warmup", "0"]
    assert main(argv + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("inferkit bench: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stream_unknown_model_is_a_usage_error(reference_server, transport, capsys):
    assert main(["bench", "-u", url_of(reference_server, transport), "-m", "nope", "--stream"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the metadata of model 'nope'" in err and "--shape" not in err and err.count("\n") == 1


def test_stream_bad_payload_shows_no_traceback():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "inferkit.cli", "bench", "-u", "http://127.0.0.1:1", "-m", "m", "--stream"]
        + ["--payload", "{'single': 'quotes'}"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("inferkit bench: --payload: not JSON") and result.stderr.count("\n") == 1


def test_stream_plot_has_a_panel_per_figure(reference_server, tmp_path, capsys, fake_matplotlib):
    png = tmp_path / "s.png"
    argv = ["bench", "-u", reference_server.http_url, "-m", "llm", "--stream", "--payload", PAYLOAD]
    assert main(argv + ["--requests", "2", "--warmup", "0", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = fake_matplotlib.return_value
    assert [c.args for c in figure.add_subplot.call_args_list] == [(1, 2, 1), (1, 2, 2)]
    labels = [c.args[0] for c in figure.add_subplot.return_value.set_ylabel.call_args_list]
    assert labels == ["time to first event (ms)", "time between events (ms)"]


def test_stream_plot_writes_a_png(reference_server, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "s.png"
    argv = ["bench", "-u", reference_server.http_url, "-m", "llm", "--stream", "--payload", PAYLOAD]
    assert main(argv + ["--concurrency", "1,2", "--requests", "3", "--warmup", "0", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
