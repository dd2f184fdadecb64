"""codec/_json.loads_tensors (pysimdjson for long lists of numbers) against its oracle, the plain ``loads`` path.

The fast reader is an optimisation only: for every body, each tensor must give the same array (values and dtype),
the same ``.data`` list (an FP tensor's integers come back as floats) and an error in the same cases as when the
body is read by orjson/json. Hypothesis draws response bodies with numeric, BOOL and BYTES outputs, flat and
nested data, and elements that do not belong (bools, strings, nulls, fractions in integer tensors, values out of
range, too few or too many values).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferkit.codec import _json, rest_v2
from inferkit.errors import DecodeError

pytest.importorskip("simdjson")

NUMERIC = ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]


@contextlib.contextmanager
def fast_reader(on: bool) -> Iterator[None]:
    saved = _json.SIMDJSON_MIN_BYTES
    _json.SIMDJSON_MIN_BYTES = 0 if on else 1 << 62
    try:
        yield
    finally:
        _json.SIMDJSON_MIN_BYTES = saved


def element(datatype: str) -> st.SearchStrategy[Any]:
    if datatype.startswith("FP"):
        good: st.SearchStrategy[Any] = st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-99, 99)
    elif datatype.startswith("UINT"):
        good = st.integers(0, 2 ** int(datatype[4:]) - 1)
    elif datatype.startswith("INT"):
        bits = int(datatype[3:])
        good = st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    elif datatype == "BOOL":
        good = st.booleans()
    else:
        good = st.text(max_size=5)
    odd = st.sampled_from([True, None, "1", 1.5, 1.0, -1, 2**63, 2**64 - 1, 300, -129, 1e300])
    return st.one_of(good, good, good, odd) if datatype != "BYTES" else good


@st.composite
def outputs(draw: st.DrawFn) -> dict[str, Any]:
    datatype = draw(st.sampled_from([*NUMERIC, "BOOL", "BYTES"]))
    count = draw(st.integers(0, 12))
    values = draw(st.lists(element(datatype), min_size=count, max_size=count))
    declared = count + draw(st.sampled_from([0, 0, 0, 1, -1])) if count else 0
    data: Any = values
    if count and count % 2 == 0 and draw(st.booleans()):
        data = [values[i : i + 2] for i in range(0, count, 2)]  # regular nested form, rows of 2
    return {"name": "y", "datatype": datatype, "shape": [declared], "data": data}


def read_all(body: bytes, fast: bool) -> list[tuple[str, Any]]:
    """Each output's outcome: ('ok', (dtype, values, data list)) or ('error', tensor name); or the body's error."""
    with fast_reader(fast):
        try:
            response = rest_v2.decode_infer_response(body)
        except DecodeError as exc:
            return [("error", exc.message)]
    results: list[tuple[str, Any]] = []
    for out in response.outputs:
        try:
            arr = out.as_numpy()
            data = out.data
            if out.datatype.startswith("FP"):  # the fast reader gives an FP tensor's integers as floats: 1 -> 1.0
                data = json.loads(json.dumps(data), parse_int=float)
            results.append(("ok", (arr.dtype.str, arr.tolist(), data)))
        except DecodeError as exc:  # the wording may differ (an int64 array meets the range check, not int())
            assert exc.message.startswith(f"tensor {out.name!r}: ")
            results.append(("error", out.name))
    return results


@settings(max_examples=400, deadline=None)
@given(st.lists(outputs(), min_size=1, max_size=3), st.text(max_size=8))
def test_same_arrays_data_and_errors_as_the_plain_reader(entries: list[dict[str, Any]], model: str) -> None:
    body = json.dumps({"model_name": model, "id": "1", "parameters": {"p": 1.5, "q": "s"}, "outputs": entries}).encode()
    assert read_all(body, fast=True) == read_all(body, fast=False)


def test_long_flat_lists_come_back_as_arrays_and_the_rest_as_python() -> None:
    body = json.dumps(
        {
            "model_name": "m",
            "parameters": {"seq": 2.5, "on": True},
            "outputs": [
                {"name": "f", "datatype": "FP32", "shape": [3], "data": [0.5, 1, 2.25]},
                {"name": "i", "datatype": "INT8", "shape": [2], "data": [-1, 7]},
                {"name": "u", "datatype": "UINT64", "shape": [1], "data": [2**64 - 1]},
                {"name": "n", "datatype": "FP32", "shape": [2, 1], "data": [[1.0], [2.0]]},
                {"name": "b", "datatype": "BOOL", "shape": [1], "data": [True]},
                {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["x"]},
                {"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 1.5]},
            ],
        }
    ).encode()
    with fast_reader(True):
        header = _json.loads_tensors(body)
    data = {o["name"]: o["data"] for o in header["outputs"]}
    assert data["f"].dtype == np.float64 and data["f"].tolist() == [0.5, 1.0, 2.25]
    assert data["i"].dtype == np.int64 and data["u"].dtype == np.uint64 and data["u"].tolist() == [2**64 - 1]
    assert data["n"] == [[1.0], [2.0]] and data["b"] == [True] and data["s"] == ["x"] and data["x"] == [1, 1.5]
    assert header["parameters"] == {"seq": 2.5, "on": True} and header["model_name"] == "m"
    with fast_reader(True):
        response = rest_v2.decode_infer_response(body)
    assert response.as_numpy("f").dtype == np.float32 and response.as_numpy("i").tolist() == [-1, 7]
    with pytest.raises(DecodeError, match="'x': INT32 data must contain integers"):
        response.as_numpy("x")


@pytest.mark.parametrize(
    "body",
    [b'{"outputs": [', b'{"a": "\xff"}', b"[" * 2000 + b"]" * 2000, b"[1, 2]", b'"text"'],
    ids=["truncated", "bad-utf8", "too-deep", "not-an-object", "a-string"],
)
def test_what_simdjson_refuses_or_does_not_shape_is_read_as_loads_reads_it(body: bytes) -> None:
    outcomes = []
    for fast in (True, False):
        with fast_reader(fast):
            try:
                outcomes.append(("ok", _json.loads_tensors(body, what="reply")))
            except DecodeError as exc:
                outcomes.append(("error", exc.message))
    assert outcomes[0] == outcomes[1]


def test_small_bodies_skip_the_fast_reader() -> None:
    body = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode()
    assert len(body) < _json.SIMDJSON_MIN_BYTES
    assert _json.loads_tensors(body)["outputs"][0]["data"] == [1.0]


def test_a_large_json_reply_decodes_through_the_fast_reader_at_the_default_floor() -> None:
    values = np.random.default_rng(0).random(5000, dtype=np.float32)
    body = json.dumps(
        {"outputs": [{"name": "y", "datatype": "FP32", "shape": [5000], "data": values.tolist()}]}
    ).encode()
    assert len(body) > _json.SIMDJSON_MIN_BYTES
    assert isinstance(_json.loads_tensors(body)["outputs"][0]["data"], np.ndarray)
    np.testing.assert_array_equal(rest_v2.decode_infer_response(body).as_numpy("y"), values)


def test_set_data_from_list_converts_an_array_of_another_dtype_like_a_list() -> None:
    from inferkit import InferInput
    from inferkit.errors import EncodeError

    assert InferInput("x", [2], "INT32").set_data_from_list(np.array([1.0, 2.0])).as_numpy().dtype == np.int32
    with pytest.raises(EncodeError, match="'x': INT32 data must contain integers"):
        InferInput("x", [2], "INT32").set_data_from_list(np.array([1.5, 2.0]))
