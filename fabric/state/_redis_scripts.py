"""Lua scripts of the Redis backend: each one touches the keys of one hash slot only.

Every check-and-write runs inside one script, so it is atomic on the server (Redis runs a
script to completion before anything else, and in Redis 7 a script sees one frozen clock, so a
lease cannot expire half-way through a check). Scripts answer ``{status, number}``; the status
strings are the ``code`` of the error in ``fabric/errors.py`` (or ``ok``), so the Python side
maps them without a table of its own.

Key roles (see ``_redis.py`` for the names): ``v`` value, ``ver`` highest version ever
written, ``lease`` = ``"<token>:<owner>"`` with a PX expiry, ``fence`` = last token issued,
never expiring. For a blob: ``data`` and ``holds`` (hash holder -> count).
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE",
    "BLOB_DROP",
    "BLOB_HOLD",
    "BLOB_OPEN",
    "BLOB_SHARE",
    "DELETE",
    "PUT",
    "RELEASE",
    "RELEASE_OWNER",
    "RENEW",
]

# The fencing rule of _lease.py, word for word: a never-leased key takes no token; a leased
# key takes exactly its last token, and only while that lease is live.
_FENCING = """
local function fencing(fence_key, lease_key, token)
  local fence = tonumber(redis.call('GET', fence_key) or '0')
  if fence == 0 then
    if token ~= '' then return 'fenced' end
    return nil
  end
  if token == '' or tonumber(token) ~= fence then return 'fenced' end
  local cur = redis.call('GET', lease_key)
  if not cur then return 'lease_expired' end
  if tonumber(string.match(cur, '^(%d+):')) ~= fence then return 'fenced' end
  return nil
end
"""

#: KEYS v ver lease fence; ARGV value expect token ('' = none) -> {status, version}
PUT = (
    _FENCING
    + """
local err = fencing(KEYS[4], KEYS[3], ARGV[3])
if err then return {err, 0} end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local cur = 0
if redis.call('EXISTS', KEYS[1]) == 1 then cur = last end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= cur then return {'conflict', cur} end
last = last + 1
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], last)
return {'ok', last}
"""
)

#: KEYS v ver lease fence; ARGV expect token -> {status, version}
DELETE = (
    _FENCING
    + """
local err = fencing(KEYS[4], KEYS[3], ARGV[2])
if err then return {err, 0} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', 0} end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= cur then return {'conflict', cur} end
redis.call('DEL', KEYS[1])
return {'ok', cur}
"""
)

#: KEYS lease fence; ARGV owner ttl_ms -> {status, token}; lease_held answers the holder.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder = string.match(cur, '^%d+:(.*)$')
  if holder ~= ARGV[1] then return {'lease_held', holder} end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return {'ok', token}
"""

#: KEYS lease fence; ARGV token ttl_ms -> {status, 0}
RENEW = (
    _FENCING
    + """
local err = fencing(KEYS[2], KEYS[1], ARGV[1])
if err then return {err, 0} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'ok', 0}
"""
)

#: KEYS lease; ARGV token -> 1 if the live lease carried that token and is now gone
RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(string.match(cur, '^(%d+):')) == tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

#: KEYS lease; ARGV owner -> 1 if the live lease belonged to owner and is now gone
RELEASE_OWNER = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^%d+:(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

#: KEYS data holds; ARGV holder -> 1 if the blob exists and holder got one more hold
BLOB_HOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

#: KEYS data holds; ARGV holder bytes -> 1 (stores the bytes only if absent)
BLOB_SHARE = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

#: KEYS data holds; ARGV holder -> the bytes (one more hold), or nil if no such blob
BLOB_OPEN = """
local data = redis.call('GET', KEYS[1])
if not data then return nil end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return data
"""

#: KEYS data holds; ARGV holder all('1' drops every hold) -> holds left for holder, -1 if none
BLOB_DROP = """
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if n == 0 then return -1 end
local left = n - 1
if ARGV[2] == '1' then left = 0 end
if left == 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], left)
end
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
return left
"""
