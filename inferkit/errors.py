"""The whole exception tree of inferkit, and the mapping from HTTP status / gRPC code to a class.

Every error raised by inferkit to a caller is an :class:`InferkitError`. Transports catch their library's
exceptions (requests, urllib3, aiohttp, grpc) at one boundary and re-raise one of these with ``raise ... from exc``.
This module imports nothing but the standard library: gRPC codes are handled by *name* (``"NOT_FOUND"``), so it
never needs ``grpc``.

::

    InferkitError
    ├── EncodeError (ValueError)             bad input found locally, before any I/O
    ├── DecodeError (ValueError)             the server sent something malformed or inconsistent
    │   └── ResponseTooLargeError            a body exceeded RESTConfig.max_response_size
    ├── TransportError                       the request did not get a server answer
    │   ├── ConnectError (ConnectionError)   refused, DNS failure, TLS handshake, reset, dropped mid-response
    │   │   └── TLSError                     certificate verification or handshake failure
    │   └── InferTimeoutError (TimeoutError)
    │       ├── ConnectTimeout               also gRPC DEADLINE_EXCEEDED while the channel was still connecting
    │       ├── ReadTimeout                  also gRPC DEADLINE_EXCEEDED raised by the client's own deadline
    │       ├── WriteTimeout
    │       ├── PoolTimeout                  no pooled connection became free in time (pool exhausted)
    │       └── DeadlineExceeded             the overall deadline across retries ran out
    ├── ServerError                          the server answered with an error status or code
    │   ├── InvalidInputError                400  INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION
    │   │   └── UnprocessableEntityError     422  (MLServer / FastAPI validation)
    │   ├── UnauthenticatedError             401  UNAUTHENTICATED
    │   ├── PermissionDeniedError            403  PERMISSION_DENIED
    │   ├── NotFoundError                    404  NOT_FOUND
    │   ├── ConflictError                    409  ALREADY_EXISTS, ABORTED
    │   ├── PayloadTooLargeError             413
    │   ├── RateLimitedError                 429  RESOURCE_EXHAUSTED
    │   ├── InternalServerError              500  INTERNAL, UNKNOWN, DATA_LOSS
    │   ├── UnimplementedError               501  UNIMPLEMENTED
    │   ├── BadGatewayError                  502
    │   ├── ServiceUnavailableError          503  UNAVAILABLE
    │   ├── GatewayTimeoutError (TimeoutError) 504
    │   └── CancelledError                   499  CANCELLED
    └── UnsupportedOperationError            a call the protocol or server in use does not offer

    ItemError                                not an exception: infer_many(return_exceptions=True) yields it in
                                             place of a failed request; .exception holds what the client raised

:class:`ItemError` is a result marker, outside the tree and outside ``__all__`` (whose classes are all
:class:`InferkitError`): it cannot be raised by mistake while iterating, and it is falsy, so ``if not result:``
finds the failures. It lives here, beside the exceptions it carries, so that ``import inferkit`` need not import
the batching package.

A status that has no class of its own maps to the nearest family: any other 4xx to :class:`ClientRequestError`
(a :class:`ServerError`), any other 5xx to :class:`ServerError` itself.
Must not import: anything but the standard library.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

__all__ = [
    "InferkitError",
    "EncodeError",
    "DecodeError",
    "ResponseTooLargeError",
    "TransportError",
    "ConnectError",
    "TLSError",
    "InferTimeoutError",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "DeadlineExceeded",
    "ServerError",
    "ClientRequestError",
    "InvalidInputError",
    "UnprocessableEntityError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "InternalServerError",
    "UnimplementedError",
    "BadGatewayError",
    "ServiceUnavailableError",
    "GatewayTimeoutError",
    "CancelledError",
    "UnsupportedOperationError",
    "error_for_http_status",
    "error_for_grpc_code",
    "http_status_for_grpc_code",
]


class InferkitError(Exception):
    """Root of every error inferkit raises.

    Attributes:
        message: Human-readable explanation (also ``str(err)``, with context appended).
        model_name: The model the call was about, when known.
        request_id: The inference request id, when known.
        status_code: HTTP status (REST) or the HTTP status equivalent of a gRPC code; None for local errors.
        grpc_code: gRPC status code name (e.g. ``"NOT_FOUND"``), or None.
        attempts: How many attempts the transport made before giving up (1 when not retried).
    """

    def __init__(
        self,
        message: str,
        *,
        model_name: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
        grpc_code: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model_name = model_name
        self.request_id = request_id
        self.status_code = status_code
        self.grpc_code = grpc_code
        self.attempts = attempts

    def __str__(self) -> str:
        context = []
        if self.model_name:
            context.append(f"model={self.model_name!r}")
        if self.request_id:
            context.append(f"request_id={self.request_id!r}")
        if self.status_code is not None:
            context.append(f"status={self.status_code}")
        if self.grpc_code is not None:
            context.append(f"grpc_code={self.grpc_code}")
        if self.attempts > 1:
            context.append(f"attempts={self.attempts}")
        return f"{self.message} ({', '.join(context)})" if context else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields must survive pickling (multiprocessing pools send errors across processes).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[InferkitError], message: str, state: dict[str, Any]) -> InferkitError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class EncodeError(InferkitError, ValueError):
    """The request could not be built from the given input; nothing was sent."""


class DecodeError(InferkitError, ValueError):
    """The server's reply is malformed or inconsistent (sizes, shapes, datatypes, JSON)."""


class ResponseTooLargeError(DecodeError):
    """The reply body is larger than the configured ``max_response_size``; reading stopped at the limit."""


class TransportError(InferkitError):
    """The request did not get an answer from the server."""


class ConnectError(TransportError, ConnectionError):
    """Connecting failed or the connection broke (refused, reset, DNS, dropped before the reply was complete)."""


class TLSError(ConnectError):
    """TLS failed: the server's certificate was not trusted, or the handshake was rejected (mTLS)."""


class InferTimeoutError(TransportError, TimeoutError):
    """A timeout expired. ``except TimeoutError`` catches it."""


class ConnectTimeout(InferTimeoutError):
    """The connection was not established within the connect timeout."""


class ReadTimeout(InferTimeoutError):
    """The server did not answer within the read timeout (or the gRPC deadline)."""


class WriteTimeout(InferTimeoutError):
    """Sending the request body took longer than the write timeout."""


class PoolTimeout(InferTimeoutError):
    """Every pooled connection stayed busy for the pool timeout: raise the pool size or lower the concurrency."""


class DeadlineExceeded(InferTimeoutError):
    """The overall deadline across all retry attempts ran out."""


class ServerError(InferkitError):
    """The server answered with an error. Subclasses say what kind.

    Class attributes ``http_status`` and ``grpc_codes`` register a class for both transports.
    """

    http_status: ClassVar[int | None] = None
    grpc_codes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        #: Seconds the server asked the client to wait (``Retry-After``), when given.
        self.retry_after = retry_after


class ClientRequestError(ServerError):
    """The server rejected the request (a 4xx status without a more specific class)."""


class InvalidInputError(ClientRequestError):
    """The request is invalid for the model: wrong tensor name, shape, datatype or parameters."""

    http_status = 400
    grpc_codes = ("INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION")


class UnprocessableEntityError(InvalidInputError):
    """The request body failed validation (HTTP 422, as MLServer answers)."""

    http_status = 422


class UnauthenticatedError(ClientRequestError):
    """Credentials are missing or wrong: set ``RESTConfig(auth=...)`` or the gRPC metadata."""

    http_status = 401
    grpc_codes = ("UNAUTHENTICATED",)


class PermissionDeniedError(ClientRequestError):
    """The credentials are valid but do not allow this call."""

    http_status = 403
    grpc_codes = ("PERMISSION_DENIED",)


class NotFoundError(ClientRequestError):
    """The model, version or route does not exist on this server."""

    http_status = 404
    grpc_codes = ("NOT_FOUND",)


class ConflictError(ClientRequestError):
    """The request conflicts with the server's state (e.g. a model already loading)."""

    http_status = 409
    grpc_codes = ("ALREADY_EXISTS", "ABORTED")


class PayloadTooLargeError(ClientRequestError):
    """The request body is larger than the server accepts."""

    http_status = 413


class RateLimitedError(ClientRequestError):
    """The server is rate limiting: retried per the RetryPolicy, honouring ``retry_after``."""

    http_status = 429
    grpc_codes = ("RESOURCE_EXHAUSTED",)


class CancelledError(ClientRequestError):
    """The call was cancelled."""

    http_status = 499
    grpc_codes = ("CANCELLED",)


class InternalServerError(ServerError):
    """The server failed while handling the request (HTTP 500)."""

    http_status = 500
    grpc_codes = ("INTERNAL", "UNKNOWN", "DATA_LOSS")


class UnimplementedError(ServerError):
    """The server does not implement this call or extension."""

    http_status = 501
    grpc_codes = ("UNIMPLEMENTED",)


class BadGatewayError(ServerError):
    """A proxy in front of the model server got a bad answer (HTTP 502)."""

    http_status = 502


class ServiceUnavailableError(ServerError):
    """The server (or model) is not ready or overloaded: retried per the RetryPolicy."""

    http_status = 503
    grpc_codes = ("UNAVAILABLE",)


class GatewayTimeoutError(ServerError, TimeoutError):
    """A proxy in front of the model server timed out (HTTP 504)."""

    http_status = 504


class UnsupportedOperationError(InferkitError):
    """The call is not offered by the protocol in use (e.g. model config on a KServe v1 client)."""


# -- result marker (not an exception) --------------------------------------------------------------------------
class ItemError:
    """The record of one failed request, yielded in its place when ``return_exceptions=True``.

    It is not an exception (so it cannot be raised by mistake while iterating); ``raise item.exception`` re-raises
    what the client raised.

    Attributes:
        index: The request's position in the input iterable (0-based).
        exception: What the client raised for it (after its own retries).
        request: The request itself, so it can be sent again.
    """

    __slots__ = ("index", "exception", "request")

    def __init__(self, index: int, exception: BaseException, request: Any = None) -> None:
        self.index = index
        self.exception = exception
        self.request = request

    def __bool__(self) -> bool:
        # ``if result:`` reads as "did it work"; responses are always truthy.
        return False

    def __repr__(self) -> str:
        return f"ItemError(index={self.index}, exception={self.exception!r})"


def _registry() -> tuple[dict[int, type[ServerError]], dict[str, type[ServerError]]]:
    by_status: dict[int, type[ServerError]] = {}
    by_code: dict[str, type[ServerError]] = {}
    stack: list[type[ServerError]] = [ServerError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.http_status is not None and "http_status" in cls.__dict__:
            by_status[cls.http_status] = cls
        for code in cls.__dict__.get("grpc_codes", ()):
            by_code[code] = cls
    return by_status, by_code


_BY_STATUS, _BY_GRPC_CODE = _registry()

# DEADLINE_EXCEEDED is the client's own deadline in gRPC: a timeout, not a server error class.
_GRPC_TIMEOUT_CODES = ("DEADLINE_EXCEEDED",)


def error_for_http_status(
    status: int, message: str, *, retry_after: float | None = None, **context: Any
) -> ServerError:
    """Build the error for an HTTP error status.

    Args:
        status: The HTTP status code (>= 400).
        message: The server's error text (already extracted from the body).
        retry_after: Seconds from a ``Retry-After`` header, if any.
        **context: ``model_name``, ``request_id``, ``attempts``.
    """
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ClientRequestError if 400 <= status < 500 else ServerError
    return cls(message, status_code=status, retry_after=retry_after, **context)


def error_for_grpc_code(code: str, message: str, **context: Any) -> InferkitError:
    """Build the error for a gRPC status code given by name (``"NOT_FOUND"``, ``"UNAVAILABLE"``...)."""
    if code in _GRPC_TIMEOUT_CODES:
        return ReadTimeout(message, grpc_code=code, status_code=504, **context)
    cls = _BY_GRPC_CODE.get(code, ServerError)
    status = cls.http_status if cls.http_status is not None else 500
    return cls(message, status_code=status, grpc_code=code, **context)


def http_status_for_grpc_code(code: str) -> int:
    """The HTTP status the same failure has on REST (used by the reference server and error tables)."""
    if code in _GRPC_TIMEOUT_CODES:
        return 504
    cls = _BY_GRPC_CODE.get(code)
    return cls.http_status if cls is not None and cls.http_status is not None else 500


def grpc_code_for_http_status(status: int) -> str:
    """The gRPC code name the same failure has over gRPC (first registered code of the class)."""
    cls = _BY_STATUS.get(status)
    if cls is not None and cls.grpc_codes:
        return cls.grpc_codes[0]
    if cls is not None and issubclass(cls, InvalidInputError):
        return "INVALID_ARGUMENT"
    if status == 504:
        return "DEADLINE_EXCEEDED"
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"


def registered_http_statuses() -> Mapping[int, type[ServerError]]:
    """Read-only view of status -> class (for docs and tests)."""
    return dict(_BY_STATUS)


def registered_grpc_codes() -> Mapping[str, type[ServerError]]:
    """Read-only view of gRPC code name -> class (for docs and tests)."""
    return dict(_BY_GRPC_CODE)


def argument_type_error(call: str, expected: str, value: Any, usage: str) -> TypeError:
    """The error of a public method called with an argument of the wrong type, saying what to write instead.

    A programming error found before any I/O, so a builtin :class:`TypeError` (as any Python API raises), not an
    :class:`InferkitError`. ``call`` is the method (``"infer()"``), ``expected`` what it takes, ``usage`` the call
    to write. An InferRequest given where a model name is expected is named with its model, since that is the
    usual confusion.
    """
    if hasattr(value, "model_name") and hasattr(value, "inputs"):
        model_name = getattr(value, "model_name", None)
        got = f"an {type(value).__name__} (model_name={model_name!r})"
        if isinstance(model_name, str):
            usage = usage.replace("'my_model'", repr(model_name))
    elif isinstance(value, str):
        got = f"the string {value[:80]!r}"
    else:
        got = f"a {type(value).__name__}"
    return TypeError(f"{call} takes {expected}, got {got}: write {usage}")


def infer_argument_error(request: Any) -> TypeError:
    """The error of ``infer()`` called without an InferRequest; a str first is tritonclient's
    ``infer(model_name, inputs)`` habit, shown in inferkit's form."""
    if isinstance(request, str):
        return argument_type_error(
            "infer()",
            "one InferRequest, not a model name and inputs as tritonclient's infer() does",
            request,
            f"client.infer(InferRequest({request[:80]!r}, [x, ...])) with InferInput objects as inputs",
        )
    return argument_type_error(
        "infer()",
        "one InferRequest",
        request,
        "client.infer(InferRequest(model_name, [x, ...])) with InferInput inputs",
    )


def client_closed_error(target: str) -> ConnectError:
    """The error of a call on a client after ``close()``: the same class on REST and gRPC, sync and aio.

    A :class:`ConnectError` (no connection can be made; a :class:`TransportError`, so ``except TransportError`` and
    ``except ConnectionError`` both catch it). It is never retried: nothing is sent.
    """
    return ConnectError(
        f"the client for {target} is closed; create a new client (a closed client cannot be reopened: use "
        "`with client:` / `async with client:` around the code that uses it, or close it only when done)"
    )
