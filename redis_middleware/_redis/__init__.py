"""The only floor that touches a Redis client.

:mod:`.driver` runs the cores' flows on a sync or an asyncio client (one pipeline
round trip per batch), behind a circuit breaker (:mod:`.breaker`);
:mod:`.connections` builds the clients from ``Settings`` (the built-in pipelined
client of :mod:`.endpoint`, :mod:`.wire_async` and :mod:`.wire_sync` for a standalone
server; redis-py for Cluster, Sentinel, ``memory://`` and Pub/Sub); :mod:`.strategies`
drives the ``limits`` library's rate-limit strategies.
"""
