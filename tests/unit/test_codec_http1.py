"""The sans-IO HTTP/1.1 reply parser (inferkit.codec.http1): framing, keep-alive, limits, and every way a reply
can be split across receives (each reply is also fed one byte at a time)."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from inferkit import errors
from inferkit.codec.http1 import HEAD_LIMIT, FramingError, ReplyParser
from inferkit.codec.http_wire import BODY_FIRST_ALLOC, ERROR_BODY_LIMIT, BodyTooLarge, body_buffer_size

LIMIT = 1 << 22


def parse(raw: bytes, *, step: int | None = None, limit: int = LIMIT, eof: bool = False, **kw: Any) -> ReplyParser:
    """Feed ``raw`` whole, or ``step`` bytes at a time; then the end of the connection when ``eof``."""
    parser = ReplyParser(limit, **kw)
    pieces = [raw] if step is None else [raw[i : i + step] for i in range(0, len(raw), step)]
    for piece in pieces:
        if parser.feed(piece):
            break
    if eof and not parser.done:
        parser.eof()
    return parser


def parse_into(raw: bytes, step: int) -> ReplyParser:
    """Feed the way the multiplexed transport does: into the parser's buffer while it offers one."""
    parser = ReplyParser(LIMIT)
    pos = 0
    while not parser.done and pos < len(raw):
        view = parser.into()
        if view is None:
            parser.feed(raw[pos : pos + step])
            pos += step
        else:
            n = min(step, len(view), len(raw) - pos)
            view[:n] = raw[pos : pos + n]
            view.release()
            pos += n
            parser.filled(n)
    return parser


STEPS = [None, 1, 7]


@pytest.mark.parametrize("step", STEPS)
def test_content_length_reply(step: int | None) -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello", step=step)
    assert p.done and p.status == 200 and bytes(p.body) == b"hello"
    assert p.complete and p.reusable
    assert p.headers.get("content-type") == "application/json"
    assert p.headers.get("Content-Type") == "application/json"  # case-insensitive, as the codec asks
    assert "CONTENT-LENGTH" in p.headers and p.headers["content-length"] == "5"


@pytest.mark.parametrize("step", [1, 3, 1000, 70000])
def test_large_body_received_into_the_parsers_buffer(step: int) -> None:
    body = bytes(range(256)) * 5000  # 1.28 MB: past the first allocation, so the buffer grows
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    p = parse_into(raw, step)
    assert p.done and p.body == body and p.reusable


@pytest.mark.parametrize("step", STEPS)
def test_chunked_reply_with_extensions_and_trailers(step: int | None) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b"1\r\n \r\n"
        b"5\r\nworld\r\n"
        b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    p = parse(raw, step=step)
    assert p.done and p.body == b"hello world" and p.reusable


@pytest.mark.parametrize("step", STEPS)
def test_gzip_reply_is_decoded(step: int | None) -> None:
    body = b'{"outputs": []}' * 100
    packed = gzip.compress(body)
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
    p = parse(raw, step=step)
    assert p.done and p.body == body and p.reusable


def test_chunked_and_deflate_together() -> None:
    body = b"x" * 10000
    packed = zlib.compress(body)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(packed[i : i + 100]), packed[i : i + 100]) for i in range(0, len(packed), 100)
    )
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    assert parse(raw, step=13).body == body


@pytest.mark.parametrize("step", STEPS)
def test_body_until_close(step: int | None) -> None:
    p = parse(b"HTTP/1.1 200 OK\r\n\r\nno length here", step=step)
    assert not p.done
    assert p.eof() and p.body == b"no length here" and not p.reusable


def test_interim_replies_are_skipped() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    for step in STEPS:
        p = parse(raw, step=step)
        assert p.status == 200 and p.body == b"ok" and "link" not in p.headers


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n", True),
    ],
)
def test_keep_alive_rules(head: bytes, reusable: bool) -> None:
    assert parse(head + b"\r\nok").reusable is reusable


def test_bytes_beyond_the_reply_make_the_connection_unusable() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert p.body == b"ok" and not p.reusable
    q = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    q.feed(b"junk")
    assert not q.reusable


def test_no_body_statuses_and_head_requests() -> None:
    assert parse(b"HTTP/1.1 204 No Content\r\n\r\n").body == b""
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head_request=True)
    assert p.done and p.body == b"" and p.reusable


def test_repeated_headers_are_joined() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nVary: a\r\nvary: b\r\nContent-Length: 0\r\n\r\n")
    assert p.headers.get("Vary") == "a, b"


def test_success_body_past_the_limit_raises_before_reading_it() -> None:
    with pytest.raises(BodyTooLarge):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", limit=1000)


def test_compressed_body_past_the_limit_raises() -> None:
    packed = gzip.compress(b"\0" * 5000)
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
    with pytest.raises(BodyTooLarge):
        parse(raw, limit=1000)


def test_error_body_past_its_limit_is_cut_and_the_connection_dropped() -> None:
    size = ERROR_BODY_LIMIT + 10
    raw = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % size + b"e" * size
    p = parse_into(raw, 65536)
    assert p.done and p.status == 500 and len(p.body) == ERROR_BODY_LIMIT
    assert not p.complete and not p.reusable


def test_corrupt_gzip_is_a_decode_error() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 8\r\n\r\nnot gzip"
    with pytest.raises(errors.DecodeError):
        parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_malformed_replies_are_framing_errors(raw: bytes) -> None:
    with pytest.raises(FramingError):
        parse(raw)


def test_header_block_over_the_limit() -> None:
    with pytest.raises(FramingError, match="header block"):
        parse(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (HEAD_LIMIT + 10))
    with pytest.raises(FramingError, match="header lines"):
        parse(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n")


@pytest.mark.parametrize(
    ("raw", "got_status"),
    [
        (b"", False),
        (b"HTTP/1.1 200 OK\r\nContent-Le", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", True),
    ],
)
def test_connection_ending_inside_a_reply(raw: bytes, got_status: bool) -> None:
    p = parse(raw)
    assert not p.done and p.got_status is got_status
    with pytest.raises(FramingError, match="closed the connection"):
        p.eof()


def test_a_server_announcing_a_huge_length_costs_only_what_it_sends() -> None:
    p = ReplyParser(1 << 40)
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 39))
    view = p.into()
    assert view is not None and len(view) <= 1 << 20  # not 512 GiB up front


def test_body_buffer_growth() -> None:
    mib = BODY_FIRST_ALLOC
    assert body_buffer_size(0, 100) == 100  # a small body: one allocation of its size
    assert body_buffer_size(0, 1 << 40) == mib  # a hostile length: what the server sends, not what it announces
    assert body_buffer_size(mib, 1 << 40) == 2 * mib  # then doubling
    assert body_buffer_size(mib, 2 * mib + 120) == 2 * mib + 120  # a tensor and its JSON header: one growth
    assert body_buffer_size(0, mib + mib // 4) == mib + mib // 4  # no growth for a small tail
    size, grows = 0, 0
    while size < 3 * mib:
        size, grows = body_buffer_size(size, 3 * mib), grows + 1
    assert size == 3 * mib and grows == 3  # 1 MiB, 2 MiB, then the last 1 MiB at once
