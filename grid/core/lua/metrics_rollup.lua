-- Add one source's summary of a pool's metrics at one tick to a roll-up bucket: one hash per
-- pool and bucket, fields <metric>|<f>, so buckets of any number of sources merge by adding.
-- KEYS[1] = the bucket. ARGV[1] = its expiry (ms), ARGV[2] = the sample time, then per
-- metric: name, 1 if it is this source's first write of the metric to the bucket, count,
-- total, min, max, c = the number of sketch cells, then c pairs (cell, count).
-- Fields per metric: n (values), s (their sum), w (writes), S (sources), lo, hi, t (latest
-- sample time) and one field per sketch cell (p<k>, m<k>, z), added to by HINCRBY: no field
-- is parsed here, so a write costs a few calls per metric and cell. Returns 1.
local key = KEYS[1]
local ts = tonumber(ARGV[2])
local at = 3
while at <= #ARGV do
  local m = ARGV[at]
  local lo, hi = ARGV[at + 4], ARGV[at + 5]
  redis.call('HINCRBY', key, m .. '|n', ARGV[at + 2])
  redis.call('HINCRBYFLOAT', key, m .. '|s', ARGV[at + 3])
  redis.call('HINCRBY', key, m .. '|w', 1)
  if ARGV[at + 1] == '1' then redis.call('HINCRBY', key, m .. '|S', 1) end
  local got = redis.call('HMGET', key, m .. '|lo', m .. '|hi', m .. '|t')
  if not got[1] or tonumber(lo) < tonumber(got[1]) then redis.call('HSET', key, m .. '|lo', lo) end
  if not got[2] or tonumber(hi) > tonumber(got[2]) then redis.call('HSET', key, m .. '|hi', hi) end
  if not got[3] or ts > tonumber(got[3]) then redis.call('HSET', key, m .. '|t', ARGV[2]) end
  local cells = tonumber(ARGV[at + 6])
  local c = at + 7
  for i = 0, cells - 1 do
    redis.call('HINCRBY', key, m .. '|' .. ARGV[c + 2 * i], ARGV[c + 2 * i + 1])
  end
  at = c + 2 * cells
end
redis.call('PEXPIRE', key, ARGV[1])
return 1
