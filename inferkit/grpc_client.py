"""The sync gRPC client, :class:`InferenceGRPCClient` (grpcio).

Owns: the channel (TLS, message-size limits, keepalive, compression), per-call deadlines and metadata, the
client-side retry loop, the blocking stream API, and the one boundary where ``grpc.RpcError`` becomes an
inferkit error. Building and parsing messages is the codec's job (``inferkit.codec.grpc_v2``).
Must not import at module level: grpc or protobuf (``import inferkit.grpc_client`` works without the
``grpc`` extra; the constructor raises an ImportError naming ``pip install 'inferkit[grpc]'``), requests,
urllib3, aiohttp, or anything from ``inferkit.aio``.

Design decisions (see also the class docstring):

* **Retries are all client-side**, driven by :class:`~inferkit.config.RetryPolicy`: UNAVAILABLE and
  RESOURCE_EXHAUSTED (the policy's ``retry_grpc_codes``), connection failures and, when
  ``retry_on_timeout``, an attempt that ran out of its deadline. gRPC's own service-config retries are left
  off because they cannot do what the policy promises: they are capped at 5 attempts, never retry a request
  larger than the retry buffer (256 KiB), cannot tell a sequence request (never retried) from another call to
  the same method, and do not report how many attempts were made. gRPC's *transparent* retries (a request that
  never left the client) stay on. The per-call ``timeout`` is one deadline across all attempts and the
  backoff sleeps between them (as gRPC's own retries would do); the server's pushback (trailing metadata
  ``grpc-retry-pushback-ms`` or ``retry-after``) replaces the backoff when the policy respects it. The same
  serialized request bytes are resent, except for requests of ``LARGE_REQUEST_BYTES`` (16 MiB) or more: those
  are sent from a request iterator (same unary RPC on the wire) so that neither inferkit nor gRPC holds the
  serialized request while the reply arrives, which keeps the peak memory of a 64 MiB round trip near 2.5x the
  payload instead of 3.75x; a retry of such a request rebuilds its bytes from the caller's arrays (one memcpy).
* **Errors**: codes map through :func:`inferkit.errors.error_for_grpc_code` with the model name and request id
  attached. UNAVAILABLE with a transport-level message from grpc-core (connection refused, "failed to connect",
  reset, DNS, socket closed) means the server never answered and becomes :class:`~inferkit.errors.ConnectError`
  (:class:`~inferkit.errors.TLSError` when the handshake or a certificate failed); an UNAVAILABLE sent by a
  server carries the server's own message and stays :class:`~inferkit.errors.ServiceUnavailableError`.
  DEADLINE_EXCEEDED is :class:`~inferkit.errors.ReadTimeout`; a deadline that ran out across retries is
  :class:`~inferkit.errors.DeadlineExceeded`. RESOURCE_EXHAUSTED "message larger than max" is not rate
  limiting and is not retried: the request (our send limit, or the server's limit: 413,
  :class:`~inferkit.errors.PayloadTooLargeError`) or the reply (our receive limit,
  :class:`~inferkit.errors.ResponseTooLargeError`) exceeded a message size limit.
* **Streams**: :meth:`InferenceGRPCClient.stream` opens one ``ModelStreamInfer`` call; ``send()`` queues
  requests, iterating yields responses as they arrive; a reply carrying ``error_message`` raises the typed error
  from :func:`inferkit.codec.grpc_v2.stream_error` at that point of the iteration and the stream stays usable.
  Every wait is bounded by the stream's deadline.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

from inferkit._version import __version__
from inferkit.batching import BatchMixin, RebuildOnUnpickle
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.config import SENSITIVE_HEADERS, APIKey, BasicAuth, BearerToken, RetryPolicy
from inferkit.errors import (
    ConnectError,
    DeadlineExceeded,
    EncodeError,
    InferkitError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ReadTimeout,
    ResponseTooLargeError,
    ServerError,
    TLSError,
    TransportError,
    UnauthenticatedError,
    error_for_grpc_code,
)

__all__ = ["InferenceGRPCClient", "InferStream", "DEFAULT_CHANNEL_OPTIONS", "LARGE_REQUEST_BYTES"]

logger = logging.getLogger("inferkit")

_INSTALL_HINT = "the gRPC client needs grpcio and protobuf: pip install 'inferkit[grpc]'"

#: Channel options inferkit sets; ``channel_args`` given by the user are merged over these, key by key.
DEFAULT_CHANNEL_OPTIONS: Mapping[str, Any] = {
    # gRPC's 4 MiB receive limit fails any real tensor; the server enforces its own limit anyway.
    "grpc.max_send_message_length": -1,
    "grpc.max_receive_message_length": -1,
    # Keepalive finds dead connections (a load balancer that dropped the flow) but must stay above the 5 min
    # that default gRPC servers accept between pings without data, or a long inference gets GOAWAY'd.
    "grpc.keepalive_time_ms": 330_000,
    "grpc.keepalive_timeout_ms": 20_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 2,
    # A restarted server (a rolling update) is found again within seconds, not gRPC's default of up to 2 min.
    "grpc.max_reconnect_backoff_ms": 10_000,
    # Transparent retries only (no retry policy): see the module docstring.
    "grpc.enable_retries": 1,
    "grpc.primary_user_agent": f"inferkit/{__version__}",
}

Headers = Union[Mapping[str, str], Sequence[tuple[str, str]], None]

_GRPC: Any = None


def _load_grpc() -> Any:
    """Import grpc (and the protobuf codec) on first use; ImportError naming the extra when missing."""
    global _GRPC
    if _GRPC is None:
        try:
            import grpc  # noqa: PLC0415 - optional dependency

            import inferkit.codec.grpc_v2  # noqa: F401, PLC0415 - imports protobuf
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        _GRPC = grpc
    return _GRPC


_CODEC: Any = None


def _codec() -> Any:
    global _CODEC
    if _CODEC is None:
        from inferkit.codec import grpc_v2  # noqa: PLC0415 - protobuf is part of the optional grpc extra

        _CODEC = grpc_v2
    return _CODEC


# Bumped in a child process after fork(): clients compare it on every call (cheaper than os.getpid()).
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- error mapping (the one boundary) -------------------------------------------------------------------------

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
    "end of tcp stream",
    "handshake",
)
_TLS_MARKERS = ("ssl", "tls", "handshake", "certificate", "x509")


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
    exc: Any, *, model_name: str | None = None, request_id: str | None = None, attempts: int = 1
) -> InferkitError:
    """Turn a ``grpc.RpcError`` into the matching inferkit error (module docstring: the rules)."""
    code_obj = exc.code() if hasattr(exc, "code") else None
    code = getattr(code_obj, "name", None) or "UNKNOWN"
    details = _details(exc)
    lowered = details.lower()
    context: dict[str, Any] = {"model_name": model_name, "request_id": request_id, "attempts": attempts}
    if code == "UNAVAILABLE" and any(m in lowered for m in _CONNECT_MARKERS):
        cls = TLSError if any(m in lowered for m in _TLS_MARKERS) else ConnectError
        return cls(f"could not reach the gRPC server: {details}", grpc_code=code, **context)
    if code == "RESOURCE_EXHAUSTED" and "larger than max" in lowered:
        # A size limit, not rate limiting: never retried. Our own limit hit while sending, or the server's limit
        # (its status arrives "from peer"), concern the request; our limit hit while receiving, the reply.
        from_peer = "received from peer" in _debug(exc).lower()
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


def _is_retryable(err: InferkitError, policy: RetryPolicy) -> bool:
    if isinstance(err, (PayloadTooLargeError, ResponseTooLargeError)):
        return False
    if isinstance(err, ConnectError):
        return not isinstance(err, TLSError)
    if isinstance(err, ReadTimeout):
        return policy.retry_on_timeout
    return err.grpc_code is not None and policy.is_retryable_grpc_code(err.grpc_code)


# -- helpers -------------------------------------------------------------------------------------------------


def _read_pem(value: str | bytes | None, what: str) -> bytes | None:
    """PEM given as bytes, as PEM text, or as a file path."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        if "-----BEGIN" in value:
            return value.encode("ascii")
        try:
            with open(value, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read PEM file {value!r}: {exc}") from exc
    raise ValueError(f"{what} must be PEM bytes or a file path, got {type(value).__name__}")


def _parse_url(url: str, use_ssl: bool) -> tuple[str, bool]:
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be 'host:port' or 'grpc[s]://host:port', got {url!r}")
    lowered = url.lower()
    if lowered.startswith("grpcs://"):
        return url[8:].rstrip("/"), True
    if lowered.startswith("grpc://"):
        return url[7:].rstrip("/"), use_ssl
    if lowered.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is an HTTP URL; use InferenceRESTClient for REST, or 'grpc://host:port' for gRPC")
    return url.rstrip("/"), use_ssl


def _normalize_metadata(headers: Headers, where: str = "headers") -> tuple[tuple[str, str], ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, (str, bytes)):
            raise EncodeError(f"{where}: metadata must map str to str, got {key!r}: {value!r}")
        # gRPC metadata keys are lower case; HTTP/2 rejects upper case.
        out.append((key.lower(), value))
    return tuple(out)


def _redact(metadata: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(k, "***" if k in SENSITIVE_HEADERS else v) for k, v in metadata]


_UNSET: Any = object()
_sleep = time.sleep  # one indirection so tests can record backoff waits without patching the time module

#: Requests whose tensors total at least this many bytes take the large-request path (see ``infer``).
LARGE_REQUEST_BYTES = 16 * 1024 * 1024


def _once(build: Any) -> Iterator[bytes]:
    yield build()


class InferenceGRPCClient(RebuildOnUnpickle, BatchMixin):
    """A blocking gRPC client for servers that speak the Open Inference Protocol v2 (Triton, KServe, MLServer).

    One client (one HTTP/2 channel) is meant to be shared by every thread of a process; it is thread-safe and
    recreates its channel in a child process after ``fork()``.

    Args:
        url: ``"host:port"``, ``"grpc://host:port"`` or ``"grpcs://host:port"`` (TLS).
        verbose: Log every call (RPC, model, status, duration) at INFO on logger ``inferkit``; credentials
            in metadata are redacted.
        use_ssl: Use TLS (implied by ``grpcs://`` and by any certificate argument).
        root_certificates: CA bundle to trust: PEM bytes or a file path (None: the system's roots).
        private_key: Client key for mutual TLS: PEM bytes or a file path.
        certificate_chain: Client certificate chain for mutual TLS: PEM bytes or a file path.
        creds: Ready ``grpc.ChannelCredentials`` (overrides the three above).
        channel_args: Extra channel options, a dict or a list of ``(key, value)``; merged over
            :data:`DEFAULT_CHANNEL_OPTIONS` key by key, so passing some never drops the others.
        timeout: Default deadline in seconds of every call, across its retries (None: no deadline).
        retries: Retries of a failed call (``RetryPolicy(max_retries=retries)``; see ``retry``).
        retry: The full :class:`~inferkit.config.RetryPolicy` (overrides ``retries``).
        metadata: Metadata (headers) sent with every call; per-call ``headers`` are added after them.
        auth: :class:`~inferkit.config.BearerToken`, :class:`~inferkit.config.APIKey` or
            :class:`~inferkit.config.BasicAuth`, sent as metadata on every call.
        compression: ``"gzip"`` or ``"deflate"`` to compress requests (None: no compression).
        max_message_size: Largest message sent or received, in bytes (default: no limit).

    Example:
        >>> with InferenceGRPCClient("localhost:8001") as client:
        ...     resp = client.infer(InferRequest("m", [x]))
    """

    def __init__(
        self,
        url: str,
        verbose: bool = False,
        use_ssl: bool = False,
        root_certificates: str | bytes | None = None,
        private_key: str | bytes | None = None,
        certificate_chain: str | bytes | None = None,
        creds: Any = None,
        channel_args: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        timeout: float | None = 60,
        retries: int = 3,
        *,
        retry: RetryPolicy | None = None,
        metadata: Headers = None,
        auth: BearerToken | APIKey | BasicAuth | None = None,
        compression: str | None = None,
        max_message_size: int | None = None,
    ) -> None:
        grpc = _load_grpc()
        self._url, ssl = _parse_url(url, use_ssl)
        self._verbose = bool(verbose)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self._timeout = None if timeout is None else float(timeout)
        if retry is None:
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
            retry = RetryPolicy(max_retries=retries)
        elif not isinstance(retry, RetryPolicy):
            raise ValueError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._retry = retry
        base = _normalize_metadata(metadata, "metadata")
        if auth is not None:
            if not isinstance(auth, (BearerToken, APIKey, BasicAuth)):
                raise ValueError("auth must be a BearerToken, APIKey or BasicAuth")
            base += _normalize_metadata(auth.headers(), "auth")
        self._metadata = base
        if compression not in (None, "gzip", "deflate"):
            raise ValueError(f"compression must be None, 'gzip' or 'deflate', got {compression!r}")
        self._compression = {
            None: None,
            "gzip": grpc.Compression.Gzip,
            "deflate": grpc.Compression.Deflate,
        }[compression]
        options = dict(DEFAULT_CHANNEL_OPTIONS)
        if max_message_size is not None:
            if isinstance(max_message_size, bool) or not isinstance(max_message_size, int) or max_message_size < 1:
                raise ValueError(f"max_message_size must be a positive integer, got {max_message_size!r}")
            options["grpc.max_send_message_length"] = max_message_size
            options["grpc.max_receive_message_length"] = max_message_size
        if channel_args:
            items = channel_args.items() if isinstance(channel_args, Mapping) else channel_args
            for key, value in items:
                options[key] = value
        self._options = tuple(options.items())
        if creds is None and (ssl or root_certificates or private_key or certificate_chain):
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read_pem(root_certificates, "root_certificates"),
                private_key=_read_pem(private_key, "private_key"),
                certificate_chain=_read_pem(certificate_chain, "certificate_chain"),
            )
        self._creds = creds
        self._lock = threading.Lock()
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}
        self._pid = -1
        self._generation = -1
        self._closed = False
        self._connect()

    # -- channel ----------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        grpc = _GRPC
        if self._creds is not None:
            channel = grpc.secure_channel(self._url, self._creds, options=self._options, compression=self._compression)
        else:
            channel = grpc.insecure_channel(self._url, options=self._options, compression=self._compression)
        from inferkit.codec.grpc_methods import GRPC_METHODS  # noqa: PLC0415 - imports protobuf

        stubs: dict[str, Any] = {}
        for name, method in GRPC_METHODS.items():
            if name in ("ModelInfer", "ModelStreamInfer"):
                # Bytes in and out: the codec builds and splits the wire form itself (one copy in, zero out).
                factory = channel.stream_stream if method.is_stream else channel.unary_unary
                stubs[name] = factory(method.path, request_serializer=None, response_deserializer=None)
                if name == "ModelInfer":
                    # The same unary RPC on the wire, sent from a request iterator: gRPC then sends the message
                    # in its own batch and drops it once written, instead of holding it until the reply.
                    stubs["ModelInfer/large"] = channel.stream_unary(
                        method.path, request_serializer=None, response_deserializer=None
                    )
            else:
                stubs[name] = channel.unary_unary(
                    method.path,
                    request_serializer=method.request_type.SerializeToString,
                    response_deserializer=method.response_type.FromString,
                )
        self._channel, self._stubs, self._pid, self._generation = channel, stubs, os.getpid(), _fork_generation

    def _stub(self, name: str) -> Any:
        if self._generation != _fork_generation or self._closed:
            with self._lock:
                if self._closed:
                    raise TransportError(f"the gRPC client for {self._url} is closed")
                if self._generation != _fork_generation or self._pid != os.getpid():
                    # A forked child cannot use the parent's channel (its threads and sockets are the
                    # parent's); build a new one and leave the inherited object alone.
                    self._connect()
        return self._stubs[name]

    @property
    def host(self) -> str:
        """The target, ``host:port``."""
        return self._url

    @property
    def channel(self) -> Any:
        """The underlying ``grpc.Channel`` (recreated after a fork)."""
        self._stub("ServerLive")
        return self._channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with every call (lower-case keys)."""
        return self._metadata

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in effect."""
        return self._retry

    def close(self) -> None:
        """Close the channel; later calls raise TransportError. Safe to call twice."""
        with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
        if channel is not None and self._pid == os.getpid():
            channel.close()

    def __enter__(self) -> InferenceGRPCClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InferenceGRPCClient({self._url!r})"

    # -- the call path ---------------------------------------------------------------------------------------
    def _call_metadata(self, headers: Headers) -> tuple[tuple[str, str], ...]:
        if not headers:
            return self._metadata
        return self._metadata + _normalize_metadata(headers)

    def _deadline(self, timeout: float | None) -> float | None:
        t = self._timeout if timeout is None else timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {t!r}")
        return t

    def _call(
        self,
        name: str,
        request: Any,
        headers: Headers,
        timeout: float | None,
        *,
        model_name: str | None = None,
        request_id: str | None = None,
        retryable: bool = True,
        retry_server_codes: bool = True,
    ) -> Any:
        """One RPC with deadline, metadata and retries; the only place a ``grpc.RpcError`` is caught.

        ``request`` is a message, bytes, or (for the large-request path) a zero-argument callable that builds the
        bytes, called once per attempt and not referenced after sending.
        """
        stub = self._stub(name)
        metadata = self._call_metadata(headers)
        total = self._deadline(timeout)
        policy = self._retry
        if policy.deadline is not None:
            total = policy.deadline if total is None else min(total, policy.deadline)
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            remaining = None if total is None else total - (time.monotonic() - start)
            try:
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceeded(
                        f"{name}: the {total:g} s deadline ran out before attempt {attempt}",
                        model_name=model_name,
                        request_id=request_id,
                        attempts=attempt - 1,
                    )
                payload = _once(request) if callable(request) else request
                reply = stub(payload, timeout=remaining, metadata=metadata)
                del payload
                if self._verbose:
                    self._log(name, model_name, "OK", start, attempt, metadata)
                return reply
            except _GRPC.RpcError as exc:
                err = map_rpc_error(
                    exc,
                    model_name=model_name,
                    request_id=request_id,
                    attempts=attempt,
                )
                if self._verbose:
                    self._log(name, model_name, err.grpc_code or type(err).__name__, start, attempt, metadata)
                if not (
                    retryable
                    and _is_retryable(err, policy)
                    and (retry_server_codes or not isinstance(err, ServerError))
                ):
                    raise err from exc
                elapsed = time.monotonic() - start
                retry_after = err.retry_after if isinstance(err, ServerError) else None
                wait = policy.delay(attempt, retry_after=retry_after, elapsed=elapsed)
                if wait is not None and total is not None and elapsed + wait >= total:
                    wait = None
                if wait is None:
                    if isinstance(err, ReadTimeout) and attempt > 1:
                        raise DeadlineExceeded(
                            f"{name}: the {total:g} s deadline ran out after {attempt} attempts: {err.message}",
                            model_name=model_name,
                            request_id=request_id,
                            attempts=attempt,
                            grpc_code=err.grpc_code,
                        ) from exc
                    raise err from exc
                logger.debug("retrying %s (attempt %d failed with %s) in %.3f s", name, attempt, err.grpc_code, wait)
                _sleep(wait)

    def _log(self, name: str, model: str | None, status: str, start: float, attempts: int, md: Any) -> None:
        logger.info(
            "gRPC %s %s%s -> %s in %.1f ms (attempt %d) metadata=%s",
            self._url,
            name,
            f" model={model!r}" if model else "",
            status,
            (time.monotonic() - start) * 1000,
            attempts,
            _redact(md),
        )

    # -- health and metadata ---------------------------------------------------------------------------------
    def _probe(self, name: str, request: Any, field: str, headers: Headers, timeout: float | None, **ctx: Any) -> bool:
        """A health probe, as the REST client's: a server answer other than OK is False (and not retried);
        authentication errors and no answer at all raise."""
        try:
            reply = self._call(name, request, headers, timeout, retry_server_codes=False, **ctx)
        except (UnauthenticatedError, PermissionDeniedError):
            raise
        except ServerError:
            return False
        return bool(getattr(reply, field))

    def is_server_live(self, headers: Headers = None, timeout: float | None = None) -> bool:
        """Whether the server is live (``ServerLive``)."""
        return self._probe("ServerLive", _codec().pb.ServerLiveRequest(), "live", headers, timeout)

    def is_server_ready(self, headers: Headers = None, timeout: float | None = None) -> bool:
        """Whether the server is ready (``ServerReady``)."""
        return self._probe("ServerReady", _codec().pb.ServerReadyRequest(), "ready", headers, timeout)

    def is_model_ready(
        self, model_name: str, model_version: str | None = None, headers: Headers = None, timeout: float | None = None
    ) -> bool:
        """Whether a model (version) is ready; False for a model the server does not know."""
        request = _codec().model_ready_request(model_name, model_version)
        return self._probe("ModelReady", request, "ready", headers, timeout, model_name=model_name)

    def get_server_metadata(
        self, headers: Headers = None, timeout: float | None = None, *, as_message: bool = False
    ) -> Any:
        """Server name, version and extensions: ``{"name", "version", "extensions"}`` (or the message)."""
        codec = _codec()
        reply = self._call("ServerMetadata", codec.pb.ServerMetadataRequest(), headers, timeout)
        return reply if as_message else codec.server_metadata_to_dict(reply)

    def get_model_metadata(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """``{"name", "versions", "platform", "inputs", "outputs"}`` as REST returns it (or the message)."""
        codec = _codec()
        request = codec.model_metadata_request(model_name, model_version)
        reply = self._call("ModelMetadata", request, headers, timeout, model_name=model_name)
        return reply if as_message else codec.model_metadata_to_dict(reply)

    def get_model_config(
        self,
        model_name: str,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """The model's configuration (Triton ``model_configuration``) as a dict, or the ``ModelConfigResponse``."""
        codec = _codec()
        request = codec.model_config_request(model_name, model_version)
        reply = self._call("ModelConfig", request, headers, timeout, model_name=model_name)
        return reply if as_message else codec.model_config_to_dict(reply)

    def get_model_statistics(
        self,
        model_name: str | None = None,
        model_version: str | None = None,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        as_message: bool = False,
    ) -> Any:
        """``{"model_stats": [...]}`` for one model or (no name) all of them, or the message."""
        codec = _codec()
        request = codec.model_statistics_request(model_name, model_version)
        reply = self._call("ModelStatistics", request, headers, timeout, model_name=model_name)
        return reply if as_message else codec.model_statistics_to_dict(reply)

    def get_model_repository_index(
        self, headers: Headers = None, timeout: float | None = None, *, as_message: bool = False
    ) -> Any:
        """``[{"name", "version", "state", "reason"}, ...]`` for every model in the repository (or the message)."""
        codec = _codec()
        reply = self._call("RepositoryIndex", codec.repository_index_request(), headers, timeout)
        return reply if as_message else codec.repository_index_to_list(reply)

    def load_model(
        self,
        model_name: str,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        config: str | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Load (or reload) a model; ``config`` is a JSON model config, ``files`` maps ``"file:<path>"`` to bytes."""
        params: dict[str, Any] = dict(files or {})
        if config is not None:
            params["config"] = config
        request = _codec().repository_load_request(model_name, params)
        self._call("RepositoryModelLoad", request, headers, timeout, model_name=model_name, retryable=False)

    def unload_model(
        self,
        model_name: str,
        headers: Headers = None,
        timeout: float | None = None,
        *,
        unload_dependents: bool = False,
    ) -> None:
        """Unload a model (and, with ``unload_dependents``, the models that depend on it)."""
        params = {"unload_dependents": True} if unload_dependents else None
        request = _codec().repository_unload_request(model_name, params)
        self._call("RepositoryModelUnload", request, headers, timeout, model_name=model_name, retryable=False)

    # -- inference -------------------------------------------------------------------------------------------
    def infer(self, request: InferRequest, headers: Headers = None, timeout: float | None = None) -> InferResponse:
        """Run one inference (``ModelInfer``).

        The request is serialized once (each tensor copied once); retries resend the same bytes, except for
        requests of :data:`LARGE_REQUEST_BYTES` or more, which are rebuilt for a retry so that no copy of the
        tensors is held while the reply arrives (peak memory). A request with a ``sequence_id`` is never retried.
        Outputs are zero-copy views of the received reply.
        """
        codec = _codec()
        retryable = self._retry.allows_request(is_infer=True, is_sequence=request.is_sequence)
        header, buffers = codec.request_parts(request)
        if codec.buffers_size(buffers) < LARGE_REQUEST_BYTES:
            name, wire = "ModelInfer", codec.join_request_parts(header, buffers)
        else:
            # Large: join the bytes inside the call so nothing here keeps them alive while the reply arrives;
            # a retry joins them again from the caller's arrays (one memcpy) rather than holding a second copy.
            name, wire = "ModelInfer/large", lambda: codec.join_request_parts(header, buffers)
        reply = self._call(
            name,
            wire,
            headers,
            timeout,
            model_name=request.model_name,
            request_id=request.request_id,
            retryable=retryable,
        )
        del wire
        return codec.decode_infer_response(reply, model_name=request.model_name)  # type: ignore[no-any-return]

    def stream(self, timeout: float | None = _UNSET, headers: Headers = None) -> InferStream:
        """Open a bidirectional ``ModelStreamInfer`` stream (for decoupled models: several responses a request).

        Args:
            timeout: Deadline of the whole stream in seconds (default: the client's ``timeout``); when it runs
                out, waiting for a response raises :class:`~inferkit.errors.ReadTimeout`. None: no deadline
                (reads can still be bounded with ``recv(timeout=...)``).
            headers: Metadata for this stream.

        Example:
            >>> with client.stream(timeout=30) as stream:
            ...     stream.send(request_a)
            ...     stream.send(request_b)
            ...     stream.close_send()          # no more requests: iteration ends after the last response
            ...     for response in stream:
            ...         print(response.as_numpy("OUT"))
        """
        stub = self._stub("ModelStreamInfer")
        total = self._timeout if timeout is _UNSET else self._deadline(timeout) if timeout is not None else None
        return InferStream(stub, self._call_metadata(headers), total, self)

    def stream_infer(
        self, requests: Iterable[InferRequest], timeout: float | None = _UNSET, headers: Headers = None
    ) -> Iterator[InferResponse]:
        """Send ``requests`` on one stream and yield every response as it arrives (errors raised, typed).

        The stream is cancelled if the caller stops iterating early.
        """
        with self.stream(timeout=timeout, headers=headers) as s:
            for request in requests:
                s.send(request)
            s.close_send()
            yield from s


_END = object()


class InferStream:
    """One ``ModelStreamInfer`` call: send requests, iterate responses. Use as a context manager.

    ``send()`` may be called from any thread while another iterates. Iteration yields :class:`InferResponse`
    objects in arrival order and ends when the server closes the stream (after :meth:`close_send`). A reply
    with ``error_message`` raises its typed error from ``next()``; calling ``next()`` again continues with the
    following replies (or use :meth:`results`). A transport failure or the deadline raises and ends the stream.
    """

    def __init__(self, stub: Any, metadata: Any, timeout: float | None, client: InferenceGRPCClient) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        self._models: list[str] = []
        self._client = client  # keeps the channel alive while the stream is
        self._send_closed = False
        self._finished = False
        self._cancelled = False
        self._call = stub(self._request_iter(), timeout=timeout, metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="inferkit-grpc-stream", daemon=True)
        self._reader.start()

    def _request_iter(self) -> Iterator[bytes]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for reply in self._call:
                self._responses.put(reply)
        except _GRPC.RpcError as exc:
            self._responses.put(exc)
        except Exception as exc:  # noqa: BLE001 - surfaced to the reader, never lost in this thread
            self._responses.put(exc)
        finally:
            # Unblock gRPC's request-consuming thread, which would otherwise wait on the queue forever.
            self._requests.put(_END)
        self._responses.put(_END)

    @property
    def model_name(self) -> str | None:
        """The model of the requests sent, when they all went to one model."""
        return self._models[0] if len(set(self._models)) == 1 else None

    def send(self, request: InferRequest) -> None:
        """Queue one request (serialized now, sent as soon as the stream can take it)."""
        if self._send_closed:
            raise TransportError("the stream is closed for sending (close_send() or cancel() was called)")
        wire = _codec().serialize_infer_request(request)
        self._models.append(request.model_name)
        self._requests.put(wire)

    def close_send(self) -> None:
        """Tell the server no more requests follow; iteration ends after the last response."""
        if not self._send_closed:
            self._send_closed = True
            self._requests.put(_END)

    def cancel(self) -> None:
        """Cancel the stream: pending responses are dropped and iteration ends."""
        self._cancelled = True
        self.close_send()
        self._call.cancel()

    def recv(self, timeout: float | None = None) -> InferResponse | None:
        """The next response, waiting at most ``timeout`` seconds (and never past the stream's deadline).

        Returns None when the stream has ended. Raises :class:`~inferkit.errors.ReadTimeout` when nothing
        arrived in time, or the typed error of a failed request.
        """
        if self._finished:
            return None
        wait, by_stream = timeout, False
        if self._deadline is not None:
            # gRPC ends the call at its deadline and the reader reports it; the grace second is a backstop.
            left = max(0.0, self._deadline - time.monotonic()) + 1.0
            if wait is None or left < wait:
                wait, by_stream = left, True
        try:
            item = self._responses.get(timeout=wait)
        except queue.Empty:
            if not by_stream:
                raise ReadTimeout(f"no stream response within {timeout:g} s", model_name=self.model_name) from None
            self.cancel()
            self._finished = True
            raise ReadTimeout(
                f"the stream's {self._timeout:g} s deadline ran out", model_name=self.model_name
            ) from None
        if item is _END:
            self._finished = True
            return None
        if isinstance(item, _GRPC.RpcError):
            self._finished = True
            if self._cancelled and item.code() == _GRPC.StatusCode.CANCELLED:
                return None
            raise map_rpc_error(item, model_name=self.model_name) from item
        if isinstance(item, BaseException):
            self._finished = True
            raise TransportError(f"the stream failed: {item!r}", model_name=self.model_name) from item
        return _codec().decode_stream_response(item, model_name=self.model_name)  # type: ignore[no-any-return]

    def __iter__(self) -> InferStream:
        return self

    def __next__(self) -> InferResponse:
        response = self.recv()
        if response is None:
            raise StopIteration
        return response

    def results(self) -> Iterator[InferResponse | InferkitError]:
        """Iterate without raising for failed requests: each item is a response or the typed error."""
        while True:
            try:
                response = self.recv()
            except ServerError as err:
                yield err
                continue
            if response is None:
                return
            yield response

    def close(self) -> None:
        """Stop sending and, if responses are still pending, cancel the call."""
        self.close_send()
        if not self._finished:
            self._cancelled = True
            self._call.cancel()
        self._reader.join(timeout=5)

    def __enter__(self) -> InferStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
