"""The response cache's Lua scripts, with their argument contracts."""

from __future__ import annotations

from ..flow import Script

__all__ = ["INVALIDATE", "LOOKUP", "RELEASE", "STORE"]

# KEYS: vary names, entry, lock. ARGV: the vary names the entry key was computed
# for, now ms, lock ms (0: no guard), lock token. When the stored names differ,
# nothing is read and the caller retries with them (the rare second round trip).
LOOKUP = Script("""
local names = redis.call('GET', KEYS[1]) or ''
if names ~= ARGV[1] then return {names, false, 0} end
local entry = redis.call('GET', KEYS[2])
local locked = 0
local fresh = entry and tonumber(string.match(entry, '^(%d+)')) > tonumber(ARGV[2])
if not fresh and tonumber(ARGV[3]) > 0 then
  if redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[3]) then locked = 1 end
end
return {names, entry or false, locked}
""")

# KEYS: vary names, variants (a ZSET scored by expiry), entry, lock. ARGV: vary names,
# entry, px, lock token, now ms. The keys of one URL share a slot (the {U} hash tag).
STORE = Script("""
local px, now = tonumber(ARGV[3]), tonumber(ARGV[5])
redis.call('SET', KEYS[3], ARGV[2], 'PX', px)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + px, KEYS[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < px then redis.call('PEXPIRE', KEYS[i], px) end
end
if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
return 1
""")

RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS[1] = variants set, KEYS[2] = vary key: delete every stored variant of a URL.
INVALIDATE = Script("""
local n = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do n = n + redis.call('DEL', key) end
redis.call('DEL', KEYS[1], KEYS[2])
return n
""")
