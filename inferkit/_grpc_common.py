"""What the sync and async gRPC clients share: settings, stubs, the retry loop and stream replies.

Owns: constructor validation and channel material (:class:`GRPCSettings`: target, TLS credentials from PEM bytes or
paths, channel options merged over :data:`DEFAULT_CHANNEL_OPTIONS` and the named keepalive settings
(:func:`keepalive_options`), metadata, auth, compression, retry policy, default deadline), the retry loop of one
call as a sans-IO generator (:func:`grpc_exchange`; the calls themselves are described by the codec,
:class:`~inferkit.codec.grpc_calls.GRPCCall` built by :class:`~inferkit.codec.grpc_calls.GRPCCalls`; errors are
mapped by :mod:`inferkit._grpc_errors`), the handling of stream replies, and the verbose log line. ``grpc`` itself
is imported lazily (:func:`load_grpc`).
Must not import: requests, urllib3, aiohttp, inferkit.rest_client, inferkit._transport, inferkit.grpc_client,
inferkit.aio; nor grpc / protobuf at module level.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Callable, Generator, Iterable, Mapping, NamedTuple, Sequence, Union

from inferkit._grpc_errors import map_rpc_error
from inferkit._grpc_generate import GenerateSpecs
from inferkit._retry import RetryState
from inferkit._trace_context import with_trace
from inferkit._version import __version__
from inferkit.codec.grpc_calls import GRPCCall, GRPCCalls, grpc_codec
from inferkit.codec.tensors import InferRequest
from inferkit.config import SENSITIVE_HEADERS, APIKey, BasicAuth, BearerToken, RetryPolicy
from inferkit.errors import (
    DeadlineExceeded,
    EncodeError,
    PermissionDeniedError,
    ReadTimeout,
    ServerError,
    TransportError,
    UnauthenticatedError,
)

__all__ = [
    "UNSET",
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_CHANNELS",
    "GRPCSettings",
    "GRPCClientBase",
    "call_logger",
    "StreamState",
    "grpc_exchange",
    "map_rpc_error",
    "load_grpc",
    "codec",
    "stream_reply",
]

logger = logging.getLogger("inferkit")

INSTALL_HINT = "the gRPC client needs grpcio and protobuf: pip install 'inferkit[grpc]'"

#: Default ``keepalive_time`` (s): a ping after this long without data on a connection with calls in flight. Above
#: the 5 min that default gRPC servers accept between pings without data
#: (``grpc.http2.min_ping_interval_without_data_ms``; a faster client is sent GOAWAY "too_many_pings"), and below
#: the 350 s idle timeout of common cloud load balancers.
DEFAULT_KEEPALIVE_TIME = 330.0
#: Default ``keepalive_timeout`` (s): an unanswered ping this long marks the connection dead (gRPC's own default).
DEFAULT_KEEPALIVE_TIMEOUT = 20.0
#: Default ``idle_timeout`` (s): a channel without calls this long goes IDLE and closes its connection (gRPC's own
#: default, 30 min); the next call reconnects.
DEFAULT_IDLE_TIMEOUT = 1800.0
#: Channels (HTTP/2 connections) of one gRPC client; calls take them in turn (see docs/performance.md).
DEFAULT_CHANNELS = 1
#: What a disabled timer is set to (gRPC's "infinite": INT_MAX milliseconds).
_GRPC_INFINITE_MS = 2**31 - 1

#: Channel options inferkit sets; ``channel_args`` given by the user are merged over these, key by key.
DEFAULT_CHANNEL_OPTIONS: Mapping[str, Any] = {
    # gRPC's 4 MiB receive limit fails any real tensor; the server enforces its own limit anyway.
    "grpc.max_send_message_length": -1,
    "grpc.max_receive_message_length": -1,
    # Keepalive finds dead connections (a load balancer that dropped the flow, a peer that vanished) while calls
    # are in flight (the constructor's keepalive_time / keepalive_timeout / idle_timeout set these three).
    "grpc.keepalive_time_ms": int(DEFAULT_KEEPALIVE_TIME * 1000),
    "grpc.keepalive_timeout_ms": int(DEFAULT_KEEPALIVE_TIMEOUT * 1000),
    # grpc-core waits this long for a ping's ack (1 min by default once keepalive is on) whatever
    # keepalive_timeout_ms says: measured on grpcio 1.85, only this one ends a connection whose peer vanished.
    "grpc.http2.ping_timeout_ms": int(DEFAULT_KEEPALIVE_TIMEOUT * 1000),
    "grpc.client_idle_timeout_ms": int(DEFAULT_IDLE_TIMEOUT * 1000),
    # No pings on a connection without calls: servers refuse those by default (GOAWAY), and the next call finds a
    # dead idle connection anyway.
    "grpc.keepalive_permit_without_calls": 0,
    # Unlimited pings while a call waits for its reply without any data: gRPC's default (2) stops pinging after
    # two pings, so a peer that vanished during a long inference was found only by the call's deadline.
    "grpc.http2.max_pings_without_data": 0,
    # A restarted server (a rolling update) is found again within seconds, not gRPC's default of up to 2 min.
    "grpc.max_reconnect_backoff_ms": 10_000,
    # Transparent retries only (no retry policy): the clients retry under RetryPolicy themselves.
    "grpc.enable_retries": 1,
    "grpc.primary_user_agent": f"inferkit/{__version__}",
}


def keepalive_options(
    keepalive_time: float | None, keepalive_timeout: float | None, idle_timeout: float | None
) -> dict[str, int]:
    """The channel options of the named keepalive settings, validated (positive seconds, or None).

    None turns pings off (``keepalive_time``), keeps gRPC's own ping timeouts (``keepalive_timeout``: up to 1 min)
    or never lets the channel go idle (``idle_timeout``). ``keepalive_timeout`` sets both of grpc-core's ping
    timeouts, ``grpc.keepalive_timeout_ms`` and ``grpc.http2.ping_timeout_ms``: the second is the one that ends
    the connection when a keepalive ping goes unanswered.
    """
    ms: dict[str, float | None] = {}
    for name, value in (
        ("keepalive_time", keepalive_time),
        ("keepalive_timeout", keepalive_timeout),
        ("idle_timeout", idle_timeout),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf")
        ):
            raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
        ms[name] = None if value is None else min(max(1, round(value * 1000)), _GRPC_INFINITE_MS)
    options = {
        "grpc.keepalive_time_ms": int(ms["keepalive_time"] or _GRPC_INFINITE_MS),
        "grpc.client_idle_timeout_ms": int(ms["idle_timeout"] or _GRPC_INFINITE_MS),
    }
    if ms["keepalive_timeout"] is not None:
        options["grpc.keepalive_timeout_ms"] = options["grpc.http2.ping_timeout_ms"] = int(ms["keepalive_timeout"])
    return options


Headers = Union[Mapping[str, str], Sequence[tuple[str, str]], None]

#: Default of ``stream(timeout=...)``: "the client's timeout" (None there means "no deadline").
UNSET: Any = object()

_GRPC: Any = None


def load_grpc() -> Any:
    """Import grpc (and the protobuf codec) on first use; ImportError naming the extra when missing."""
    global _GRPC
    if _GRPC is None:
        try:
            import grpc  # noqa: PLC0415 - optional dependency

            codec()
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        _GRPC = grpc
    return _GRPC


def codec() -> Any:
    """The protobuf side of the codec, :func:`inferkit.codec.grpc_calls.grpc_codec` (protobuf is in the grpc extra)."""
    return grpc_codec()


# -- settings ---------------------------------------------------------------------------------------------------------


def read_pem(value: str | bytes | None, what: str) -> bytes | None:
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


def parse_target(url: str, use_ssl: bool) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS, from ``host:port`` or ``grpc[s]://host:port``."""
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


def normalize_metadata(headers: Headers, where: str = "headers") -> tuple[tuple[str, str], ...]:
    """Metadata as a tuple of (lower-case key, value) pairs; EncodeError for anything else."""
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


def redact(metadata: Iterable[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """Metadata for logging, with credentials replaced by ``***``."""
    return [(k, "***" if k in SENSITIVE_HEADERS else v) for k, v in metadata or ()]


class GRPCSettings:
    """The validated constructor arguments of a gRPC client (sync or async); see ``InferenceGRPCClient``."""

    def __init__(
        self,
        url: str,
        verbose: bool,
        use_ssl: bool,
        root_certificates: str | bytes | None,
        private_key: str | bytes | None,
        certificate_chain: str | bytes | None,
        creds: Any,
        channel_args: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
        timeout: float | None,
        retries: int,
        retry: RetryPolicy | None,
        metadata: Headers,
        auth: BearerToken | APIKey | BasicAuth | None,
        compression: str | None,
        max_message_size: int | None,
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        propagate_trace: bool = True,
        channels: int = 1,
    ) -> None:
        grpc = load_grpc()
        self.propagate_trace = bool(propagate_trace)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be an integer >= 1, got {channels!r}")
        self.channels = channels
        self.target, tls = parse_target(url, use_ssl)
        self.verbose = bool(verbose)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.timeout = None if timeout is None else float(timeout)
        if retry is None:
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
            retry = RetryPolicy(max_retries=retries)
        elif not isinstance(retry, RetryPolicy):
            raise ValueError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self.retry = retry
        base = normalize_metadata(metadata, "metadata")
        if auth is not None:
            if not isinstance(auth, (BearerToken, APIKey, BasicAuth)):
                raise ValueError("auth must be a BearerToken, APIKey or BasicAuth")
            base += normalize_metadata(auth.headers(), "auth")
        self.metadata = base
        #: What the stubs get when a call adds no headers: None rather than () (grpc.aio wraps any tuple given,
        #: even an empty one, in a Metadata object per call).
        self.wire_metadata = base or None
        if compression not in (None, "gzip", "deflate"):
            raise ValueError(f"compression must be None, 'gzip' or 'deflate', got {compression!r}")
        self.compression = {None: None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}[compression]
        options = dict(DEFAULT_CHANNEL_OPTIONS)
        if keepalive_timeout is None:
            del options["grpc.keepalive_timeout_ms"], options["grpc.http2.ping_timeout_ms"]
        options.update(keepalive_options(keepalive_time, keepalive_timeout, idle_timeout))
        if max_message_size is not None:
            if isinstance(max_message_size, bool) or not isinstance(max_message_size, int) or max_message_size < 1:
                raise ValueError(f"max_message_size must be a positive integer, got {max_message_size!r}")
            options["grpc.max_send_message_length"] = max_message_size
            options["grpc.max_receive_message_length"] = max_message_size
        if channel_args:
            items = channel_args.items() if isinstance(channel_args, Mapping) else channel_args
            for key, value in items:
                options[key] = value
        self.options = tuple(options.items())
        #: TLS credentials built here without a client certificate (with ``creds`` given, inferkit cannot tell).
        self.tls_without_client_cert = False
        if creds is None and (tls or root_certificates or private_key or certificate_chain):
            self.tls_without_client_cert = certificate_chain is None
            creds = grpc.ssl_channel_credentials(
                root_certificates=read_pem(root_certificates, "root_certificates"),
                private_key=read_pem(private_key, "private_key"),
                certificate_chain=read_pem(certificate_chain, "certificate_chain"),
            )
        self.creds = creds

    def channel(self, grpc_module: Any) -> Any:
        """A channel from ``grpc`` or ``grpc.aio`` (both have insecure_channel / secure_channel). When the client
        has several (:attr:`channels`), each has its own subchannel pool, hence its own connection (channels with
        equal options otherwise share one)."""
        options = self.options if self.channels == 1 else (*self.options, ("grpc.use_local_subchannel_pool", 1))
        if self.creds is not None:
            return grpc_module.secure_channel(self.target, self.creds, options=options, compression=self.compression)
        return grpc_module.insecure_channel(self.target, options=options, compression=self.compression)

    def call_metadata(self, headers: Headers) -> tuple[tuple[str, str], ...]:
        return self.metadata + normalize_metadata(headers) if headers else self.metadata

    def metadata_for(self, headers: Headers) -> Any:
        """What one call sends: the client's metadata, the call's ``headers`` and the current trace context."""
        if self.propagate_trace:
            headers = with_trace(headers)
        return self.metadata + normalize_metadata(headers) if headers else self.wire_metadata

    def deadline(self, timeout: float | None) -> float | None:
        """The call's deadline across retries: the per-call timeout (or the client's), capped by the policy's."""
        t = self.timeout if timeout is None else timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {t!r}")
        if self.retry.deadline is not None:
            t = self.retry.deadline if t is None else min(t, self.retry.deadline)
        return t

    def stream_deadline(self, timeout: float | None) -> float | None:
        """A stream's deadline: the client's timeout for :data:`UNSET`, none for None, else as :meth:`deadline`."""
        if timeout is UNSET:
            return self.timeout
        return None if timeout is None else self.deadline(timeout)


def make_stubs(channel: Any) -> dict[str, Any]:
    """One callable per RPC; ModelInfer and ModelStreamInfer send and receive bytes (the codec frames them)."""
    from inferkit.codec.grpc_methods import GRPC_METHODS  # noqa: PLC0415 - imports protobuf

    # Registered methods (grpcio >= 1.63) have their path interned once per channel instead of once per call.
    extra = {"_registered_method": True} if _accepts_registered_method(channel) else {}
    stubs: dict[str, Any] = {}
    for name, method in GRPC_METHODS.items():
        if name in ("ModelInfer", "ModelStreamInfer"):
            factory = channel.stream_stream if method.is_stream else channel.unary_unary
            stubs[name] = factory(method.path, request_serializer=None, response_deserializer=None, **extra)
            if name == "ModelInfer":
                # The same unary RPC on the wire, sent from a request iterator: gRPC then sends the message in its own
                # batch and drops it once written, instead of holding it until the reply.
                stubs["ModelInfer/large"] = channel.stream_unary(
                    method.path, request_serializer=None, response_deserializer=None, **extra
                )
        else:
            stubs[name] = channel.unary_unary(
                method.path,
                request_serializer=method.request_type.SerializeToString,
                response_deserializer=method.response_type.FromString,
                **extra,
            )
    return stubs


def _accepts_registered_method(channel: Any) -> bool:
    try:
        return "_registered_method" in inspect.signature(channel.unary_unary).parameters
    except (TypeError, ValueError):  # a channel-like object without an introspectable signature
        return False


# -- the call loop ----------------------------------------------------------------------------------------------------


class Attempt(NamedTuple):
    """Send once with this deadline (seconds, None: none); send back ``(True, reply)`` or ``(False, rpc_error)``."""

    timeout: float | None


def grpc_exchange(
    run: Any,
    first: tuple[bool, Any],
    settings: GRPCSettings,
    *,
    clock: Callable[[], float],
    channel_state: Callable[[], str | None] | None = None,
) -> Generator[Attempt | float, Any, Any]:
    """The retry loop of one RPC after its first attempt, as a generator the driver runs (sync or async).

    ``run`` is the RPC a transport prepared: its ``call`` (a :class:`GRPCCall`), ``total`` deadline across
    attempts, ``metadata`` and ``start`` (the ``clock()`` value when the first attempt started, from which the
    deadline counts); ``first`` is that attempt's outcome, ``(True, reply)`` or ``(False, rpc_error)``. The
    generator yields an :class:`Attempt` (the driver calls the stub with that timeout and sends back the outcome)
    or a float (the driver sleeps that long and sends back None). It returns the parsed result, or raises the
    mapped error (``from`` the RpcError). Probes return False for a server error other than an authentication
    failure. ``channel_state`` is the transport's view of its channel's connectivity (see :func:`map_rpc_error`):
    it tells a deadline that ran out while connecting (ConnectTimeout) from one that ran out waiting for the reply.
    """
    call, total, policy = run.call, run.total, settings.retry
    log = call_logger(settings.target, call, run.metadata) if settings.verbose else None
    tls_without_client_cert = settings.tls_without_client_cert
    state = RetryState(policy, retryable=call.retryable, retry_statuses=call.retry_server_codes, clock=clock)
    state.start = run.start
    state.attempt = 1
    ctx: dict[str, Any] = {"model_name": call.model_name, "request_id": call.request_id}
    ok, value = first
    while True:
        if ok:
            if log is not None:
                log("OK", state.attempt, state.start)
            return call.parse(value)
        err = map_rpc_error(
            value,
            attempts=state.attempt,
            tls_without_client_cert=tls_without_client_cert,
            channel_state=channel_state,
            **ctx,
        )
        if log is not None:
            log(err.grpc_code or type(err).__name__, state.attempt, state.start)
        wait = state.on_error(err, total)
        if wait is None:
            if (
                call.probe
                and isinstance(err, ServerError)
                and not isinstance(err, (UnauthenticatedError, PermissionDeniedError))
            ):
                return False
            raise state.final_error(err, call.rpc, total) from value
        logger.debug("retrying %s (attempt %d failed with %s) in %.3f s", call.rpc, state.attempt, err.grpc_code, wait)
        del value, err
        yield wait
        state.attempt += 1
        remaining = None if total is None else total - state.elapsed()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(
                f"{call.rpc}: the {total:g} s deadline ran out before attempt {state.attempt}",
                attempts=state.attempt - 1,
                **ctx,
            )
        ok, value = yield Attempt(remaining)


def log_line(target: str, rpc: str, model: str | None, status: str, ms: float, attempts: int, md: Any) -> str:
    """The verbose log line of one RPC (credentials in metadata redacted)."""
    where = f" model={model!r}" if model else ""
    return f"gRPC {target} {rpc}{where} -> {status} in {ms:.1f} ms (attempt {attempts}) metadata={redact(md)}"


def call_logger(target: str, call: GRPCCall, metadata: Any) -> Callable[[str, int, float], None]:
    """The ``log`` callback of :func:`grpc_exchange` for verbose clients: one INFO line per attempt."""

    def log(status: str, attempts: int, start: float) -> None:
        ms = (time.monotonic() - start) * 1000
        logger.info("%s", log_line(target, call.rpc, call.model_name, status, ms, attempts, metadata))

    return log


# -- the client base --------------------------------------------------------------------------------------------------


class GRPCClientBase:
    """The constructor and properties of both gRPC clients (sync and async); subclasses provide :meth:`_open`,
    which makes the transport their calls run through."""

    _repr_prefix = ""

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
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        propagate_trace: bool = True,
        channels: int = DEFAULT_CHANNELS,
    ) -> None:
        self._s = GRPCSettings(
            url,
            verbose,
            use_ssl,
            root_certificates,
            private_key,
            certificate_chain,
            creds,
            channel_args,
            timeout,
            retries,
            retry,
            metadata,
            auth,
            compression,
            max_message_size,
            keepalive_time,
            keepalive_timeout,
            idle_timeout,
            propagate_trace,
            channels,
        )
        self._grpc = load_grpc()
        self._calls = GRPCCalls(self._s.retry)
        self._generate_specs = GenerateSpecs()  # generate's per-model metadata, fetched once
        self._transport = self._open()

    def _open(self) -> Any:
        """The client's transport (sync: :class:`inferkit._transport.grpc.GRPCTransport`, aio:
        :class:`inferkit.aio._grpc.AsyncGRPCTransport`); called last in the constructor."""
        raise NotImplementedError

    def _stream_args(self, timeout: float | None, headers: Headers) -> tuple[Any, float | None, Any]:
        """The ``ModelStreamInfer`` stub, the stream's deadline and its metadata."""
        stub = self._transport.stub("ModelStreamInfer")
        return stub, self._s.stream_deadline(timeout), self._s.metadata_for(headers)

    @property
    def host(self) -> str:
        """The target, ``host:port``."""
        return self._s.target

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with every call (lower-case keys)."""
        return self._s.metadata

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in effect."""
        return self._s.retry

    def __repr__(self) -> str:
        return f"{self._repr_prefix}InferenceGRPCClient({self._s.target!r})"


# -- streams --------------------------------------------------------------------------------------------------------


class StreamState:
    """What a sync and an async ``ModelStreamInfer`` stream both track: models sent to, and their end state."""

    def __init__(self, timeout: float | None, tls_without_client_cert: bool = False) -> None:
        self._timeout = timeout
        self._tls_without_client_cert = tls_without_client_cert
        self._models: list[str] = []
        self._send_closed = False
        self._finished = False
        self._cancelled = False

    @property
    def model_name(self) -> str | None:
        """The model of the requests sent, when they all went to one model."""
        return self._models[0] if len(set(self._models)) == 1 else None

    def _wire(self, request: InferRequest) -> bytes:
        """The serialized request to send; TransportError once sending is closed."""
        if self._send_closed:
            raise TransportError("the stream is closed for sending (close_send() or cancel() was called)")
        wire: bytes = codec().serialize_infer_request(request)
        self._models.append(request.model_name)
        return wire

    _rpc_error: Any  # the grpc module's RpcError class, set by the sync or aio stream

    def _reply(self, item: Any) -> Any:
        """:func:`stream_reply` with this stream's state."""
        return stream_reply(item, self.model_name, self._cancelled, self._rpc_error, self._tls_without_client_cert)

    def _timed_out(self, timeout: float | None) -> ReadTimeout:
        return ReadTimeout(f"no stream response within {timeout:g} s", model_name=self.model_name)


def stream_reply(
    item: Any, model_name: str | None, cancelled: bool, rpc_error: Any, tls_without_client_cert: bool = False
) -> Any:
    """Interpret one item taken from a stream: a response, None (the stream ended), or a raised typed error.

    ``item`` is a reply message (bytes), an ``rpc_error`` instance (the call failed; CANCELLED after our own
    cancel is a normal end), or another exception (surfaced as a TransportError).
    """
    if isinstance(item, rpc_error):
        if cancelled and getattr(item.code(), "name", "") == "CANCELLED":
            return None
        raise map_rpc_error(item, model_name=model_name, tls_without_client_cert=tls_without_client_cert) from item
    if isinstance(item, BaseException):
        raise TransportError(f"the stream failed: {item!r}", model_name=model_name) from item
    return codec().decode_stream_response(item, model_name=model_name)
