"""How the data cache turns values into bytes and back: JSON, msgpack, signed pickle.

A serializer is any object with ``dumps(value) -> bytes`` and ``loads(data) -> value``.
``dumps`` raises ``TypeError`` for a value it cannot store (the caller's mistake: it
propagates); anything ``loads`` raises means the stored bytes are unreadable (the cache
treats them as a miss). Compression is not a serializer's business: the envelope
(``dataenvelope.py``) compresses what any of them produces. A serializer of the user's
stores signed bytes (:func:`signed`) unless it says that its ``loads`` runs no code
whatever the bytes (``safe_to_load = True``).
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
           "SignedSerializer", "UnreadableValue", "serializer_named", "signed"]


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
    safe_to_load = True
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
    safe_to_load = True

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


class _Mac:
    """A keyed BLAKE2b MAC (32 bytes) in front of a payload, with a key derived from the
    first secret for ``purpose``, checked against every secret (rotation). BLAKE2b's
    keyed mode is a MAC on its own (no HMAC construction needed): 0.6 µs a check here
    against 2.3 µs for HMAC-SHA256 through ``hmac``, on every hit."""

    SIZE = 32

    def __init__(self, secrets: Sequence[str], purpose: bytes) -> None:
        if not secrets:
            raise ValueError("a signed serializer needs at least one secret key")
        # A key of its own: the secret itself also signs cookies (other messages).
        self._keys = [hashlib.sha256(purpose + s.encode()).digest() for s in secrets]

    def sign(self, payload: bytes) -> bytes:
        return hashlib.blake2b(payload, key=self._keys[0], digest_size=self.SIZE).digest() + (
            payload)

    def open(self, data: bytes) -> bytes:
        """The payload of ``data``, or UnreadableValue when no secret signed it."""
        mac, payload = data[:self.SIZE], data[self.SIZE:]
        for key in self._keys:
            if hmac.compare_digest(hashlib.blake2b(payload, key=key,
                                                   digest_size=self.SIZE).digest(), mac):
                return payload
        raise UnreadableValue("the value's signature does not match any secret key")


class SignedPickleSerializer:
    """pickle, signed (:class:`_Mac`): whoever can write to Redis but does not know the
    secret cannot make this process unpickle anything: a value that fails the check is
    unreadable (a miss)."""

    name = "pickle"
    safe_to_load = True  # nothing is unpickled before the signature is checked

    def __init__(self, secrets: Sequence[str]) -> None:
        self._mac = _Mac(secrets, b"redis-middleware data cache pickle\0")

    def dumps(self, value: Any) -> bytes:
        return self._mac.sign(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))

    def loads(self, data: bytes) -> Any:
        return pickle.loads(self._mac.open(data))


class SignedSerializer:
    """Another serializer's bytes, signed (:class:`_Mac`): what a serializer of the
    user's (a cachelib pickle serializer, django-redis's) stores, so that a compromised
    Redis cannot feed its ``loads`` (pickle, or anything that runs code) bytes of its
    own. A value that fails the check is a miss; ``inner.loads`` never sees it."""

    safe_to_load = True

    def __init__(self, inner: Any, secrets: Sequence[str]) -> None:
        self.inner = inner
        self._mac = _Mac(secrets, b"redis-middleware data cache serializer\0")

    def dumps(self, value: Any) -> bytes:
        data = self.inner.dumps(value)
        if data is None:  # cachelib's serializers warn and return None
            raise TypeError(f"{type(self.inner).__name__} cannot store a "
                            f"{type(value).__name__}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"{type(self.inner).__name__}.dumps returned "
                            f"{type(data).__name__}, not bytes")
        return self._mac.sign(bytes(data))

    def loads(self, data: bytes) -> Any:
        return self.inner.loads(self._mac.open(data))


def signed(serializer: Any, secrets: Sequence[str]) -> Any:
    """``serializer`` as the data cache stores with it: as it is when it says its
    ``loads`` is safe on any bytes (``safe_to_load = True``: the built-ins, a signed
    one, a JSON serializer of the user's that says so), else behind a signature."""
    if getattr(serializer, "safe_to_load", False) is True:
        return serializer
    return SignedSerializer(serializer, secrets)


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
    return signed(spec, secrets), OTHER_ID
