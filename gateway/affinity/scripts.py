"""The Redis store's Lua scripts: each touches one bucket's keys, all under one hash tag, so it
runs atomically on one Cluster slot in one round trip.

A bucket `{prefix}:{b<n>}` holds (see `redis.py`):
- `:p:<digest>`  a pin: `model<TAB>route<TAB>expires ms<TAB>epoch<TAB>tenant tag`
- `:idx`         the bucket's pins scored by expiry (ms, Redis clock): the global cap
- `:t:<tag>`     one tenant's pins scored by expiry, kept while that tenant has a quota
- `:epoch`       a token written once; gone when Redis lost its data, so a new one marks a new epoch
- `:d:<digest>`  a deletion marker, for a session TTL: the pin was removed on purpose
- `:s:<digest>`  a session's lanes (the digest of its lane-less key), scored by when each was
                 pinned, so any replica can list them for the admin API
- `:sidx`        those lane sets scored by expiry: capped like the pins, oldest dropped first

Trimming an index below its cap evicts the pins closest to expiry (the one being written never),
and expired members are swept as pins are added. An evicted pin leaves its tenant's index too
(its tenant tag is in its value).
"""

from __future__ import annotations

# ms with the microseconds as a fraction: pins made in the same ms still expire in order.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

# KEYS[2] is the bucket's index, `<bucket>:idx`.
_HELPERS = """
local bucket = string.sub(KEYS[2], 1, -5)
local function tenant_of(value)
  return string.match(value, '^[^\\t]*\\t[^\\t]*\\t[^\\t]*\\t[^\\t]*\\t([^\\t]+)$')
end
local function drop(member)
  local value = redis.call('GET', member)
  redis.call('DEL', member)
  redis.call('ZREM', KEYS[2], member)
  if value then
    local tag = tenant_of(value)
    if tag then redis.call('ZREM', bucket .. ':t:' .. tag, member) end
    return 1
  end
  return 0
end
local function trim(index, limit)
  local excess = redis.call('ZCARD', index) - limit
  if excess <= 0 then return 0 end
  local score = redis.call('ZSCORE', index, KEYS[1])
  redis.call('ZREM', index, KEYS[1])
  local victims = redis.call('ZPOPMIN', index, excess)
  local evicted = 0
  for i = 1, #victims, 2 do evicted = evicted + drop(victims[i]) end
  if score then redis.call('ZADD', index, score, KEYS[1]) end
  return evicted
end
"""

# add_lane(set, index, lane, ttl ms, cap of sets, most lanes per session): adds the lane to the
# session's set (beyond the most, the oldest go but the first: the main loop, pinned first),
# restarts the set's TTL, and trims the bucket's index of sets to the cap, dropping the sets
# closest to expiry.
_ADD_LANE = """
local function add_lane(set, index, lane, ttl, cap, most)
  redis.call('ZADD', set, 'NX', now, lane)
  local excess = redis.call('ZCARD', set) - most
  if excess > 0 then redis.call('ZREMRANGEBYRANK', set, 1, excess) end
  redis.call('PEXPIRE', set, ttl)
  redis.call('ZADD', index, now + ttl, set)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  local over = redis.call('ZCARD', index) - cap
  if over > 0 then
    local dropped = redis.call('ZPOPMIN', index, over)
    for i = 1, #dropped, 2 do redis.call('DEL', dropped[i]) end
  end
end
"""

# Sets `epoch`: the bucket's, begun now if Redis has none (a fresh or emptied Redis).
_EPOCH = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[3], epoch)
end
"""

# Writes the pin `pin` (model<TAB>route) expiring at `expires`, indexes it, and trims the tenant's
# index to `quota` (when set), then the bucket's to `cap`. Sets `value` and `evicted`.
_WRITE = """
local value = pin .. '\\t' .. string.format('%.0f', expires) .. '\\t' .. epoch .. '\\t' .. tag
redis.call('SET', KEYS[1], value, 'PX', math.max(1, math.floor(expires - now)))
redis.call('DEL', KEYS[5])
local evicted = 0
if quota > 0 then
  redis.call('ZADD', KEYS[4], expires, KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  evicted = evicted + trim(KEYS[4], quota)
  -- The tenant's index goes when its last pin does: tenants come and go (from a header).
  local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', KEYS[4], math.ceil(tonumber(last[2]))) end
end
redis.call('ZADD', KEYS[2], expires, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
evicted = evicted + trim(KEYS[2], cap)
"""

# The writing scripts' KEYS: pin, index, epoch, tenant index, deletion marker.

# ARGV: pin, ttl ms, cap, quota, tenant tag. First writer wins. Returns {created, value, evicted}.
# With KEYS 6 and 7 (the session's lane set and the index of sets, when in this slot) and ARGV 6
# and 7 (lane, most lanes), a created pin's lane joins its session's set in the same trip.
PIN = _NOW + _HELPERS + _ADD_LANE + """
local current = redis.call('GET', KEYS[1])
if current then return {0, current, 0} end
local pin, cap, quota, tag = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local expires = now + tonumber(ARGV[2])
""" + _EPOCH + _WRITE + """
if #KEYS >= 7 then add_lane(KEYS[6], KEYS[7], ARGV[6], tonumber(ARGV[2]), cap, tonumber(ARGV[7])) end
return {1, value, evicted}
"""

# ARGV: old pin, new pin, ttl ms, cap, quota, tenant tag. Compare-and-set on the pin (model and
# route); a lapsed pin counts as replaceable. Returns {replaced, current value, evicted}. With
# KEYS 6 and 7 and ARGV 7 and 8 (as PIN's), the moved pin's lane listing lives as long as it.
REPIN = _NOW + _HELPERS + _ADD_LANE + """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] and string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\t' then
  return {0, current, 0}
end
local pin, cap, quota, tag = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local expires = now + tonumber(ARGV[3])
""" + _EPOCH + _WRITE + """
if #KEYS >= 7 then add_lane(KEYS[6], KEYS[7], ARGV[7], tonumber(ARGV[3]), cap, tonumber(ARGV[8])) end
return {1, value, evicted}
"""

# ARGV: pin, expires ms, the epoch the replica saw it in, cap, quota, tenant tag.
# A replica holds a pin Redis does not: write it back (first writer wins) only if Redis lost it
# (its epoch is gone or another) and it was not deleted since, and it has not expired.
# Returns {written, value or false, evicted}.
WRITEBACK = _NOW + _HELPERS + """
local current = redis.call('GET', KEYS[1])
if current then return {0, current, 0} end
if redis.call('EXISTS', KEYS[5]) == 1 then return {0, false, 0} end
local seen = redis.call('GET', KEYS[3])
if seen and seen == ARGV[3] then return {0, false, 0} end
local expires = tonumber(ARGV[2])
if expires <= now then return {0, false, 0} end
local pin, cap, quota, tag = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
""" + _EPOCH + _WRITE + "return {1, value, evicted}\n"

# KEYS: pin, index[, the session's lane set, the index of lane sets]. ARGV: ttl ms. A sliding-TTL
# hit: read, restart the TTL, move it in the indexes; the session's lane listing lives as long.
TOUCH = """
local value = redis.call('GET', KEYS[1])
if value then
""" + _NOW + """
  local expires = now + tonumber(ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', expires, KEYS[1])
  local tag = string.match(value, '^[^\\t]*\\t[^\\t]*\\t[^\\t]*\\t[^\\t]*\\t([^\\t]+)$')
  if tag then
    local tenant_index = string.sub(KEYS[2], 1, -5) .. ':t:' .. tag
    if redis.call('ZADD', tenant_index, 'XX', 'CH', expires, KEYS[1]) == 1 then
      redis.call('PEXPIRE', tenant_index, ARGV[1])  -- the newest expiry: lives as long as it
    end
  end
  if #KEYS >= 4 and redis.call('PEXPIRE', KEYS[3], ARGV[1]) == 1 then
    redis.call('ZADD', KEYS[4], 'XX', expires, KEYS[3])
  end
end
return value
"""

# KEYS: pin, index, deletion marker. ARGV: ttl ms. Removes the pin and leaves a marker for a
# session TTL, so no replica writes back a copy it still holds. Returns 1 if there was a pin.
DELETE = _HELPERS + """
local found = drop(KEYS[1])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
return found
"""

# KEYS: a session's lane set, the bucket's index of lane sets. ARGV: lane, ttl ms, cap of sets,
# most lanes per session. `add_lane` on its own: for a pin whose session set is in another
# slot (a cluster spreads them over buckets).
LANE = _NOW + _ADD_LANE + """
add_lane(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
return 1
"""

# KEYS: a session's lane set. Its lanes, oldest first.
LANES = """
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: a key, the index it is listed in. Removes both (a session's lane set from the index of
# lane sets, a stored response from its index). Returns 1 if the key was there.
UNINDEX = """
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
"""

# Stored Responses (`affinity/responses.py`). KEYS: record, index; ARGV: value, ttl ms, cap.
# Writes the record and trims the index to the cap as the pins' is (`trim`: the records closest
# to expiry go, the one written never, one DEL each however far the cap was lowered).
RESPONSE_PUT = _NOW + _HELPERS + """
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return trim(KEYS[2], tonumber(ARGV[3]))
"""

# KEYS: index. Sweeps expired members, returns the live ones.
COUNT = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: a probe key, a probe index (never pins). Runs every command the other scripts run, so a
# Redis user lacking one is found at start (-NOPERM), not on some later request.
CHECK = _NOW + """
redis.call('SET', KEYS[1], '1', 'NX', 'PX', 1000)
redis.call('GET', KEYS[1])
redis.call('EXISTS', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 1000)
redis.call('PEXPIREAT', KEYS[1], 1)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZADD', KEYS[2], 'XX', now, KEYS[1])
redis.call('ZSCORE', KEYS[2], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', 0)
redis.call('ZCARD', KEYS[2])
redis.call('ZPOPMIN', KEYS[2], 1)
redis.call('ZREMRANGEBYRANK', KEYS[2], 1, 0)
redis.call('ZRANGE', KEYS[2], 0, -1)
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


def sources() -> dict[str, str]:
    """Every script by the name the store calls it by."""
    return {"PIN": PIN, "REPIN": REPIN, "WRITEBACK": WRITEBACK, "TOUCH": TOUCH, "DELETE": DELETE,
            "LANE": LANE, "LANES": LANES, "UNINDEX": UNINDEX, "RESPONSE_PUT": RESPONSE_PUT,
            "COUNT": COUNT, "CHECK": CHECK}
