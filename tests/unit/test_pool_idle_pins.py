"""What ``pool.idle_open`` and ``pool._sink`` assume of urllib3's connection pool (a urllib3 release that changes
it fails here): the free connections are a ``LifoQueue`` over a list, filled with ``None`` placeholders, taken from
the end and given back to the end, under the queue's ``mutex``."""

from __future__ import annotations

import queue

import urllib3

from inferkit._transport import pool as pools


def test_the_pool_is_a_lifo_list_of_placeholders() -> None:
    p = urllib3.HTTPConnectionPool("127.0.0.1", 9, maxsize=3, block=True)
    assert isinstance(p.pool, queue.LifoQueue) and isinstance(p.pool.queue, list)
    assert p.pool.queue == [None, None, None]
    conn = p._get_conn(timeout=0.1)
    assert conn is not None and len(p.pool.queue) == 2
    p._put_conn(conn)
    assert p.pool.queue[-1] is conn
    assert pools.idle_open(p) == 0  # never connected
    p.close()
    assert pools.idle_open(p) == 0
