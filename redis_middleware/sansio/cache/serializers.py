"""How the data cache turns values into bytes and back: JSON, msgpack, signed pickle.

A serializer is any object with ``dumps(value) -> bytes`` and ``loads(data) -> value``.
``dumps`` raises ``TypeError`` for a value it cannot store (the caller's mistake: it
propagates); anything ``loads`` raises means the stored bytes are unreadable (the cache
treats them as a miss). Compression is not a serializer's business: the envelope
(``dataenvelope.py``) compresses what any of them produces.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import json.scanner
import pickle
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["JsonSerializer", "MsgpackSerializer", "Serializer", "SignedPickleSerializer",
           "UnreadableValue", "serializer_named"]


class Serializer(Protocol):
    """What ``Settings.data_serializer`` may be (besides a built-in's name)."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class UnreadableValue(ValueError):
    """Stored bytes that do not decode (garbage, another format, a failed signature)."""


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _check_json(value: Any, where: str = "value") -> None:
    """Refuse what JSON would not give back as it was: tuples (lists on the way back),
    subclasses (an IntEnum comes back an int), non-str dict keys (strings on the way
    back), and anything else json would refuse anyway."""
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is list:
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"{where} has a {type(key).__name__} key {key!r}: JSON keys "
                                "are strings (convert it, or choose another serializer)")
            _check_json(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {kind.__name__}, not a JSON value (str, int, float, bool, "
                    "None, list, dict): convert it, or choose another serializer")


class JsonSerializer:
    """JSON: str, int, float, bool, None, list and dict round-trip exactly (1.0 stays a
    float, 1 an int); anything else is a ``TypeError`` at ``dumps``."""

    name = "json"
    _encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
    # The C scanner alone: json.loads would detect the encoding of bytes and match
    # whitespace around the value twice, about a third of a small value's decoding (and
    # decoding is on every hit). What dumps wrote is ASCII with no whitespace around it.
    _scan = staticmethod(json.scanner.make_scanner(json.JSONDecoder()))  # type: ignore[arg-type]

    def dumps(self, value: Any) -> bytes:
        _check_json(value)
        return self._encode(value).encode("ascii")  # ensure_ascii: lone surrogates too

    def loads(self, data: bytes) -> Any:
        text = data.decode("utf-8")
        try:
            value, end = self._scan(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            return json.loads(text)  # not as dumps writes it: the full parser decides
        return value


class MsgpackSerializer:
    """msgpack (the ``msgpack`` extra): compact and fast; bytes are kept, tuples come
    back as lists, integers must fit in 64 bits."""

    name = "msgpack"

    def __init__(self) -> None:
        msgpack = importlib.import_module("msgpack")  # optional: imported when chosen
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def dumps(self, value: Any) -> bytes:
        try:
            data: bytes = self._packb(value, use_bin_type=True)
        except (OverflowError, ValueError) as exc:
            raise TypeError(f"msgpack cannot store this value: {exc}") from exc
        return data

    def loads(self, data: bytes) -> Any:
        return self._unpackb(data, raw=False, strict_map_key=False)


class SignedPickleSerializer:
    """pickle, signed: a keyed BLAKE2b MAC (32 bytes) of the pickle, with a key derived
    from the first secret, checked against every secret (rotation) *before* unpickling.
    Whoever can write to Redis but does not know the secret cannot make this process
    unpickle anything: a value that fails the check is unreadable (a miss). BLAKE2b's
    keyed mode is a MAC on its own (no HMAC construction needed): 0.6 µs a check here
    against 2.3 µs for HMAC-SHA256 through ``hmac``, on every pickled hit."""

    name = "pickle"
    _SIZE = 32

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("signed pickle needs at least one secret key")
        # A key of its own: the secret itself also signs cookies (other messages).
        self._keys = [hashlib.sha256(b"redis-middleware data cache pickle\0" + s.encode())
                      .digest() for s in secrets]

    def dumps(self, value: Any) -> bytes:
        payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        return hashlib.blake2b(payload, key=self._keys[0], digest_size=self._SIZE).digest() + (
            payload)

    def loads(self, data: bytes) -> Any:
        mac, payload = data[:self._SIZE], data[self._SIZE:]
        for key in self._keys:
            if hmac.compare_digest(hashlib.blake2b(payload, key=key,
                                                   digest_size=self._SIZE).digest(), mac):
                return pickle.loads(payload)
        raise UnreadableValue("the pickle's signature does not match any secret key")


# One id per built-in, stored in each value's envelope: a value written with another
# serializer (a configuration change) is a clean miss, not an error. 15: any other.
SERIALIZER_IDS = {"json": 1, "msgpack": 2, "pickle": 3}
OTHER_ID = 15


def serializer_named(spec: Any, secrets: Sequence[str]) -> tuple[Serializer, int]:
    """The serializer ``Settings.data_serializer`` (or an override) names, and its id."""
    if spec == "json":
        return JsonSerializer(), 1
    if spec == "msgpack":
        return MsgpackSerializer(), 2
    if spec == "pickle":
        return SignedPickleSerializer(secrets), 3
    if isinstance(spec, str):
        raise ValueError(f"unknown serializer {spec!r}: 'json', 'msgpack' or 'pickle'")
    if not (callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None))):
        raise TypeError("a serializer is an object with dumps(value) and loads(data) methods")
    return spec, OTHER_ID
