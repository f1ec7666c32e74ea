-- Add one source's summary of a pool's metrics at one tick to a roll-up bucket: one hash per
-- pool and bucket, fields <metric>|<f>, so buckets of any number of sources merge by adding.
-- KEYS[1] = the bucket. ARGV[1] = its expiry (ms), ARGV[2] = the sample time, then per metric
-- seven values: name, 1 if it is this source's first write of the metric to the bucket,
-- count, total, min, max, sketch (Sketch.encode: "k:c,...;k:c,...;zeros").
-- Fields per metric: n (values), s (their sum), w (writes), S (sources), lo, hi, t (latest
-- sample time), q (the merged sketch). Returns 1.
local key = KEYS[1]

local function cells(text, into)
  local parts = {}
  for part in string.gmatch(text .. ';', '([^;]*);') do parts[#parts + 1] = part end
  for side = 1, 2 do
    for k, c in string.gmatch(parts[side] or '', '([^,:]+):(%d+)') do
      local t = into[side]
      t[k] = (t[k] or 0) + tonumber(c)
    end
  end
  into[3] = into[3] + (tonumber(parts[3]) or 0)
end

local function encode(merged)
  local out = {}
  for side = 1, 2 do
    local items = {}
    for k, c in pairs(merged[side]) do items[#items + 1] = k .. ':' .. string.format('%d', c) end
    out[side] = table.concat(items, ',')
  end
  return out[1] .. ';' .. out[2] .. ';' .. string.format('%d', merged[3])
end

local ts = tonumber(ARGV[2])
for at = 3, #ARGV, 7 do
  local m = ARGV[at]
  local count, total, lo, hi, sketch = ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6]
  redis.call('HINCRBY', key, m .. '|n', count)
  redis.call('HINCRBYFLOAT', key, m .. '|s', total)
  redis.call('HINCRBY', key, m .. '|w', 1)
  if ARGV[at + 1] == '1' then redis.call('HINCRBY', key, m .. '|S', 1) end
  local got = redis.call('HMGET', key, m .. '|lo', m .. '|hi', m .. '|t', m .. '|q')
  if not got[1] or tonumber(lo) < tonumber(got[1]) then redis.call('HSET', key, m .. '|lo', lo) end
  if not got[2] or tonumber(hi) > tonumber(got[2]) then redis.call('HSET', key, m .. '|hi', hi) end
  if not got[3] or ts > tonumber(got[3]) then redis.call('HSET', key, m .. '|t', ARGV[2]) end
  if got[4] then
    local merged = {{}, {}, 0}
    cells(got[4], merged)
    cells(sketch, merged)
    redis.call('HSET', key, m .. '|q', encode(merged))
  else
    redis.call('HSET', key, m .. '|q', sketch)
  end
end
redis.call('PEXPIRE', key, ARGV[1])
return 1
