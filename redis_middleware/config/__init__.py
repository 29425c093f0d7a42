"""The configuration floor, under the core and the adapters: ``Settings`` and what reads
and checks it.

``settings`` declares the fields, ``fields`` reads them from the environment, copies and
shows them, ``validation`` checks each component's values; ``urls``, ``rates``,
``rules``, ``patterns``, ``paths`` and ``identity`` parse what the values say (a Redis
URL, rate strings, per-route options, path patterns, the rate-limit identity kinds);
``options`` applies a middleware's options and ``reference`` renders the documentation
table. Nothing here imports from the core, and nothing imports redis-py or ``limits``
until a URL or a rate string needs it.
"""
