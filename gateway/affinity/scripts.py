"""The Redis store's Lua scripts: each touches one pin key and its bucket's index, both under
one hash tag, so each runs atomically on one Cluster slot in one round trip.

The index is a sorted set of pin keys scored by expiry time (ms, Redis clock): trimming it
below the cap evicts the pins closest to expiry, and expired members are swept as pins are added.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Index KEYS[1] at now + ttl, sweep expired members, pop the ones closest to expiry over the cap.
# Sets `evicted`. The pin just written has the latest expiry, so it survives unless tied.
_INDEX_AND_EVICT = """
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local excess = redis.call('ZCARD', KEYS[2]) - cap
local evicted = 0
if excess > 0 then
  local victims = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #victims, 2 do
    if victims[i] == KEYS[1] then
      redis.call('ZADD', KEYS[2], victims[i + 1], KEYS[1])
    else
      redis.call('DEL', victims[i])
      evicted = evicted + 1
    end
  end
end
"""

# KEYS: pin, index. ARGV: value, ttl ms, cap. Returns {created, winner value, evicted}.
PIN = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl) then
  return {0, redis.call('GET', KEYS[1]), 0}
end
"""
    + _INDEX_AND_EVICT
    + "return {1, ARGV[1], evicted}\n"
)

# KEYS: pin, index. ARGV: old value, new value, ttl ms, cap. Compare-and-set; a lapsed pin
# counts as replaceable. Returns {replaced, current value, evicted}.
REPIN = (
    """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return {0, current, 0}
end
"""
    + _NOW
    + """
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
"""
    + _INDEX_AND_EVICT
    + "return {1, ARGV[2], evicted}\n"
)

# KEYS: pin, index. ARGV: ttl ms. A sliding-TTL hit: read, restart the TTL, move it in the index.
TOUCH = """
local value = redis.call('GET', KEYS[1])
if value then
""" + _NOW + """
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), KEYS[1])
end
return value
"""

# KEYS: pin, index. Returns how many pins were deleted (0 or 1).
DELETE = """
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
"""

# KEYS: index. Sweeps expired members, returns the live ones.
COUNT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)


def sources() -> dict[str, str]:
    """Every script by the name the store calls it by."""
    return {"PIN": PIN, "REPIN": REPIN, "TOUCH": TOUCH, "DELETE": DELETE, "COUNT": COUNT}
