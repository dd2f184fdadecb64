"""inferkit.config: validation, Timeout coercion, RetryPolicy decisions, Retry-After parsing, RESTConfig."""

from __future__ import annotations

import email.utils
import math
import re

import pytest

from inferkit.config import (
    NEVER_RETRY_STATUSES,
    APIKey,
    BasicAuth,
    BearerToken,
    RESTConfig,
    RetryPolicy,
    Timeout,
    parse_retry_after,
)

# -- Timeout --------------------------------------------------------------------------------------------------


def test_timeout_defaults_and_single_number():
    t = Timeout()
    assert (t.connect, t.read, t.write, t.pool) == (10.0, 60.0, 30.0, 10.0)
    t = Timeout(5)
    assert (t.connect, t.read, t.write, t.pool) == (5.0, 5.0, 5.0, 5.0)
    t = Timeout(5, read=1200)
    assert (t.connect, t.read) == (5.0, 1200.0)
    assert Timeout(None).read is None and Timeout(None).total_hint is None
    assert Timeout(1).total_hint == 3.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (None, None, None, None)),
        (7, (7.0, 7.0, 7.0, 7.0)),
        (2.5, (2.5, 2.5, 2.5, 2.5)),
        ((3, 60), (3.0, 60.0, 30.0, 10.0)),
        (Timeout(connect=1), (1.0, 60.0, 30.0, 10.0)),
    ],
)
def test_timeout_coerce(value, expected):
    t = Timeout.coerce(value)
    assert (t.connect, t.read, t.write, t.pool) == expected
    if isinstance(value, Timeout):
        assert t is value


@pytest.mark.parametrize("bad", [-1, float("nan"), "5", True, (1, 2, 3), (1,), [1, 2]])
def test_timeout_validation(bad):
    with pytest.raises(ValueError, match="Timeout|timeout"):
        Timeout.coerce(bad)


def test_timeout_is_immutable():
    with pytest.raises(AttributeError):
        Timeout().read = 1  # type: ignore[misc]


# -- RetryPolicy ----------------------------------------------------------------------------------------------


def test_retry_policy_delay_with_fixed_rand():
    p = RetryPolicy(max_retries=5, backoff_initial=0.5, backoff_max=3.0, backoff_multiplier=2.0, jitter=0.25)
    assert [p.delay(r, rand=lambda: 0.0) for r in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.delay(1, rand=lambda: 1.0) == pytest.approx(0.375)
    assert p.delay(3, rand=lambda: 0.5) == pytest.approx(2.0 * (1 - 0.125))
    assert p.delay(6, rand=lambda: 0.0) is None  # past max_retries
    assert RetryPolicy.none().delay(1) is None


def test_retry_after_replaces_backoff_and_is_capped():
    p = RetryPolicy(max_retries=3, retry_after_max=10.0)
    assert p.delay(1, retry_after=4.0, rand=lambda: 0.9) == 4.0
    assert p.delay(1, retry_after=3600.0) == 10.0
    assert p.delay(1, retry_after=-5.0) == 0.0
    ignoring = RetryPolicy(respect_retry_after=False, jitter=0.0)
    assert ignoring.delay(1, retry_after=30.0) == 0.5


def test_deadline_stops_retries_that_would_sleep_past_it():
    p = RetryPolicy(max_retries=10, deadline=5.0, jitter=0.0)
    assert p.delay(1, elapsed=0.0) == 0.5
    assert p.delay(1, elapsed=4.6) is None
    assert p.delay(1, retry_after=2.0, elapsed=3.5) is None
    assert p.delay(1, retry_after=2.0, elapsed=2.9) == 2.0
    assert p.remaining(3.0) == 2.0 and p.remaining(9.0) == 0.0
    assert RetryPolicy().remaining(100.0) is None


def test_retry_decisions():
    p = RetryPolicy()
    assert all(p.is_retryable_status(s) for s in (429, 500, 502, 503, 504))
    assert not any(p.is_retryable_status(s) for s in (400, 401, 403, 404, 422, 501))
    assert p.is_retryable_grpc_code("UNAVAILABLE") and not p.is_retryable_grpc_code("NOT_FOUND")
    assert RetryPolicy(retry_grpc_codes={"unavailable"}).is_retryable_grpc_code("UNAVAILABLE")
    assert p.allows_request(is_infer=True, is_sequence=False)
    assert not p.allows_request(is_infer=True, is_sequence=True)
    assert not RetryPolicy(retry_infer=False).allows_request(is_infer=True, is_sequence=False)
    assert RetryPolicy(retry_infer=False).allows_request(is_infer=False, is_sequence=False)
    assert p.total_attempts == 4 and p.with_retries(1).max_retries == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"backoff_initial": -1}, "backoff_initial"),
        ({"backoff_max": None}, "backoff_max"),
        ({"retry_after_max": float("nan")}, "retry_after_max"),
        ({"deadline": -1}, "deadline"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"retry_statuses": {503, 404}}, r"retry_statuses contains \[404\]"),
    ],
)
def test_retry_policy_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_never_retry_statuses_cover_the_client_errors():
    assert {400, 401, 403, 404, 422} <= NEVER_RETRY_STATUSES


# -- Retry-After ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "250", "Retry-After": "9"}, 0.25),  # the millisecond header wins
        ({"retry-after-ms": "bad", "Retry-After": "9"}, 9.0),
        ({"retry-after-ms": "-5", "Retry-After": "2"}, 2.0),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date():
    now = 1_700_000_000.0
    future = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": future}, now=now) == pytest.approx(30.0)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "Wed, 99 Foo 2024 99:99:99 GMT"}, now=now) is None


def test_parsed_retry_after_goes_through_the_policy_cap():
    p = RetryPolicy(retry_after_max=120.0)
    huge = parse_retry_after({"Retry-After": "86400"})
    assert p.delay(1, retry_after=huge) == 120.0


# -- RESTConfig and auth --------------------------------------------------------------------------------------


def test_rest_config_defaults():
    c = RESTConfig()
    assert c.protocol == "v2" and c.retries == 3 and c.retry_policy.max_retries == 3
    assert isinstance(c.timeouts, Timeout) and c.timeouts.read == 60.0
    assert dict(c.headers) == {} and c.proxies is None


def test_rest_config_coercions(tmp_path):
    cert, key = tmp_path / "c", tmp_path / "k"
    cert.write_text("cert")
    key.write_text("key")
    c = RESTConfig(
        protocol="V1", timeout=(3, 600), auth=("u", "p"), retries=1, headers={"X-A": "1"}, cert=[str(cert), str(key)]
    )
    assert c.protocol == "v1"
    assert (c.timeouts.connect, c.timeouts.read) == (3.0, 600.0)
    assert isinstance(c.auth, BasicAuth) and c.static_auth_headers()["Authorization"].startswith("Basic ")
    assert c.retry_policy.max_retries == 1 and c.cert == (str(cert), str(key))
    with pytest.raises(TypeError):
        c.headers["X-B"] = "2"  # type: ignore[index]
    d = c.replace(retries=5)
    assert d.retry_policy.max_retries == 5 and c.retry_policy.max_retries == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "v3"}, "protocol"),
        ({"retries": -1}, "retries"),
        ({"http2": True}, "http2"),
        ({"timeout": -1}, "Timeout"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"pool_maxsize": 0}, "pool_maxsize"),
        ({"pool_connections": True}, "pool_connections"),
        ({"compression": "br"}, "compression"),
        ({"max_response_size": 0}, "max_response_size"),
        ({"cert": ("a", "b", "c")}, "cert"),
        ({"auth": ("only-user",)}, "auth"),
        ({"headers": {"X": 1}}, "headers must map str to str"),
        ({"headers": [("X", "1")]}, "headers must be a mapping"),
    ],
)
def test_rest_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RESTConfig(**kwargs)


def test_auth_helpers_redact_secrets():
    assert BearerToken("t").headers() == {"Authorization": "Bearer t"}
    assert APIKey("k", header="triton-access-token").headers() == {"triton-access-token": "k"}
    assert BasicAuth("u", "p").headers() == {"Authorization": "Basic dTpw"}
    for obj in (BearerToken("secret"), APIKey("secret"), BasicAuth("u", "secret")):
        assert "secret" not in repr(obj)
    with pytest.raises(ValueError):
        BearerToken("")
    with pytest.raises(ValueError):
        APIKey("")
    assert RESTConfig(auth=BearerToken("t")).static_auth_headers() == {"Authorization": "Bearer t"}
    assert RESTConfig(auth=object()).static_auth_headers() == {}
    assert not math.isnan(RetryPolicy().backoff(1, rand=lambda: 0.5))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cert": "/nonexistent/client.pem"}, "RESTConfig.cert"),
        ({"cert": ("/nonexistent/c.pem", "/nonexistent/k.pem")}, "RESTConfig.cert[0]"),
        ({"verify": "/nonexistent/ca.pem"}, "RESTConfig.verify"),
    ],
)
def test_rest_config_checks_tls_paths_at_construction(kwargs, field):
    with pytest.raises(ValueError, match=re.escape(field) + r": ./nonexistent/.* does not exist"):
        RESTConfig(**kwargs)
