"""The data cache's Lua scripts (``data.py`` says which keys they touch and why)."""

from __future__ import annotations

from ..flow import Script

__all__ = ["ADD", "CLAIM", "DROP_TAGGED", "INCR", "RELEASE", "RENEW", "STORE", "TAG_ADD", "TAG_POP",
           "TOUCH"]

# KEYS: value, fill lease. ARGV: token, lease ms, now ms, "1" when values have an envelope.
# The value when it is fresh (an unreadable one counts as fresh: the caller overwrites
# it); else the lease if free. Returns {fresh value or false, 1 if the lease is ours}.
CLAIM = Script("""
local v = redis.call('GET', KEYS[1])
if v then
  if ARGV[4] ~= '1' or string.byte(v, 1) ~= 209 or string.byte(v, 2) % 4 < 2 then
    return {v, 0}
  end
  local fresh_until = 0
  for i = 4, 11 do fresh_until = fresh_until * 256 + string.byte(v, i) end
  if fresh_until > tonumber(ARGV[3]) then return {v, 0} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {false, 1} end
return {false, 0}
""")

# KEYS: value. ARGV: value, px, now ms. SET unless a value is there: a value past its TTL,
# inside its stale window (a soft envelope whose "fresh until" has passed), counts as
# absent, as it does for a plain read. 1: stored; 0: a value is there.
ADD = Script("""
local head = redis.call('GETRANGE', KEYS[1], 0, 10)
if #head > 0 then
  if #head < 11 or string.byte(head, 1) ~= 209 or string.byte(head, 2) % 4 < 2 then
    return 0
  end
  local fresh_until = 0
  for i = 4, 11 do fresh_until = fresh_until * 256 + string.byte(head, i) end
  if fresh_until > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""")

# KEYS: value, fill lease. ARGV: value, px, token. Stores and frees the caller's lease.
STORE = Script("""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
""")

# KEYS: lease. ARGV: token. Deletes the lease only while the caller holds it.
RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS: lease. ARGV: token, px. Extends the lease only while the caller still holds it.
RENEW = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")

# KEYS: tag ZSET. ARGV: value key, its expiry (ms), now (ms), its px. The tag lives as
# long as its longest-lived member and forgets expired ones as it is written.
TAG_ADD = Script("""
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
""")

# KEYS: tag ZSET. Its members, and the tag gone, atomically: a value tagged after this
# read lands in a new tag set, for the next invalidation.
TAG_POP = Script("""
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return members
""")

# KEYS: values (one slot). ARGV: the digests of the tags being invalidated. Deletes the
# values whose envelope still names one of them (read from the header alone).
DROP_TAGGED = Script("""
local n = 0
for _, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, 2054)
  if string.byte(head, 1) == 209 then
    local found = false
    for i = 0, string.byte(head, 3) - 1 do
      local d = string.sub(head, 16 + 8 * i, 23 + 8 * i)
      for j = 1, #ARGV do
        if d == ARGV[j] then found = true break end
      end
      if found then break end
    end
    if found then n = n + redis.call('DEL', key) end
  end
end
return n
""")

# KEYS: value. ARGV: px, the new "fresh until" (8 bytes, the envelope's). PEXPIRE, except
# that a tagged value (an envelope naming tags) is never given a longer life: its tags'
# sets are kept only as long as it was stored for, so past that an invalidation of its
# tags could not reach it. A plain envelope (no stale window, whose freshness is its TTL)
# gets the new expiry in its header too (SETRANGE keeps the TTL): readers that keep
# values in memory for as long as the header says they are fresh (the near cache, XFetch)
# would otherwise go by the old one. 1: done; 0: missing, or refused.
TOUCH = Script("""
local head = redis.call('GETRANGE', KEYS[1], 0, 2)
local envelope = string.byte(head, 1) == 209
if envelope and (string.byte(head, 3) or 0) > 0
   and tonumber(ARGV[1]) > redis.call('PTTL', KEYS[1]) then
  return 0
end
local done = redis.call('PEXPIRE', KEYS[1], ARGV[1])
if done == 1 and envelope and math.floor((string.byte(head, 2) or 0) / 2) % 2 == 0 then
  redis.call('SETRANGE', KEYS[1], 3, ARGV[2])
end
return done
""")

# KEYS: value. ARGV: delta. {0}: missing; {1, new value's digits}; {2}: not an integer;
# {3}: out of 64-bit range. INCRBY keeps the key's TTL. The new value goes back as the
# stored digits: Lua's numbers are doubles, exact only up to 2**53.
INCR = Script("""
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
if #v > 20 or not string.match(v, '^%-?%d+$') then return {2} end
if not pcall(redis.call, 'INCRBY', KEYS[1], ARGV[1]) then return {3} end
return {1, redis.call('GET', KEYS[1])}
""")
