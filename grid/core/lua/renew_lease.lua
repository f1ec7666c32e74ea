-- Renew a lease only while we hold it.
-- KEYS[1] = the lease key; ARGV[1] = our token, ARGV[2] = ttl in ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
