-- Set fields of a hash only if it exists, so a late writer never resurrects a removed record.
-- KEYS[1] = the hash; ARGV = field, value, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
