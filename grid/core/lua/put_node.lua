-- Create or replace a node record and its entry in its agent's index, atomically.
-- KEYS[1] = the node record, KEYS[2] = the agent's node index (same hash tag)
-- ARGV[1] = node id, ARGV[2] = index entry "<generation>:<status>:<pool>", ARGV[3..] = field, value, ...
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
