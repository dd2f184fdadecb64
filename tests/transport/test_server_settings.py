"""Trace and log settings, model loads with a configuration or file overrides, and unload_dependents, through the
four clients (REST/gRPC, sync/aio) against the reference server: one case table, the same dicts and errors on all.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("grpc")

from inferkit import EncodeError, InferInput, InferRequest  # noqa: E402
from inferkit.errors import InvalidInputError, UnimplementedError  # noqa: E402
from tests.transport.test_shm_clients import KINDS, Caller  # noqa: E402

TRACE_DEFAULTS = {
    "trace_level": ["OFF"],
    "trace_rate": 1000,
    "trace_count": -1,
    "log_frequency": 0,
    "trace_file": "",
    "trace_mode": "triton",
}
LOG_DEFAULTS = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "default",
}


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, reference_server: Any):
    caller = Caller(request.param, reference_server)
    try:
        yield caller
    finally:
        caller.close()


def test_trace_settings_typed_and_per_model(client) -> None:
    assert client.get_trace_settings() == TRACE_DEFAULTS
    changed = client.update_trace_settings("add_sub", {"trace_rate": 9, "trace_count": "3"})
    assert changed == {**TRACE_DEFAULTS, "trace_rate": 9, "trace_count": 3}
    assert client.get_trace_settings("add_sub") == changed
    assert client.get_trace_settings() == TRACE_DEFAULTS  # the server's own settings did not change
    assert client.update_trace_settings("add_sub", {"trace_rate": None, "trace_count": None}) == TRACE_DEFAULTS
    assert client.update_trace_settings(settings={"log_frequency": 2})["log_frequency"] == 2
    assert client.update_trace_settings() == {**TRACE_DEFAULTS, "log_frequency": 2}


def test_trace_settings_errors_are_tritons(client) -> None:
    with pytest.raises(InvalidInputError, match="unknown model : nosuch"):
        client.get_trace_settings("nosuch")
    with pytest.raises(InvalidInputError, match="Unable to parse 'trace_rate', got: abc"):
        client.update_trace_settings(settings={"trace_rate": "abc"})
    with pytest.raises(UnimplementedError, match="trace file location can not be updated"):
        client.update_trace_settings(settings={"trace_file": "/tmp/trace.json"})
    with pytest.raises(EncodeError, match="trace setting 'trace_rate' must be"):
        client.update_trace_settings(settings={"trace_rate": 1.5})


def test_log_settings_typed(client) -> None:
    assert client.get_log_settings() == LOG_DEFAULTS
    assert client.update_log_settings({"log_verbose_level": 1, "log_info": False}) == {
        **LOG_DEFAULTS,
        "log_verbose_level": 1,
        "log_info": False,
    }
    assert client.get_log_settings()["log_verbose_level"] == 1
    with pytest.raises(UnimplementedError, match="log file location can not be updated"):
        client.update_log_settings({"log_file": "/tmp/log.txt"})
    with pytest.raises(EncodeError, match="log setting 'log_verbose_level' must be an int from 0"):
        client.update_log_settings({"log_verbose_level": -1})


def test_load_with_a_config_then_without(client) -> None:
    config = client.get_model_config("add_sub")
    assert config["max_batch_size"] == 0
    client.load_model("add_sub", config=json.dumps({**config, "max_batch_size": 8}))
    assert client.get_model_config("add_sub")["max_batch_size"] == 8
    client.load_model("add_sub")  # from the repository again
    assert client.get_model_config("add_sub")["max_batch_size"] == 0


def test_load_with_file_overrides(client, reference_server) -> None:
    client.load_model("add_sub", config="{}", files={"file:1/model.py": b"print('hi')\n"})
    assert client.is_model_ready("add_sub")
    with pytest.raises(EncodeError, match="file overrides need a config too"):
        client.load_model("add_sub", files={"file:1/model.py": b""})
    with pytest.raises(EncodeError, match="must be named 'file:<version>/<file name>'"):
        client.load_model("add_sub", config="{}", files={"1/model.py": b""})
    with pytest.raises(EncodeError, match="config is not valid JSON"):
        client.load_model("add_sub", config="{max_batch_size: 8")


def test_unload_dependents_is_accepted(client) -> None:
    client.unload_model("add_sub", unload_dependents=True)
    assert not client.is_model_ready("add_sub")
    client.load_model("add_sub")
    assert client.is_model_ready("add_sub")


def test_sequence_controls_reach_the_model(client) -> None:
    def step(value: int, **controls: Any) -> int:
        x = InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([value], np.int32))
        return int(client.infer(InferRequest("sequence", [x], **controls)).as_numpy("OUTPUT")[0])

    assert step(5, sequence_id="s-1", sequence_start=True) == 5
    assert step(6, sequence_id="s-1", sequence_end=True, priority=1, timeout=5) == 11
