"""Security: TLS verification on by default (untrusted CA, hostname mismatch, mTLS without a client certificate),
credentials never in logs, exception messages or reprs, no Authorization header carried to another host on a
redirect, and the caller's headers dict left untouched. Every client kind.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Any, Iterator

import pytest

from inferkit import APIKey, BasicAuth, BearerToken, RESTConfig, RetryPolicy, errors
from inferkit.testing import Fault, ReferenceServer, ServerTLS
from inferkit.testing.models import add_sub_model

from .drivers import FAST, KINDS, Driver, add_sub_request, check_add_sub
from .rawserver import RawHTTPServer, http_reply

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cr3t"
TOKEN = f"Bearer {SECRET}-token"
POLICY = RetryPolicy(max_retries=1, **FAST)


def _infer(client: Any) -> Any:
    return client.infer(add_sub_request())


# -- TLS -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_servers(tls_material: Any) -> Iterator[dict[str, ReferenceServer]]:
    import trustme

    ca = trustme.CA()
    wrong_host = ServerTLS.from_trustme(ca, hostnames=("inferkit.invalid",))
    servers = {
        "plain": ReferenceServer([add_sub_model()], tls=tls_material.server).start(),
        "mutual": ReferenceServer([add_sub_model()], tls=tls_material.server_mutual).start(),
        "wrong_host": ReferenceServer([add_sub_model()], tls=dataclasses.replace(wrong_host)).start(),
    }
    servers["wrong_host"].ca_pem = ca.cert_pem.bytes()  # type: ignore[attr-defined]
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _tls_client_kwargs(driver: Driver, ca_pem: bytes | None, ca_file: str | None, cert: Any = None) -> dict[str, Any]:
    if driver.protocol == "rest":
        kw: dict[str, Any] = {}
        if ca_file is not None:
            kw["verify"] = ca_file
        if cert is not None:
            kw["cert"] = (cert[0], cert[1])
        return kw
    kw = {"use_ssl": True}
    if ca_pem is not None:
        kw["root_certificates"] = ca_pem
    if cert is not None:
        kw["certificate_chain"], kw["private_key"] = cert[2], cert[3]
    return kw


def _url(driver: Driver, server: ReferenceServer) -> str:
    server.reset()
    return server.http_url if driver.protocol == "rest" else server.grpc_url


@pytest.mark.parametrize("kind", KINDS)
def test_tls_trusted_ca_works(kind: str, tls_servers: dict[str, ReferenceServer], tls_material: Any) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    kw = _tls_client_kwargs(driver, tls_material.ca_pem, tls_material.ca_file)
    check_add_sub(driver.run(_url(driver, tls_servers["plain"]), _infer, policy=POLICY, **kw))


@pytest.mark.parametrize("kind", KINDS)
def test_tls_untrusted_certificate_fails_by_default(kind: str, tls_servers: dict[str, ReferenceServer]) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    kw = _tls_client_kwargs(driver, None, None)  # system CAs: the test CA is not among them
    with pytest.raises(errors.TLSError) as info:
        driver.run(_url(driver, tls_servers["plain"]), _infer, policy=POLICY, timeout=3.0, **kw)
    assert info.value.attempts == 1, "a TLS failure is not retried"
    assert tls_servers["plain"].count(route="infer") == 0


@pytest.mark.parametrize(
    "kind",
    [
        "sync_rest",
        "aio_rest",
        "sync_grpc",
        "aio_grpc",
    ],
)
def test_tls_hostname_mismatch_fails(kind: str, tls_servers: dict[str, ReferenceServer]) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    server = tls_servers["wrong_host"]
    ca_pem = server.ca_pem  # type: ignore[attr-defined]
    ca_file = None
    if driver.protocol == "rest":
        import tempfile

        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
            f.write(ca_pem)
            ca_file = f.name
    kw = _tls_client_kwargs(driver, ca_pem, ca_file)
    with pytest.raises(errors.TLSError):
        driver.run(_url(driver, server), _infer, policy=POLICY, timeout=3.0, **kw)
    assert server.count(route="infer") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_with_client_certificate_works(
    kind: str, tls_servers: dict[str, ReferenceServer], tls_material: Any
) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    cert = (
        tls_material.client_cert_file,
        tls_material.client_key_file,
        tls_material.client_cert_pem,
        tls_material.client_key_pem,
    )
    kw = _tls_client_kwargs(driver, tls_material.ca_pem, tls_material.ca_file, cert)
    check_add_sub(driver.run(_url(driver, tls_servers["mutual"]), _infer, policy=POLICY, **kw))


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_without_client_certificate_fails(
    kind: str, tls_servers: dict[str, ReferenceServer], tls_material: Any
) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    kw = _tls_client_kwargs(driver, tls_material.ca_pem, tls_material.ca_file)
    with pytest.raises(errors.ConnectError):
        driver.run(_url(driver, tls_servers["mutual"]), _infer, policy=POLICY, timeout=3.0, **kw)
    assert tls_servers["mutual"].count(route="infer") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_without_client_certificate_fails_clearly(
    kind: str, tls_servers: dict[str, ReferenceServer], tls_material: Any
) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    kw = _tls_client_kwargs(driver, tls_material.ca_pem, tls_material.ca_file)
    with pytest.raises(errors.ConnectError) as info:
        driver.run(_url(driver, tls_servers["mutual"]), _infer, policy=POLICY, timeout=3.0, **kw)
    # With TLS 1.3 the server's rejection arrives after the client's handshake finished: a TLSError when the
    # alert is seen as such, else a connection closed; either way it names the TLS or the certificate.
    text = str(info.value).lower()
    assert any(word in text for word in ("tls", "ssl", "certificate", "handshake")), text
    assert "client certificate" in text, text
    assert isinstance(info.value, errors.TLSError) and info.value.attempts == 1, "a TLS failure is not retried"
    assert tls_servers["mutual"].count(route="infer") == 0


# -- credentials never leak ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ReferenceServer]:
    with ReferenceServer([add_sub_model()], auth=("Authorization", TOKEN)) as server:
        yield server


def _forbidden_texts() -> list[str]:
    basic = base64.b64encode(f"user:pw-{SECRET}".encode()).decode()
    return [SECRET, basic, basic[:16]]


def _assert_clean(text: str, where: str) -> None:
    for secret in _forbidden_texts():
        assert secret not in text, f"credential {secret!r} found in {where}: {text[:500]}"


def _assert_error_clean(err: BaseException) -> None:
    seen: BaseException | None = err
    depth = 0
    while seen is not None and depth < 6:  # the error, and what it was raised from
        _assert_clean(str(seen), f"str({type(seen).__name__})")
        _assert_clean(repr(seen), f"repr({type(seen).__name__})")
        seen = seen.__cause__ or seen.__context__
        depth += 1


def _client_auth(driver: Driver, how: str) -> dict[str, Any]:
    """Client keyword arguments that send credentials ``how``."""
    value = {
        "bearer": BearerToken(f"{SECRET}-token"),
        "wrong_bearer": BearerToken(f"wrong-{SECRET}"),
        "api_key": APIKey(f"key-{SECRET}"),
        "basic": BasicAuth("user", f"pw-{SECRET}"),
    }[how]
    if driver.protocol == "rest":
        return {"auth": value, "verbose": True}
    return {"auth": value, "verbose": True}


@pytest.mark.parametrize("how", ["bearer", "wrong_bearer", "api_key", "basic"])
@pytest.mark.parametrize("kind", KINDS)
def test_credentials_never_in_logs_or_errors(
    kind: str, how: str, auth_server: ReferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    auth_server.reset()
    caplog.set_level(logging.DEBUG)
    url = driver.target(auth_server)
    kw = _client_auth(driver, how)
    # One success or 401, then a retried 503, then a dropped connection: every log and error path.
    auth_server.inject(Fault(route="infer", action="status", status=503, times=2))
    auth_server.inject(Fault(route="model_metadata", action="drop_before", times=None))
    for op in (_infer, _infer, lambda c: c.get_model_metadata("add_sub")):
        try:
            driver.run(url, op, policy=POLICY, timeout=3.0, **kw)
        except errors.InferkitError as err:
            _assert_error_clean(err)
    if how == "bearer":
        assert auth_server.count(route="infer") >= 2  # the credentials were really sent and accepted
    assert caplog.records, "verbose=True logs each call"
    _assert_clean(caplog.text, "the logs")
    for record in caplog.records:
        _assert_clean(repr(record.args), "log record args")


@pytest.mark.parametrize("kind", KINDS)
def test_per_call_credential_headers_never_in_logs_or_errors(
    kind: str, auth_server: ReferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    auth_server.reset()
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": TOKEN, "X-API-Key": f"key-{SECRET}"}
    if driver.protocol == "grpc":
        headers = {k.lower(): v for k, v in headers.items()}
    auth_server.inject(Fault(route="infer", action="status", status=503, times=None))
    with pytest.raises(errors.ServiceUnavailableError) as info:
        driver.run(
            driver.target(auth_server),
            lambda c: c.infer(add_sub_request(), headers=headers),
            policy=POLICY,
            verbose=True,
        )
    _assert_error_clean(info.value)
    _assert_clean(caplog.text, "the logs")


def test_rest_config_repr_hides_credentials() -> None:
    config = RESTConfig(auth=("user", f"pw-{SECRET}"))
    _assert_clean(repr(config), "repr(RESTConfig(auth=...))")
    _assert_clean(repr(RESTConfig(auth=BearerToken(SECRET))), "repr(RESTConfig(auth=BearerToken))")


def test_rest_config_repr_hides_credential_headers() -> None:
    config = RESTConfig(
        headers={"Authorization": TOKEN, "X-Trace": "t1"}, proxies={"http": f"http://u:{SECRET}@p:3128"}
    )
    text = repr(config)
    _assert_clean(text, "repr(RESTConfig(headers=..., proxies=...))")
    assert "X-Trace" in text and "t1" in text and "p:3128" in text  # only the secrets are hidden


@pytest.mark.parametrize("kind", ["sync_rest", "aio_rest"])
def test_password_in_url_never_in_errors_or_reprs(kind: str) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    from .test_connection_faults import free_port

    url = f"http://user:pw-{SECRET}@127.0.0.1:{free_port()}"
    holder: list[str] = []

    def op(client: Any) -> Any:
        holder.append(repr(client))
        holder.append(str(client.host))
        return client.infer(add_sub_request())

    with pytest.raises(errors.ConnectError) as info:
        driver.run(url, op, policy=POLICY, timeout=2.0)
    _assert_error_clean(info.value)
    for text in holder:
        _assert_clean(text, "the client's repr/host")


@pytest.mark.parametrize("kind", ["sync_rest", "aio_rest"])
@pytest.mark.parametrize("explicit", [False, True])
def test_password_in_url_is_sent_as_basic_auth_unless_auth_is_configured(kind: str, explicit: bool) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    from .test_connection_faults import _OK_BODY

    seen: list[bytes] = []

    def respond(conn: int, index: int, request: bytes) -> bytes:
        seen.append(request)
        return http_reply(_OK_BODY, headers={"Content-Type": "application/json"})

    with RawHTTPServer(respond) as raw:
        url = raw.url.replace("://", "://us%40er:p%3Aw@", 1)
        kw: dict[str, Any] = {"auth": BearerToken("explicit")} if explicit else {}
        driver.run(url, _infer, policy=RetryPolicy.none(), timeout=3.0, binary_data=False, **kw)
    expected = b"Bearer explicit" if explicit else b"Basic " + base64.b64encode(b"us@er:p:w")
    assert len(seen) == 1 and b"authorization: " + expected.lower() in seen[0].lower(), seen[0][:300]


# -- redirects -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync_rest", "aio_rest"])
def test_redirect_to_another_host_never_carries_authorization(kind: str) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    seen: list[bytes] = []

    def target(conn: int, index: int, request: bytes) -> bytes:
        seen.append(request)
        return http_reply(b'{"model_name": "add_sub", "outputs": []}', headers={"Content-Type": "application/json"})

    with RawHTTPServer(target) as other:
        # "localhost" vs "127.0.0.1": another origin (host and port differ), same machine.
        location = f"http://localhost:{other.port}/v2/models/add_sub/infer"

        def redirect(conn: int, index: int, request: bytes) -> bytes:
            return http_reply(b"", status="307 Temporary Redirect", headers={"Location": location})

        with RawHTTPServer(redirect) as first:
            # Documented behaviour: inferkit follows no redirect (a 3xx is a reply, and not a valid infer reply).
            with pytest.raises(errors.DecodeError) as info:
                driver.run(first.url, _infer, policy=RetryPolicy.none(), timeout=3.0, auth=BearerToken(SECRET))
            _assert_error_clean(info.value)
            assert "redirect" in str(info.value) and location in str(info.value), str(info.value)
    assert seen == [], "the redirect was followed"
    for request in seen:
        assert b"authorization" not in request.lower(), request[:300]
        assert SECRET.encode() not in request


# -- the caller's headers are not mutated ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_callers_headers_dict_is_not_mutated(kind: str, auth_server: ReferenceServer) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    auth_server.reset()
    headers = {"authorization": TOKEN, "x-trace-id": "abc"}
    snapshot = dict(headers)

    def op(client: Any) -> Any:
        calls = (
            lambda: client.infer(add_sub_request(), headers=headers),
            lambda: client.get_model_metadata("add_sub", headers=headers),
            lambda: client.is_server_live(headers=headers),
        )
        if not driver.is_async:
            return [call() for call in calls]

        async def go() -> Any:
            return [await call() for call in calls]

        return go()

    results = driver.run(driver.target(auth_server), op, policy=POLICY)
    check_add_sub(results[0])
    assert headers == snapshot and list(headers) == list(snapshot)
    assert auth_server.count(route="infer") == 1
