"""inferkit.errors: the exception tree, builtin bases, status/code registration both ways, pickling."""

from __future__ import annotations

import pickle

import pytest

from inferkit import errors as e

EXPECTED_HTTP = {
    400: e.InvalidInputError,
    401: e.UnauthenticatedError,
    403: e.PermissionDeniedError,
    404: e.NotFoundError,
    409: e.ConflictError,
    413: e.PayloadTooLargeError,
    422: e.UnprocessableEntityError,
    429: e.RateLimitedError,
    499: e.CancelledError,
    500: e.InternalServerError,
    501: e.UnimplementedError,
    502: e.BadGatewayError,
    503: e.ServiceUnavailableError,
    504: e.GatewayTimeoutError,
}
EXPECTED_GRPC = {
    "INVALID_ARGUMENT": e.InvalidInputError,
    "OUT_OF_RANGE": e.InvalidInputError,
    "FAILED_PRECONDITION": e.InvalidInputError,
    "UNAUTHENTICATED": e.UnauthenticatedError,
    "PERMISSION_DENIED": e.PermissionDeniedError,
    "NOT_FOUND": e.NotFoundError,
    "ALREADY_EXISTS": e.ConflictError,
    "ABORTED": e.ConflictError,
    "RESOURCE_EXHAUSTED": e.RateLimitedError,
    "CANCELLED": e.CancelledError,
    "INTERNAL": e.InternalServerError,
    "UNKNOWN": e.InternalServerError,
    "DATA_LOSS": e.InternalServerError,
    "UNIMPLEMENTED": e.UnimplementedError,
    "UNAVAILABLE": e.ServiceUnavailableError,
}


def _server_error_classes():
    stack, seen = [e.ServerError], []
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def test_registries_are_exactly_the_documented_tables():
    assert dict(e.registered_http_statuses()) == EXPECTED_HTTP
    assert dict(e.registered_grpc_codes()) == EXPECTED_GRPC


@pytest.mark.parametrize("cls", [c for c in _server_error_classes() if c.__dict__.get("http_status") is not None])
def test_every_registered_class_maps_both_ways(cls):
    status = cls.http_status
    err = e.error_for_http_status(status, "boom", model_name="m", request_id="r")
    assert type(err) is cls and err.status_code == status and err.message == "boom"
    assert err.model_name == "m" and err.request_id == "r"
    for code in cls.__dict__.get("grpc_codes", ()):
        from_grpc = e.error_for_grpc_code(code, "boom")
        assert type(from_grpc) is cls and from_grpc.grpc_code == code and from_grpc.status_code == status
        assert e.http_status_for_grpc_code(code) == status
    code = e.grpc_code_for_http_status(status)
    if cls.__dict__.get("grpc_codes"):
        assert code == cls.grpc_codes[0]
        assert type(e.error_for_grpc_code(code, "x")) is cls
    else:
        assert code in ("INVALID_ARGUMENT", "INTERNAL", "DEADLINE_EXCEEDED")


@pytest.mark.parametrize(
    ("status", "cls"),
    [(418, e.ClientRequestError), (451, e.ClientRequestError), (599, e.ServerError), (507, e.ServerError)],
)
def test_unregistered_statuses_map_to_their_family(status, cls):
    err = e.error_for_http_status(status, "x")
    assert type(err) is cls and err.status_code == status


def test_grpc_deadline_is_a_read_timeout_and_unknown_codes_are_server_errors():
    err = e.error_for_grpc_code("DEADLINE_EXCEEDED", "late")
    assert isinstance(err, e.ReadTimeout) and isinstance(err, TimeoutError) and err.status_code == 504
    assert e.http_status_for_grpc_code("DEADLINE_EXCEEDED") == 504
    assert e.grpc_code_for_http_status(504) == "DEADLINE_EXCEEDED"
    other = e.error_for_grpc_code("SOMETHING_NEW", "x")
    assert type(other) is e.ServerError and other.status_code == 500
    assert e.http_status_for_grpc_code("SOMETHING_NEW") == 500
    assert e.grpc_code_for_http_status(418) == "INVALID_ARGUMENT"
    assert e.grpc_code_for_http_status(422) == "INVALID_ARGUMENT"
    assert e.grpc_code_for_http_status(599) == "INTERNAL"


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (e.ConnectError, (ConnectionError, e.TransportError)),
        (e.TLSError, (ConnectionError, e.ConnectError)),
        (e.InferTimeoutError, (TimeoutError, e.TransportError)),
        (e.ConnectTimeout, (TimeoutError,)),
        (e.ReadTimeout, (TimeoutError,)),
        (e.WriteTimeout, (TimeoutError,)),
        (e.PoolTimeout, (TimeoutError,)),
        (e.DeadlineExceeded, (TimeoutError,)),
        (e.GatewayTimeoutError, (TimeoutError, e.ServerError)),
        (e.EncodeError, (ValueError,)),
        (e.DecodeError, (ValueError,)),
        (e.ResponseTooLargeError, (e.DecodeError,)),
        (e.UnprocessableEntityError, (e.InvalidInputError, e.ClientRequestError)),
        (e.UnsupportedOperationError, (e.InferkitError,)),
    ],
)
def test_builtin_bases(cls, bases):
    for base in (*bases, e.InferkitError, Exception):
        assert issubclass(cls, base)


def test_every_public_error_is_an_inferkit_error():
    for name in e.__all__:
        obj = getattr(e, name)
        if isinstance(obj, type):
            assert issubclass(obj, e.InferkitError), name


def test_str_carries_context():
    err = e.error_for_http_status(503, "busy", model_name="m", request_id="r1", attempts=3, retry_after=2.0)
    assert str(err) == "busy (model='m', request_id='r1', status=503, attempts=3)"
    assert err.retry_after == 2.0
    assert str(e.EncodeError("plain")) == "plain"
    assert "grpc_code=NOT_FOUND" in str(e.error_for_grpc_code("NOT_FOUND", "gone"))


@pytest.mark.parametrize(
    "err",
    [
        e.error_for_http_status(429, "slow down", model_name="m", request_id="r", attempts=4, retry_after=1.5),
        e.error_for_grpc_code("UNAVAILABLE", "down", model_name="m"),
        e.ConnectError("refused", model_name="m", attempts=2),
        e.ReadTimeout("late", status_code=None),
        e.DecodeError("bad body"),
    ],
)
def test_pickling_keeps_type_and_fields(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert back.__dict__ == err.__dict__
    assert str(back) == str(err) and back.args == err.args


@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        # Triton 2.51's words for a second registration of a region: 400 over REST, ALREADY_EXISTS over gRPC.
        (400, "shared memory region 'in' already in manager", e.ConflictError),
        (400, "Unable to find shared memory region: 'in'", e.InvalidInputError),
        (500, "shared memory region 'in' already in manager", e.InternalServerError),
    ],
)
def test_rest_error_replies_map_one_meaning_to_one_class(status, message, cls):
    from inferkit.codec._json import dumps
    from inferkit.codec.rest_calls import Reply, reply_error

    err = reply_error(Reply(status, {}, dumps({"error": message}), attempts=2), model_name="m")
    assert type(err) is cls
    assert (err.status_code, err.message, err.model_name, err.attempts) == (status, message, "m", 2)
    assert type(e.error_for_grpc_code("ALREADY_EXISTS", message)) is e.ConflictError
