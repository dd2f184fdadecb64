"""What inferkit._transport.pool relies on in urllib3 and requests beyond their public API, asserted one by one.

A release of either library that changes one of these fails here, with the name of the assumption, rather than in
a user's process. Each test exercises the behaviour (a real pool, a real socket on 127.0.0.1), not only the name.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any, Iterator

import pytest
import requests
import requests.adapters
import urllib3
from urllib3.exceptions import ClosedPoolError, EmptyPoolError

from inferkit._transport import pool as pools


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers (enough to open connections)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    sock.close()


def test_get_conn_and_put_conn_take_and_give_back_one_slot_of_a_blocking_pool(listener: tuple[str, int]) -> None:
    pool = urllib3.HTTPConnectionPool(*listener, maxsize=2, block=True)
    first = pools.checkout(pool, timeout=1)
    second = pools.checkout(pool, timeout=1)
    assert first is not second
    t0 = time.monotonic()
    with pytest.raises(EmptyPoolError):  # pools.PoolExhausted
        pools.checkout(pool, timeout=0.05)  # the wait is bounded by the timeout given
    assert time.monotonic() - t0 < 5
    assert pools.PoolExhausted is EmptyPoolError and pools.PoolClosed is ClosedPoolError
    pools.checkin(pool, first)
    assert pools.checkout(pool, timeout=1) is first  # LIFO: the connection just given back is reused
    pools.checkin(pool, first)
    pools.checkin(pool, second)
    pool.close()
    assert not pools.is_open(pool)
    with pytest.raises(ClosedPoolError):
        pools.checkout(pool, timeout=0.05)


def test_a_pooled_connection_exposes_its_socket_once_connected(listener: tuple[str, int]) -> None:
    pool = urllib3.HTTPConnectionPool(*listener, maxsize=1, block=True)
    conn = pools.checkout(pool, timeout=1)
    assert conn.sock is None  # not connected until asked
    conn.timeout = 2
    conn.connect()
    assert isinstance(conn.sock, socket.socket)
    conn.close()
    assert conn.sock is None
    pools.checkin(pool, conn)
    pool.close()


def test_others_busy_reads_the_pool_queue(listener: tuple[str, int]) -> None:
    pool = urllib3.HTTPConnectionPool(*listener, maxsize=3, block=True)
    assert isinstance(pool.pool, queue.LifoQueue) and pool.pool.maxsize == 3
    mine = pools.checkout(pool, timeout=1)
    assert not pools.others_busy(pool)
    other = pools.checkout(pool, timeout=1)
    assert pools.others_busy(pool)
    pools.checkin(pool, other)
    pools.checkin(pool, mine)
    pool.close()


def test_keepalive_expiry_closes_a_connection_idle_for_too_long(listener: tuple[str, int]) -> None:
    pool = urllib3.HTTPConnectionPool(*listener, maxsize=1, block=True)
    conn = pools.checkout(pool, timeout=1)
    conn.timeout = 2
    conn.connect()
    pools.checkin(pool, conn)
    assert pools.checkout(pool, timeout=1, keepalive_expiry=60).sock is not None  # fresh enough: kept
    pools.checkin(pool, conn)
    time.sleep(0.06)
    assert pools.checkout(pool, timeout=1, keepalive_expiry=0.05).sock is None  # idle too long: closed
    pools.checkin(pool, conn)
    pool.close()


def test_the_adapter_bounds_the_wait_for_a_connection_on_the_session_path(listener: tuple[str, int]) -> None:
    adapter = pools.make_adapter(pool_connections=1, pool_maxsize=1, pool_timeout=0.05)
    manager: Any = adapter.poolmanager
    pool = manager.connection_from_host(listener[0], listener[1], "http")
    held = pool._get_conn()  # what requests calls: no timeout argument, so the class default must apply
    t0 = time.monotonic()
    with pytest.raises(EmptyPoolError):
        pool._get_conn()
    assert time.monotonic() - t0 < 5
    pool._put_conn(held)


def test_renew_after_fork_relies_on_requests_pool_sizes_and_urllib3_pool_container(listener: tuple[str, int]) -> None:
    session = requests.Session()
    adapter = pools.make_adapter(pool_connections=3, pool_maxsize=7, pool_timeout=1)
    session.mount("http://", adapter)
    sizes: Any = adapter
    assert (sizes._pool_connections, sizes._pool_maxsize, sizes._pool_block) == (3, 7, True)
    pool = adapter.poolmanager.connection_from_host(listener[0], listener[1], "http")
    assert list(adapter.poolmanager.pools._container.values()) == [pool]
    conn = pools.checkout(pool, timeout=1)
    conn.timeout = 2
    conn.connect()
    sock = conn.sock
    pools.checkin(pool, conn)
    old_manager = adapter.poolmanager
    pools.renew_after_fork(session)
    assert adapter.poolmanager is not old_manager  # new, empty pools with the same sizes
    assert adapter.poolmanager.connection_pool_kw["maxsize"] == 7
    assert conn.sock is None  # this process's copy of the inherited socket was closed
    # (the socket object itself, not its descriptor number: another thread may reuse the number at once)
    assert sock.fileno() == -1
    session.close()


def test_requests_adapter_send_is_what_the_direct_path_replaces() -> None:
    # SyncTransport takes the direct path only when the adapter's send() is requests' own (not a subclass's or a
    # mock's); that check reads the function's module.
    assert requests.adapters.HTTPAdapter.send.__module__ == "requests.adapters"
    assert isinstance(pools.make_adapter(pool_connections=1, pool_maxsize=1, pool_timeout=1), pools.InferkitAdapter)


def test_num_connections_counts_the_connections_a_pool_has_made(listener: tuple[str, int]) -> None:
    # pool._idle_or_close skips counting idle connections while fewer than max_keepalive were ever made.
    pool = urllib3.HTTPConnectionPool(*listener, maxsize=3, block=True)
    assert pool.num_connections == 0
    first, second = pools.checkout(pool, timeout=1), pools.checkout(pool, timeout=1)
    assert pool.num_connections == 2
    pools.checkin(pool, first)
    pools.checkin(pool, second)
    pool.close()
