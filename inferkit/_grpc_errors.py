"""THE error boundary of both gRPC clients: a ``grpc.RpcError`` (sync or aio: both have ``code()``, ``details()``,
``trailing_metadata()``) becomes a typed inferkit error.

Owns: telling a call that never reached a server (grpc-core's own connect / TLS texts: ConnectError, TLSError; a
deadline that ran out while the channel was still connecting: ConnectTimeout) from a server's answer (the class
registered for its code, with the server's message), message-size limits (PayloadTooLargeError,
ResponseTooLargeError), and the server's pushback (``grpc-retry-pushback-ms``, ``retry-after``) as ``retry_after``.
Must not import: requests, urllib3, aiohttp, grpc (the error object is duck-typed), inferkit.aio, inferkit._transport.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from inferkit.errors import (
    ConnectError,
    ConnectTimeout,
    InferkitError,
    PayloadTooLargeError,
    ResponseTooLargeError,
    ServerError,
    TLSError,
    error_for_grpc_code,
)

__all__ = ["map_rpc_error"]

# grpc-core's own texts for a call that never got a server answer.
_CONNECT_MARKERS = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "connection reset",
    "socket closed",
    "broken pipe",
    "dns resolution failed",
    "name resolution",
    "no address",
    "endpoint closing",
    "connections to all backends failing",
    "failed to pick subchannel",
    "goaway",
    "ping timeout",  # keep-alive found the peer gone (a silent network drop): the connection, not the server
    "keepalive watchdog timeout",  # the same, in grpc-core's words before grpcio 1.5x
    "end of tcp stream",
    "handshake",
)
# "Hostname Verification Check failed" / "Custom verification check failed" are grpc-core's texts for a server
# certificate that does not name the host; kept specific so a DNS "hostname" message is not taken for TLS.
_TLS_MARKERS = (
    "ssl",
    "tls",
    "handshake",
    "certificate",
    "x509",
    "verification check failed",
    "hostname verification",
)
# A connection that could not be set up because the server closed it: with TLS 1.3 a server requiring a client
# certificate rejects it only after the client's handshake finished, and grpc-core then just says "socket closed".
_CLOSED_MARKERS = ("socket closed", "connection reset", "end of tcp stream", "broken pipe")
# Channel connectivity states of a connection still being set up (grpc.ChannelConnectivity names): a deadline that
# ran out in one of them is a connect timeout. IDLE, READY and SHUTDOWN are not: the call had a connection, or the
# state says nothing about this call.
_CONNECTING_STATES = frozenset({"CONNECTING", "TRANSIENT_FAILURE"})
CLIENT_CERT_HINT = (
    "the server may require a client certificate (mTLS): pass certificate_chain and private_key "
    "(RESTConfig.cert for REST)"
)


def _details(exc: Any) -> str:
    try:
        return str(exc.details() or "")
    except Exception:  # noqa: BLE001 - a non-call RpcError
        return str(exc)


def _debug(exc: Any) -> str:
    try:
        return str(exc.debug_error_string() or "")
    except Exception:  # noqa: BLE001 - not a grpc call error
        return ""


def _trailing(exc: Any) -> dict[str, str]:
    try:
        md = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001
        return {}
    return {k.lower(): v for k, v in md if isinstance(v, str)}


def _pushback(trailers: Mapping[str, str]) -> float | None:
    ms = trailers.get("grpc-retry-pushback-ms")
    if ms is not None:
        try:
            value = int(ms)
            return value / 1000.0 if value >= 0 else None
        except ValueError:
            return None
    raw = trailers.get("retry-after")
    if raw is not None:
        try:
            return max(0.0, float(raw))
        except ValueError:
            return None
    return None


def map_rpc_error(
    exc: Any,
    *,
    model_name: str | None = None,
    request_id: str | None = None,
    attempts: int = 1,
    tls_without_client_cert: bool = False,
    channel_state: Callable[[], str | None] | None = None,
) -> InferkitError:
    """Turn a ``grpc.RpcError`` (or ``grpc.aio.AioRpcError``) into the matching inferkit error.

    UNAVAILABLE with grpc-core's own transport text means no server answered: ConnectError (TLSError for
    handshake / certificate failures; with ``tls_without_client_cert``, also for a TLS connection the server
    closed while it was being set up, which is how a server requiring a client certificate rejects one).
    RESOURCE_EXHAUSTED "larger than max" is a size limit, not rate limiting: PayloadTooLargeError for the request,
    ResponseTooLargeError for the reply. DEADLINE_EXCEEDED is ConnectTimeout when ``channel_state`` (the
    transport's view of its channel: ``"READY"``, ``"CONNECTING"``... or None when unknown) says the connection was
    still being set up (CONNECTING or TRANSIENT_FAILURE: a host that accepts no connection, or a port that never
    completes the HTTP/2 handshake), as on REST; otherwise ReadTimeout (grpc-core's text is "Deadline Exceeded"
    either way). Everything else maps by code, with the server's pushback (``grpc-retry-pushback-ms`` /
    ``retry-after``) as ``retry_after``.
    """
    code_obj = exc.code() if hasattr(exc, "code") else None
    code = getattr(code_obj, "name", None) or "UNKNOWN"
    details = _details(exc)
    lowered = details.lower()
    context: dict[str, Any] = {"model_name": model_name, "request_id": request_id, "attempts": attempts}
    if code == "UNAVAILABLE" and any(m in lowered for m in _CONNECT_MARKERS):
        if any(m in lowered for m in _TLS_MARKERS):
            return TLSError(f"could not reach the gRPC server: TLS failed: {details}", grpc_code=code, **context)
        if tls_without_client_cert and "failed to connect" in lowered and any(m in lowered for m in _CLOSED_MARKERS):
            return TLSError(
                f"could not reach the gRPC server: the TLS connection was closed while it was being set up "
                f"({details}); {CLIENT_CERT_HINT}",
                grpc_code=code,
                **context,
            )
        return ConnectError(f"could not reach the gRPC server: {details}", grpc_code=code, **context)
    if code == "DEADLINE_EXCEEDED" and channel_state is not None:
        state = channel_state()
        if state in _CONNECTING_STATES:
            return ConnectTimeout(
                f"could not connect to the gRPC server before the deadline ran out (the channel is {state}: it "
                f"never became ready; {details or code}); is the server reachable from here, and serving gRPC on "
                "this port?",
                grpc_code=code,
                **context,
            )
    if code == "RESOURCE_EXHAUSTED" and "larger than max" in lowered:
        # Our own limit hit while sending, or the server's limit (its status arrives "from peer"), concern the
        # request; our limit hit while receiving, the reply.
        # grpcio (>= 1.63, setup.cfg's floor) marks its own receive limit "CLIENT: Received message ..." while its
        # debug string may still say "from peer"; without the mark, the debug string is all there is.
        ours = lowered.startswith("client: received message")
        from_peer = not ours and "received from peer" in _debug(exc).lower()
        if "sent message" in lowered or from_peer:
            return PayloadTooLargeError(
                f"the request is larger than the gRPC message size limit: {details}",
                status_code=413,
                grpc_code=code,
                **context,
            )
        return ResponseTooLargeError(
            f"the reply exceeded the gRPC message size limit (raise max_message_size): {details}",
            grpc_code=code,
            **context,
        )
    err = error_for_grpc_code(code, details or f"gRPC call failed with {code}", **context)
    if isinstance(err, ServerError):
        err.retry_after = _pushback(_trailing(exc))
    return err
