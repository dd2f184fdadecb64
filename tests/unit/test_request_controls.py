"""InferRequest's named request controls (priority, server-side timeout, sequences) and the reserved parameter names.

The controls become the parameters Triton reads, in its units, on both transports; a reserved name in ``parameters``
is an EncodeError that names the argument to use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inferkit import EncodeError, InferInput, InferRequest
from inferkit.codec import rest_v2
from inferkit.codec.request_controls import RESERVED_PARAMETERS


def _request(**kwargs: Any) -> InferRequest:
    x = InferInput("x", [1], "INT32").set_data_from_numpy(np.array([3], np.int32))
    return InferRequest("m", [x], **kwargs)


def test_controls_become_triton_parameters() -> None:
    req = _request(priority=2, timeout=0.25, sequence_id=7, sequence_start=True, parameters={"tag": "t"})
    assert req.parameters == {
        "tag": "t",
        "sequence_id": 7,
        "sequence_start": True,
        "sequence_end": False,
        "priority": 2,
        "timeout": 250_000,
    }
    assert req.is_sequence


def test_string_sequence_id_and_end() -> None:
    req = _request(sequence_id="session-1", sequence_end=True)
    assert req.parameters == {"sequence_id": "session-1", "sequence_start": False, "sequence_end": True}


def test_nothing_is_added_without_controls() -> None:
    assert _request().parameters == {}
    assert not _request(priority=1).is_sequence


def test_timeout_rounds_up_to_a_whole_microsecond() -> None:
    assert _request(timeout=1e-9).parameters["timeout"] == 1
    assert _request(timeout=2).parameters["timeout"] == 2_000_000


@pytest.mark.parametrize("name", sorted(RESERVED_PARAMETERS))
def test_reserved_names_are_refused_with_the_argument_to_use(name: str) -> None:
    with pytest.raises(EncodeError, match=rf"parameter '{name}' is reserved.*use .*{name.split('_')[0]}"):
        _request(parameters={name: 1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sequence_id": 0}, "non-zero"),
        ({"sequence_id": ""}, "non-empty"),
        ({"sequence_id": 2**64}, "non-zero int"),
        ({"sequence_id": 1.5}, "int or a str"),
        ({"sequence_id": True}, "int or a str"),
        ({"sequence_start": True}, "need a sequence_id"),
        ({"sequence_id": 1, "sequence_end": 1}, "sequence_end must be True or False"),
        ({"priority": -1}, "priority must be an int >= 0"),
        ({"priority": 1.0}, "priority must be an int >= 0"),
        ({"timeout": 0}, "positive number of seconds"),
        ({"timeout": float("nan")}, "positive number of seconds"),
        ({"timeout": "1"}, "positive number of seconds"),
    ],
)
def test_bad_controls_raise_encode_error_naming_the_model(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(EncodeError, match=match) as info:
        _request(**kwargs)
    assert "model 'm'" in str(info.value)


def test_a_server_decodes_reserved_parameters_as_sent() -> None:
    body = rest_v2.encode_infer_request(_request(sequence_id=5, priority=1, timeout=1.0))
    got = rest_v2.decode_infer_request(body.body, body.json_size, model_name="m")
    assert got.parameters["sequence_id"] == 5 and got.parameters["timeout"] == 1_000_000
    assert got.parameters["binary_data_output"] is True  # the client's own: the server reads it, callers cannot set it


def test_grpc_wire_types_are_those_triton_reads() -> None:
    pytest.importorskip("google.protobuf")
    from inferkit.codec.grpc_infer_encode import serialize_infer_request
    from inferkit.codec.grpc_wire import pb

    msg = pb.ModelInferRequest.FromString(
        serialize_infer_request(_request(sequence_id="s", sequence_start=True, priority=1, timeout=0.5))
    )
    kinds = {
        k: (v.WhichOneof("parameter_choice"), getattr(v, v.WhichOneof("parameter_choice")))
        for k, v in msg.parameters.items()
    }
    assert kinds == {
        "sequence_id": ("string_param", "s"),
        "sequence_start": ("bool_param", True),
        "sequence_end": ("bool_param", False),
        "priority": ("int64_param", 1),
        "timeout": ("int64_param", 500_000),
    }
