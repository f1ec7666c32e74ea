-- Set fields of an existing node record and keep its index entry in step, atomically.
-- A record that is gone stays gone: a late writer never resurrects a removed node.
-- KEYS[1] = the node record, KEYS[2] = the agent's node index (same hash tag)
-- ARGV[1] = node id, ARGV[2..] = field, value, ...
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local entry = redis.call('HMGET', KEYS[1], 'generation', 'status', 'pool')
redis.call('HSET', KEYS[2], ARGV[1],
  (entry[1] or '0') .. ':' .. (entry[2] or '') .. ':' .. (entry[3] or ''))
return 1
