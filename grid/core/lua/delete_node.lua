-- Remove a node record and its index entry, atomically. Returns 1 if the record existed.
-- KEYS[1] = the node record, KEYS[2] = the agent's node index (same hash tag); ARGV[1] = node id
local existed = redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return existed
