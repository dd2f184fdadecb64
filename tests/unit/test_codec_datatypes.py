"""inferkit.codec.datatypes: the datatype table, dtype mapping, wire layout, BYTES and BF16 packing."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferkit.codec import datatypes as dt
from inferkit.errors import DecodeError, EncodeError

NUMERIC = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}

# numpy's variable-width string dtype (kind "T") exists from numpy 2.0 on; older numpy has no such arrays at all.
STRING_DTYPE = getattr(getattr(np, "dtypes", None), "StringDType", None)
needs_string_dtype = pytest.mark.skipif(STRING_DTYPE is None, reason="np.dtypes.StringDType is new in numpy 2.0")


# -- table and dtype mapping -----------------------------------------------------------------------------------
def test_table_lists_every_protocol_datatype_with_its_size():
    assert set(dt.DATATYPES) == {*NUMERIC, "BF16", "BYTES"}
    for name, np_type in NUMERIC.items():
        assert dt.DATATYPES[name] == np.dtype(np_type).itemsize
        assert dt.element_size(name) == np.dtype(np_type).itemsize
    assert dt.DATATYPES["BF16"] == 2
    assert dt.DATATYPES["BYTES"] is None


@pytest.mark.parametrize("name", list(NUMERIC))
def test_numeric_dtype_round_trip(name):
    dtype = dt.datatype_to_dtype(name)
    assert dtype == np.dtype(NUMERIC[name])
    assert dt.dtype_to_datatype(dtype) == name
    assert dt.dtype_to_datatype(dtype.newbyteorder(">")) == name  # byte order does not change the datatype


def test_special_dtypes():
    assert dt.datatype_to_dtype("BYTES") == np.dtype(object)
    assert dt.datatype_to_dtype("BF16") == np.dtype(ml_dtypes.bfloat16)
    for kind in (object, "S5", "U3"):
        assert dt.dtype_to_datatype(kind) == "BYTES"
    assert dt.dtype_to_datatype(ml_dtypes.bfloat16) == "BF16"


@needs_string_dtype
def test_string_dtype_is_bytes():
    assert dt.dtype_to_datatype(STRING_DTYPE()) == "BYTES"


def test_datatype_names_are_case_insensitive_and_unknown_ones_are_listed():
    assert dt.check_datatype("fp32") == "FP32"
    with pytest.raises(EncodeError, match="unknown datatype 'FLOAT'.*FP32"):
        dt.check_datatype("FLOAT")
    with pytest.raises(EncodeError, match="unknown datatype 3"):
        dt.check_datatype(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.complex64, "M8[s]", "V4", [("a", "i4")]])
def test_dtypes_without_a_datatype_are_rejected(dtype):
    with pytest.raises(EncodeError, match="has no inference datatype"):
        dt.dtype_to_datatype(dtype)


# -- wire layout ----------------------------------------------------------------------------------------------
def test_wire_array_is_the_same_object_when_already_in_wire_layout():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert dt.to_wire_array(arr, "FP32") is arr


def test_wire_array_swaps_big_endian_and_makes_non_contiguous_contiguous():
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    out = dt.to_wire_array(big, "INT32")
    assert out.dtype.str == "<i4" and out.flags.c_contiguous
    assert out.tobytes() == np.arange(6, dtype="<i4").tobytes()
    strided = np.arange(12, dtype=np.int16).reshape(3, 4)[:, ::2].T
    out = dt.to_wire_array(strided, "INT16")
    assert out.flags.c_contiguous and np.array_equal(out, strided)


def test_wire_array_rejects_mismatched_dtypes_naming_the_tensor():
    with pytest.raises(EncodeError, match=r"tensor 'x': datatype FP32 needs numpy dtype float32, got float64"):
        dt.to_wire_array(np.zeros(2), "FP32", tensor="x")
    with pytest.raises(EncodeError, match=r"tensor 'y': BF16 needs a float32 or ml_dtypes.bfloat16 array"):
        dt.to_wire_array(np.zeros(2, np.int32), "BF16", tensor="y")


# -- BF16 -----------------------------------------------------------------------------------------------------
BF16_GOLDEN = [
    (1.0, 0x3F80),
    (-2.5, 0xC020),
    (0.0, 0x0000),
    (-0.0, 0x8000),
    (np.inf, 0x7F80),
    (-np.inf, 0xFF80),
    (1.00390625, 0x3F80),  # exactly half way, lower is even: round down
    (1.01171875, 0x3F82),  # exactly half way, lower is odd: round up to even
    (1.0078125 + 2**-20, 0x3F81),  # just above half way: round up
    (3.4028235e38, 0x7F80),  # float32 max rounds to infinity, as round-to-nearest-even says
    (1e-45, 0x0000),  # smallest float32 subnormal rounds to zero
]


@pytest.mark.parametrize(("value", "bits"), BF16_GOLDEN)
def test_bf16_golden_bits(value, bits):
    out = dt.float32_to_bf16_bits(np.array([value], np.float32))
    assert out.dtype == np.dtype("<u2")
    assert out.tobytes() == bits.to_bytes(2, "little")
    assert out.view(ml_dtypes.bfloat16).tobytes() == np.array([value], np.float32).astype(ml_dtypes.bfloat16).tobytes()


def test_bf16_nan_stays_nan_with_its_sign():
    bits = np.array([0x7F800001, 0xFFC00000, 0x7FFFFFFF], np.uint32).view(np.float32)
    out = dt.float32_to_bf16_bits(bits)
    widened = dt.bf16_bits_to_float32(out)
    assert np.isnan(widened).all()
    assert list(np.signbit(widened)) == [False, True, False]


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), elements=st.floats(width=32)))
def test_bf16_matches_ml_dtypes_and_widening_is_exact(arr):
    ours = dt.float32_to_bf16_bits(arr)
    theirs = arr.astype(ml_dtypes.bfloat16)
    assert ours.shape == arr.shape
    finite = np.isfinite(arr)
    assert np.array_equal(ours[finite], theirs.view(np.uint16)[finite])
    assert np.array_equal(
        dt.bf16_bits_to_float32(ours), ours.view(ml_dtypes.bfloat16).astype(np.float32), equal_nan=True
    )


def test_bf16_from_ml_dtypes_array_is_uint16_bits_without_copy():
    arr = np.array([1.0, -2.5], ml_dtypes.bfloat16)
    out = dt.to_wire_array(arr, "BF16")
    assert out.dtype == np.dtype("<u2") and np.shares_memory(out, arr)
    assert out.tobytes() == b"\x80\x3f\x20\xc0"
    assert dt.to_wire_array(np.array([1.0, -2.5], np.float64), "BF16").tobytes() == b"\x80\x3f\x20\xc0"


# -- BYTES ----------------------------------------------------------------------------------------------------
GOLDEN_BYTES = b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"


@pytest.mark.parametrize(
    "arr",
    [
        np.array([b"ab", b"", "é"], dtype=object),
        np.array([b"ab", b"", "é".encode()], dtype="S"),
        np.array(["ab", "", "é"]),
        pytest.param(
            ["ab", "", "é"] if STRING_DTYPE is None else np.array(["ab", "", "é"], dtype=STRING_DTYPE()),
            marks=needs_string_dtype,
        ),
        np.array([bytearray(b"ab"), memoryview(b""), np.bytes_("é".encode())], dtype=object),
    ],
    ids=["object", "S", "U", "StringDType", "buffers"],
)
def test_bytes_golden_wire_format(arr):
    assert dt.serialize_bytes_tensor(arr) == GOLDEN_BYTES


def test_bytes_golden_decode():
    out = dt.deserialize_bytes_tensor(GOLDEN_BYTES, 3)
    assert out.dtype == object and list(out) == [b"ab", b"", "é".encode()]
    assert list(dt.deserialize_bytes_tensor(GOLDEN_BYTES, 3, as_str=True)) == ["ab", "", "é"]


def test_bytes_numbers_are_sent_as_decimal_text_and_other_objects_rejected():
    assert dt.serialize_bytes_tensor(np.array([1, 2.5, True], dtype=object)) == (
        b"\x01\x00\x00\x001\x03\x00\x00\x002.5\x04\x00\x00\x00True"
    )
    with pytest.raises(EncodeError, match=r"tensor 't': BYTES element 1 is dict"):
        dt.serialize_bytes_tensor(np.array([b"a", {}], dtype=object), tensor="t")


def test_bytes_row_major_order_for_non_contiguous_input():
    arr = np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object).T
    assert dt.serialize_bytes_tensor(arr) == b"".join(b"\x01\x00\x00\x00" + c for c in (b"a", b"c", b"b", b"d"))


def test_bytes_empty_and_zero_d():
    assert dt.serialize_bytes_tensor(np.empty((0, 3), dtype=object)) == b""
    assert list(dt.deserialize_bytes_tensor(b"", 0)) == []
    assert dt.serialize_bytes_tensor(np.array(b"xy", dtype=object)) == b"\x02\x00\x00\x00xy"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=40))
def test_bytes_round_trip(items):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    wire = dt.serialize_bytes_tensor(arr)
    assert len(wire) == sum(4 + len(x) for x in items)
    assert list(dt.deserialize_bytes_tensor(wire, len(items))) == items


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=30), st.sampled_from(["object", "U"]))
def test_bytes_round_trip_str(items, kind):
    arr = np.array(items, dtype=object if kind == "object" else "U") if items else np.empty(0, object)
    if kind == "U":  # numpy's fixed-width str drops trailing NULs on element access, like S does
        items = [s.rstrip("\x00") for s in items]
    wire = dt.serialize_bytes_tensor(arr)
    assert list(dt.deserialize_bytes_tensor(wire, len(items), as_str=True)) == items


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 30), st.integers(0, 12), st.binary(min_size=0, max_size=1))
def test_bytes_uniform_lengths_round_trip(count, length, fill):
    items = [bytes([i % 251]) * length if not fill else fill * length for i in range(count)]
    arr = np.array(items, dtype=object) if items else np.empty(0, object)
    wire = dt.serialize_bytes_tensor(arr)
    assert list(dt.deserialize_bytes_tensor(wire, count)) == items


def test_bytes_decode_accepts_memoryview_and_bytearray():
    for buf in (memoryview(GOLDEN_BYTES), bytearray(GOLDEN_BYTES), memoryview(b"xx" + GOLDEN_BYTES)[2:]):
        assert list(dt.deserialize_bytes_tensor(buf, 3)) == [b"ab", b"", "é".encode()]


@pytest.mark.parametrize(
    ("wire", "count", "message"),
    [
        (b"\x05\x00\x00\x00ab", 1, r"tensor 't': BYTES element 0 declares 5 bytes but only 2 remain"),
        (b"\x01\x00\x00\x00a\x05\x00\x00\x00ab", 2, r"tensor 't': BYTES element 1 declares 5 bytes but only 2 remain"),
        (b"\xff\xff\xff\xffab", 1, r"tensor 't': BYTES element 0 declares 4294967295 bytes"),
        (b"\x01\x00\x00\x00a\x01\x00", 2, r"tensor 't': BYTES data ends inside a length prefix|need at least"),
        (b"\x01\x00\x00", 1, r"tensor 't': 1 BYTES elements need at least 4 bytes"),
        (b"\x01\x00\x00\x00abc", 1, r"tensor 't': 2 bytes left over after 1 BYTES elements"),
        (b"\x00\x00\x00\x00\x00\x00\x00\x00x", 2, r"tensor 't': 1 bytes left over after 2 BYTES elements"),
        (b"", -1, r"tensor 't': negative element count"),
    ],
)
def test_bytes_decode_errors_name_the_tensor_and_the_problem(wire, count, message):
    with pytest.raises(DecodeError, match=message):
        dt.deserialize_bytes_tensor(wire, count, tensor="t")


def test_bytes_invalid_utf8_with_as_str():
    with pytest.raises(DecodeError, match=r"tensor 't': BYTES element 1 is not valid UTF-8"):
        dt.deserialize_bytes_tensor(b"\x01\x00\x00\x00a\x01\x00\x00\x00\xff", 2, tensor="t", as_str=True)
    assert list(dt.deserialize_bytes_tensor(b"\x01\x00\x00\x00\xff", 1)) == [b"\xff"]


# -- the vectorised paths (used from a few hundred elements) agree with the sequential reference decoder ---------
def _reference(wire: bytes, count: int):
    try:
        return dt._deserialize_loop(wire, len(wire), count, "t")
    except DecodeError as exc:
        return type(exc)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, i: bytes(rng.integers(97, 123, rng.integers(3, 21)).astype(np.uint8)),  # text
        lambda rng, i: b"\0" * int(rng.choice([0, 4, 8, 12])),  # steps that never re-synchronise by luck
        lambda rng, i: bytes(rng.integers(0, 256, rng.integers(0, 10)).astype(np.uint8)),  # binary
        lambda rng, i: b"x" * (20_000 if i == 700 else int(rng.integers(0, 6))),  # one element spans many blocks
        lambda rng, i: b"same\0",  # uniform lengths
        lambda rng, i: b"",  # all empty
    ],
    ids=["text", "zeros-mult4", "binary", "one-huge", "uniform", "empty"],
)
def test_vectorised_bytes_codec_matches_the_reference_including_corruptions(make, monkeypatch):
    monkeypatch.setattr(dt, "_VECTOR_MIN", 512)  # the vectorised decoder from 512 elements (8192 by default)
    rng = np.random.default_rng(7)
    for count in (512, 3000):
        items = [make(rng, i) for i in range(count)]
        arr = np.empty(count, dtype=object)
        arr[:] = items
        wire = dt.serialize_bytes_tensor(arr)
        assert wire == b"".join(len(x).to_bytes(4, "little") + x for x in items)
        assert list(dt.deserialize_bytes_tensor(memoryview(b"pad" + wire)[3:], count)) == items
        for trial in range(12):
            bad = bytearray(wire)
            if trial % 3 == 0:
                bad[int(rng.integers(0, len(bad)))] ^= 0xFF
            elif trial % 3 == 1:
                bad = bad[: -int(rng.integers(1, 6))] if len(bad) > 6 else bad + b"\1"
            else:
                bad += b"\0" * int(rng.integers(1, 6))
            expected = _reference(bytes(bad), count)
            try:
                got = list(dt.deserialize_bytes_tensor(bytes(bad), count, tensor="t"))
            except DecodeError as exc:
                got = type(exc)
            assert got == expected


@pytest.mark.parametrize("kind", ["S", "U"])
def test_vectorised_fixed_width_encode(kind):
    items = [f"w{i}" * (i % 4) for i in range(1000)]
    arr = np.array(items, dtype=kind)
    assert dt.serialize_bytes_tensor(arr) == b"".join(len(x).to_bytes(4, "little") + x.encode() for x in items)
    assert dt.serialize_bytes_tensor(np.array(["é"] * 600)) == b"\x02\0\0\0\xc3\xa9" * 600


# -- against tritonclient's per-element functions, the oracle of the wire format --------------------------------
_element = st.one_of(st.binary(max_size=24), st.text(max_size=12), st.just(b""), st.just(""))


@settings(max_examples=120, deadline=None)
@given(
    st.lists(_element, max_size=70),
    st.sampled_from(["object", "object-str", "U", "S"]),
    st.sampled_from([(-1,), (1, -1), (-1, 1, 1)]),
    st.integers(0, 2),
)
def test_bytes_codec_agrees_with_tritonclient(items, kind, shape, chunk_exp):
    utils = pytest.importorskip("tritonclient.utils")
    if kind == "object-str":
        items = [x if isinstance(x, str) else x.decode("latin-1") for x in items]
    elif kind in ("U", "S"):  # fixed width: numpy drops trailing NULs, so they are not part of an element
        items = [(x if isinstance(x, str) else x.decode("latin-1")).rstrip("\0") for x in items]
    if kind == "S":
        items = [x.encode("utf-8") for x in items]
    if kind in ("U", "S") and items:
        arr = np.array(items, dtype=kind)
    else:
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
    arr = arr.reshape(shape) if items else arr
    old_chunk = dt._CHUNK
    dt._CHUNK = (1, 7, 4096)[chunk_exp]  # several chunks, or one
    try:
        wire = dt.serialize_bytes_tensor(arr)
    finally:
        dt._CHUNK = old_chunk
    peer = arr.astype(object) if kind == "U" else arr
    expected = utils.serialize_byte_tensor(peer).item() if items else b""
    assert bytes(wire) == expected
    count = len(items)
    as_bytes = [x.encode("utf-8") if isinstance(x, str) else x for x in items]
    assert list(dt.deserialize_bytes_tensor(wire, count)) == (
        list(utils.deserialize_bytes_tensor(expected)) if items else []
    )
    assert list(dt.deserialize_bytes_tensor(wire, count)) == as_bytes
    if kind in ("object-str", "U"):
        assert list(dt.deserialize_bytes_tensor(memoryview(wire), count, as_str=True)) == items


def test_bytes_non_byte_views_are_converted_not_mislabelled():
    arr = np.empty(2, dtype=object)
    arr[:] = [memoryview(b"abcd").cast("I"), bytearray(b"xy")]  # len() of the first is 1, its bytes are 4
    assert dt.serialize_bytes_tensor(arr) == b"\x04\0\0\0abcd\x02\0\0\0xy"
