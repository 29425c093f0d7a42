"""A session's hash in Redis: its field layout and the two scripts that read and write it.

One HASH per session at ``<prefix>:session:{<tag>}:<sha256(id)>``, one field per session
key holding its encoding, plus the metadata field :data:`META` = ``"<created>:<last
seen>"`` (epoch ms in base 36: it keeps a 3-field session in the same allocation bin as
the leanest peer). User keys that start with ``\\x00``, ``\\x01`` or ``\\x02`` are stored
behind a ``\\x01`` (:func:`field_name`), so no user key can take a metadata name; a key
holding a lone surrogate (it has no UTF-8 form) is stored as ``\\x01`` + its ASCII-escaped
JSON string. A value that is a JSON string of 64 to 128 lower-case hex digits is stored
as the bytes they spell, under :data:`PACKED` + its field name (:func:`packed`). Times
are epoch milliseconds, durations milliseconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..flow import Call, Script

__all__ = ["COMPACT_FIELDS", "COMPACT_VALUE", "META", "MOVED", "PACKED", "b36", "field_name",
           "key_name", "load", "packed", "save"]

META = "\x00t"
MOVED = "\x00m"  # in an old id's hash after a login: the key the session moved to
# Redis keeps a hash in its compact encoding while every field and value is at most
# hash-max-listpack-value bytes and it has at most hash-max-listpack-entries fields
# (64 and 128 by default): about 168 B for a 3-field session, several times more past.
COMPACT_VALUE, COMPACT_FIELDS = 64, 128
# A value that is a JSON string of lower-case hex digits, too long for the compact
# encoding but not twice too long, is stored as the bytes the digits spell, under
# PACKED + its field name: Flask-Login's "_id" (a SHA-512 hex digest, 130 bytes as
# JSON) takes 64 bytes and the session keeps the compact encoding.
PACKED = "\x02"
_HEX = re.compile(r"[0-9a-f]+")


def packed(encoded: str) -> bytes | None:
    """The bytes a long hex-string value is stored as, or None (stored as it is)."""
    n = len(encoded)
    if COMPACT_VALUE < n <= 2 * COMPACT_VALUE + 2 and n % 2 == 0 and (
            encoded[0] == '"' == encoded[-1]) and _HEX.fullmatch(encoded, 1, n - 1):
        return bytes.fromhex(encoded[1:-1])
    return None


ESCAPED = "\x01"  # the mark before a user key that would read as metadata


def field_name(key: str) -> str:
    """The hash field of a session key (a key that looks like metadata is escaped)."""
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError:
            # A lone surrogate has no UTF-8 form: the key is stored as ESCAPED + its
            # ASCII-escaped JSON string. A metadata-like key follows ESCAPED with
            # \x00-\x02, never with '"', so the two escapes cannot meet.
            return ESCAPED + json.dumps(key)
    return ESCAPED + key if key.startswith(("\x00", ESCAPED, PACKED)) else key


def key_name(field: str) -> str:
    """The session key of a hash field (:func:`field_name` undone)."""
    if not field.startswith(ESCAPED):
        return field
    if field[1:2] == '"':
        key: str = json.loads(field[1:])
        return key
    return field[1:]


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if not n:
            return out


# KEYS: the session. ARGV: now, idle, absolute, meta field, slide (ms).
# Returns the hash (HGETALL), or false when there is no live session (one past its
# lifetime is deleted). Its idle expiry slides (bounded by the absolute lifetime) only
# when ``slide`` ms have passed since the last slide or write (the meta field's second
# part): a read in between runs HGETALL alone, and the key's TTL still ends within the
# absolute lifetime, as the last slide set it. The meta field comes back with the hash
# (the caller skips metadata), so one command finds it. ``now`` is turned into base 36
# here, only when it is written (a read that does not slide costs no conversion).
_LOAD = Script("""
local all = redis.call('HGETALL', KEYS[1])
local meta
for i = 1, #all, 2 do
  if all[i] == ARGV[4] then meta = all[i + 1] break end
end
if not meta then return false end
local created36, last36 = string.match(meta, '^(%w+):?(%w*)')
local created = tonumber(created36, 36)
local now = tonumber(ARGV[1])
local ttl = math.min(tonumber(ARGV[2]), created + tonumber(ARGV[3]) - now)
if ttl <= 0 then redis.call('DEL', KEYS[1]) return false end
local last = tonumber(last36, 36) or 0
-- abs: a server whose clock is behind slides rather than never
if math.abs(now - last) >= tonumber(ARGV[5]) then
  local digits, n, now36 = '0123456789abcdefghijklmnopqrstuvwxyz', now, ''
  repeat
    local r = n % 36
    now36 = string.sub(digits, r + 1, r + 1) .. now36
    n = (n - r) / 36
  until n == 0
  -- pcall: under maxmemory/noeviction the read still succeeds; sliding is best effort
  redis.pcall('HSET', KEYS[1], ARGV[4], created36 .. ':' .. now36)
  redis.pcall('PEXPIRE', KEYS[1], ttl)
end
return all
""")


def load(key: str, now: int, idle: int, absolute: int, slide: int = 0) -> Call:
    """Read one session and slide its idle expiry when ``slide`` has passed since the
    last slide (``idle``, ``absolute``, ``slide`` in ms)."""
    return _LOAD([key], [now, idle, absolute, META, slide])


# KEYS: the session, the session it moves from (``move``; else the session again).
# ARGV: mode, now, idle, absolute, meta field, now in base 36, moved field, grace,
# n_set, (field, value)*, n_del, field*
# mode 'create' writes a fresh hash, and refuses a key that exists: a create never writes
# into a session in use (Django's save(must_create=True)). 'update' refuses a hash
# deleted meanwhile (a logout racing a slow request must not resurrect it), but follows
# a hash that regenerate() moved: the old key then holds only the moved field, naming
# the new key (same slot: the new id keeps the old id's slot tag), for ``grace`` ms, and
# the changes land there (returns 2). No load ever follows it: an old cookie is no
# session. 'move' renames the old hash (KEYS[2]) to the new id first, keeping concurrent
# changes to it, and leaves that forwarding field behind (refused when the old hash is
# gone).
# Returns 1 when stored; 0 also when the session's lifetime is over (it is deleted).
_SAVE = Script("""
local key, old, mode = KEYS[1], KEYS[2], ARGV[1]
local now, idle, absolute, metaf = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local movedf, grace = ARGV[7], tonumber(ARGV[8])
local created, created36, result = now, ARGV[6], 1
if mode == 'create' then
  if redis.call('EXISTS', key) == 1 then return 0 end
elseif mode == 'update' then
  local meta = redis.call('HGET', key, metaf)
  if not meta then
    local moved = redis.call('HGET', key, movedf)
    if not moved then return 0 end
    key, result = moved, 2
    meta = redis.call('HGET', key, metaf)
    if not meta then return 0 end
  end
  created36 = string.match(meta, '^(%w+)')
  created = tonumber(created36, 36)
elseif mode == 'move' then
  if redis.call('EXISTS', old) == 0 then return 0 end
  redis.call('RENAME', old, key)
  if grace > 0 then
    redis.call('HSET', old, movedf, key)
    redis.call('PEXPIRE', old, grace)
  end
end
-- A key is stored under its name, or packed under \2 + its name: writing one form
-- deletes the other (its "twin"), and a deletion deletes both.
local function twin(f)
  if string.byte(f, 1) == 2 then return string.sub(f, 2) end
  return '\2' .. f
end
local i = 9
local nset = tonumber(ARGV[i])
if nset > 0 then
  redis.call('HSET', key, unpack(ARGV, i + 1, i + 2 * nset))
  local twins = {}
  for j = i + 1, i + 2 * nset, 2 do twins[#twins + 1] = twin(ARGV[j]) end
  redis.call('HDEL', key, unpack(twins))
end
i = i + 2 * nset + 1
local ndel = tonumber(ARGV[i])
if ndel > 0 then
  local gone = {}
  for j = i + 1, i + ndel do gone[#gone + 1] = ARGV[j]; gone[#gone + 1] = twin(ARGV[j]) end
  redis.call('HDEL', key, unpack(gone))
end
local ttl = math.min(idle, created + absolute - now)
if ttl <= 0 then redis.call('DEL', key) return 0 end
redis.call('HSET', key, metaf, created36 .. ':' .. ARGV[6])
redis.call('PEXPIRE', key, ttl)
return result
""")


def save(mode: str, key: str, old_key: str, now: int, idle: int, absolute: int, grace: int,
         written: Mapping[str, str], deleted: list[str]) -> Call:
    """Write one session (``mode`` and the returns as the script above says): ``written``
    maps session keys to their encodings, ``deleted`` lists session keys; durations ms."""
    args: list[Any] = [mode, now, idle, absolute, META, b36(now), MOVED, grace, len(written)]
    for k, v in written.items():
        raw = packed(v)
        args += [field_name(k), v] if raw is None else [PACKED + field_name(k), raw]
    args.append(len(deleted))
    args += [field_name(k) for k in deleted]
    return _SAVE([key, old_key], args)
