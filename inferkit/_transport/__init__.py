"""The sync I/O layer under the sync clients: one driver and the transports it runs.

Owns: :mod:`~inferkit._transport.driver` (THE sync driver: first attempt, retry loop, backoff sleeps),
:mod:`~inferkit._transport.http` (the HTTP transport: requests Session + urllib3 pool),
:mod:`~inferkit._transport.pool` (the one place that relies on urllib3 / requests internals).
The async twins live in :mod:`inferkit.aio`.
Must not import: aiohttp, inferkit.aio.
"""
