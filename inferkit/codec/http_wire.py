"""HTTP framing shared by the sync and async REST transports: headers, compression, bodies read under a limit.

Owns: which headers every request carries (user agent, auth, configured headers, ``Accept-Encoding``) and how
per-call headers override them, header validation, request body compression, response decompression that
stops at ``max_response_size`` (a pure object fed with chunks), and the verbose log line with credentials
redacted. Everything here is bytes and strings in, bytes and strings out: no sockets, clocks or sleeps.
Must not import: requests, urllib3, aiohttp, grpc.
"""

from __future__ import annotations

import re
import zlib
from typing import Iterable, Mapping, NamedTuple, Sequence
from urllib.parse import quote, unquote, urlsplit

from inferkit import errors
from inferkit._version import __version__
from inferkit.config import SENSITIVE_HEADERS, BasicAuth, RESTConfig

__all__ = [
    "USER_AGENT",
    "ERROR_BODY_LIMIT",
    "READ_CHUNK",
    "BodyTooLarge",
    "BodyReader",
    "BODY_FIRST_ALLOC",
    "body_buffer_size",
    "check_header",
    "config_headers",
    "call_headers",
    "compress_body",
    "redact",
    "log_line",
    "BaseURL",
    "parse_base_url",
    "tls_without_client_cert",
]

USER_AGENT = f"inferkit/{__version__}"
READ_CHUNK = 1 << 16
ERROR_BODY_LIMIT = 1 << 20  # error bodies are read up to 1 MiB; the rest is dropped with the connection

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_BAD = re.compile(r"[\r\n\x00]")

Items = Sequence[tuple[str, str]]


def check_header(key: object, value: object) -> None:
    """Raise EncodeError for a header that is not str -> str or could break the request framing."""
    if not isinstance(key, str) or not isinstance(value, str):
        raise errors.EncodeError(f"headers must map str to str; {key!r}: {value!r} is not")
    if not _HEADER_NAME.match(key) or _HEADER_VALUE_BAD.search(value):
        raise errors.EncodeError(
            f"header {key!r} is not a valid HTTP header (names are tokens; values cannot contain CR, LF or NUL)"
        )


def config_headers(
    config: RESTConfig, base: Iterable[tuple[str, str]] = (), url_auth: tuple[str, str] | None = None
) -> list[tuple[str, str]]:
    """The headers sent on every request, computed once per client.

    Args:
        config: The client's settings (static auth, headers, accept_compression).
        base: Headers below the config's (e.g. those the caller set on a requests Session).
        url_auth: ``(user, password)`` from the URL (:attr:`BaseURL.auth`): basic auth, used only when
            ``config.auth`` is None; ``RESTConfig.auth`` and an ``Authorization`` in ``RESTConfig.headers`` win.
    """
    merged: dict[str, tuple[str, str]] = {}
    for key, value in base:
        merged[key.lower()] = (key, value)
    merged.setdefault("user-agent", ("User-Agent", USER_AGENT))
    if url_auth is not None and config.auth is None:
        merged["authorization"] = ("Authorization", BasicAuth(*url_auth).headers()["Authorization"])
    for key, value in config.static_auth_headers().items():
        merged[key.lower()] = (key, value)
    for key, value in (config.headers or {}).items():
        merged[key.lower()] = (key, value)
    # Only the encodings BodyReader can decode (and limit) are offered, whatever else asks for more.
    merged["accept-encoding"] = ("Accept-Encoding", "gzip, deflate" if config.accept_compression else "identity")
    items = list(merged.values())
    for key, value in items:
        check_header(key, value)
    return items


def call_headers(
    method: str,
    body: bytes | None,
    content_headers: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    encoding: str | None,
    constant_keys: frozenset[str],
) -> tuple[list[tuple[str, str]], frozenset[str]]:
    """The per-request headers, and which of the client's constant headers the caller's per-call headers replace.

    Args:
        method: HTTP method (a POST always carries Content-Length).
        body: The body as sent (after compression).
        content_headers: Headers describing the body (Content-Type, Inference-Header-Content-Length).
        headers: The caller's per-call headers (validated; never changed).
        encoding: The Content-Encoding of ``body``, if compressed.
        constant_keys: Lower-case names of the client's constant headers.
    """
    override: dict[str, tuple[str, str]] = {}
    if headers:
        for key, value in headers.items():
            check_header(key, value)
            override[key.lower()] = (key, value)
        override.pop("content-length", None)  # framing is the transport's job
        override.pop("content-encoding", None)
    extra: list[tuple[str, str]] = []
    if content_headers:
        if override:
            extra.extend((k, v) for k, v in content_headers.items() if k.lower() not in override)
        else:
            extra.extend(content_headers.items())
    if body is not None or method == "POST":
        extra.append(("Content-Length", str(len(body) if body is not None else 0)))
    if encoding is not None:
        extra.append(("Content-Encoding", encoding))
    if not override:
        return extra, frozenset()
    extra.extend(override.values())
    return extra, frozenset(override) & constant_keys


def compress_body(body: bytes | None, config: RESTConfig) -> tuple[bytes | None, str | None]:
    """The body to send and its Content-Encoding: compressed when configured and at least the threshold."""
    if body is None or config.compression is None or len(body) < config.compression_threshold:
        return body, None
    wbits = 16 + zlib.MAX_WBITS if config.compression == "gzip" else zlib.MAX_WBITS
    obj = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return obj.compress(body) + obj.flush(), config.compression


class BodyTooLarge(Exception):
    """A reply body passed the size limit (raised by :class:`BodyReader`; transports map it)."""

    def __init__(self, size: int, limit: int, compressed: bool) -> None:
        super().__init__(size)
        self.size = size
        self.limit = limit
        self.compressed = compressed


#: The first piece of a large plain body's buffer (see :func:`body_buffer_size`).
BODY_FIRST_ALLOC = 1 << 20


def body_buffer_size(current: int, wanted: int) -> int:
    """The next size of the buffer a plain body of ``wanted`` bytes (its Content-Length) is read into, once the
    ``current`` one is full: :data:`BODY_FIRST_ALLOC` first, then doubling, so a hostile Content-Length costs
    at most about three times what the server really sends; and the whole body at once when a doubling would
    leave less than half of it for another growth (no copy of megabytes for a tail of a few bytes: a 2 MiB tensor
    with its JSON header grows once, not twice)."""
    size = min(wanted, max(2 * current, BODY_FIRST_ALLOC))
    if wanted - size < size // 2:
        size = wanted
    return size


class BodyReader:
    """Collects a reply body from chunks, decoding gzip/deflate, and stops as soon as it would pass ``limit``.

    Feed it what the socket gives (:meth:`feed`), then take the body (:meth:`finish`). Past the limit it raises
    :class:`BodyTooLarge`, or with ``allow_truncate`` (error replies) keeps what fits and reports ``complete``
    False (the connection must then be dropped). A corrupt compressed body raises DecodeError.
    """

    __slots__ = ("limit", "allow_truncate", "complete", "_parts", "_total", "_obj", "_encoding", "_first")

    def __init__(self, encoding: str | None, limit: int, *, allow_truncate: bool = False) -> None:
        self.limit = limit
        self.allow_truncate = allow_truncate
        self.complete = True
        self._parts: list[bytes] = []
        self._total = 0
        self._encoding = _encoding_of(encoding)
        self._first = True
        self._obj = (
            None
            if self._encoding is None
            else zlib.decompressobj(16 + zlib.MAX_WBITS if self._encoding == "gzip" else zlib.MAX_WBITS)
        )

    @classmethod
    def for_reply(cls, status: int, encoding: str | None, max_response_size: int) -> BodyReader:
        """The reader of a reply: an error body (status >= 400) is read up to :data:`ERROR_BODY_LIMIT` and cut
        there; any other body must fit ``max_response_size``."""
        if status < 400:
            return cls(encoding, max_response_size)
        return cls(encoding, ERROR_BODY_LIMIT, allow_truncate=True)

    @property
    def plain(self) -> bool:
        """Whether the body is not compressed (so a known Content-Length can be read in one piece)."""
        return self._obj is None

    def expect(self, length: int) -> int:
        """For a plain body of known ``length``: how many bytes to read (raises past the limit)."""
        if length <= self.limit:
            return length
        if not self.allow_truncate:
            raise BodyTooLarge(length, self.limit, False)
        self.complete = False
        return self.limit

    def feed(self, data: bytes) -> bool:
        """Add a chunk; False means stop reading (truncated at the limit)."""
        if not self.complete:
            return False
        try:
            if self._obj is None:
                self._add(data, False)
            elif self._encoding == "deflate" and self._first and data:
                # deflate is zlib-wrapped per the RFC, but some servers send raw deflate: decided on the first chunk.
                self._first = False
                try:
                    self._inflate(data)
                except zlib.error:
                    self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._inflate(data)
            else:
                self._inflate(data)
        except zlib.error as exc:
            raise errors.DecodeError(f"the reply's {self._encoding} body is corrupt: {exc}") from exc
        except BodyTooLarge:
            if not self.allow_truncate:
                raise
            self.complete = False
        return self.complete

    def finish(self) -> bytes:
        """The whole body (one bytes object; no copy when it arrived in one chunk)."""
        if self._obj is not None and self.complete:
            try:
                self._add(self._obj.flush(), True)
            except BodyTooLarge:
                if not self.allow_truncate:
                    raise
                self.complete = False
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _inflate(self, data: bytes) -> None:
        obj = self._obj
        assert obj is not None
        while data:
            self._add(obj.decompress(data, self.limit - self._total + 1), True)
            data = obj.unconsumed_tail

    def _add(self, chunk: bytes, compressed: bool) -> None:
        total = self._total + len(chunk)
        if total > self.limit:
            raise BodyTooLarge(total, self.limit, compressed)
        self._total = total
        if chunk:
            self._parts.append(chunk)


def _encoding_of(encoding: str | None) -> str | None:
    if encoding is None:
        return None
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return "gzip"
    if enc == "deflate":
        return "deflate"
    raise errors.DecodeError(
        f"the server replied with Content-Encoding {encoding!r}, which inferkit does not decode (it only offers "
        "gzip and deflate)"
    )


def redact(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers for logging, with credentials replaced by ``***``."""
    return {k: ("***" if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers}


def log_line(
    method: str, url: str, status: int, sent: int, received: int, ms: float, attempts: int, items: Items
) -> str:
    """The verbose log line of one request (credentials redacted)."""
    return (
        f"{method} {url} -> {status} (sent {sent} B, received {received} B, {ms:.2f} ms, attempt {attempts}) "
        f"headers={redact(items)}"
    )


class BaseURL(NamedTuple):
    """A REST client's server URL, validated: ``base_url`` is ``scheme://netloc/base/path`` (no trailing slash).

    ``user:password@`` in the URL is never part of ``netloc``, ``base_url`` or ``origin`` (they appear in error
    messages, logs and reprs); it is kept only in ``auth`` (percent-decoded), for basic auth.
    """

    scheme: str
    netloc: str
    base_path: str
    base_url: str
    origin: str
    host: str
    port: int
    auth: tuple[str, str] | None = None

    def __repr__(self) -> str:
        auth = "" if self.auth is None else ", auth=(***)"
        return f"BaseURL({self.base_url!r}{auth})"


_USERINFO = re.compile(r"//[^/?#]*@")

# RFC 3986 characters that stay as they are in a path (as requests' requote_uri keeps them).
_PATH_SAFE = "!#$%&'()*+,/:;=?@[]~"


def parse_base_url(url: object) -> BaseURL:
    """Validate a REST server URL (``http(s)://[user:password@]host[:port][/base]``; no scheme means ``http://``).

    Credentials in the URL are taken out of it (see :class:`BaseURL`) and sent as basic auth, unless the client
    has ``RESTConfig.auth`` (which then wins). Error messages about the URL never repeat its password.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"the server URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        url = "http://" + url  # "localhost:8000", as tritonclient accepts it
    shown = _USERINFO.sub("//***@", url)  # the URL as error messages may show it
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"a REST client needs an http:// or https:// URL, got {shown!r}")
    if not parts.hostname:
        raise ValueError(f"the server URL {shown!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"the server URL {shown!r} must not carry a query or fragment")
    base_path = quote(parts.path, safe=_PATH_SAFE).rstrip("/")
    netloc = parts.netloc.rpartition("@")[2]
    auth = None
    if "@" in parts.netloc:
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    origin = f"{scheme}://{netloc}"
    port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
    return BaseURL(scheme, netloc, base_path, origin + base_path, origin, parts.hostname, port, auth)


def tls_without_client_cert(scheme: str, config: RESTConfig) -> bool:
    """Whether connections are TLS with no client certificate configured (an ``ssl.SSLContext`` given as
    ``RESTConfig.verify`` may carry one: then inferkit cannot tell, and says False)."""
    return scheme == "https" and config.cert is None and isinstance(config.verify, (bool, str))
