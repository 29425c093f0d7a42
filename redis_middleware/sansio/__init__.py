"""The ground floor: every decision, with no I/O.

Nothing here imports redis, asyncio or a web framework (``tests/sansio`` guards it).
Given a normalised request (:mod:`.request`), the cores decide which Redis commands
to run and what to do with their replies, as *flows* (:mod:`.flow`): generators that
yield batches of commands and receive the replies. The response half is decided here
too (:mod:`.exchange`): adapters hand over the app's response start and body and get
back what to send. ``redis_middleware._redis`` runs the flows; ``asgi`` and ``wsgi``
translate messages. See ``docs/architecture.md``.
"""
