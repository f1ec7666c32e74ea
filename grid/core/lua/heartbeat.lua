-- One agent heartbeat, in one call: renew the agent's claim on its id, update its record and
-- return its own node index. Work is independent of the size of the grid.
-- KEYS[1] = the agent's lock, KEYS[2] = its record, KEYS[3] = its node index (same hash tag)
-- ARGV[1] = owner token, ARGV[2] = claim ttl in ms, ARGV[3..] = record field, value, ...
-- Returns {-1} if another process holds the id, {0} if the record is gone (re-register),
-- else {1, node id, entry, node id, entry, ...}.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return {-1}
end
if redis.call('EXISTS', KEYS[2]) == 0 then return {0} end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
local out = redis.call('HGETALL', KEYS[3])
table.insert(out, 1, 1)
return out
