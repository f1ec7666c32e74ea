-- Index the batch of events added by the XADDs queued just before this call in the same
-- MULTI, so they are the newest ARGV[1] entries of the stream, and trim the indexes to the
-- stream's oldest entry. KEYS[1] = the stream, KEYS[2..] = index keys; ARGV[k] = the items
-- of KEYS[k]: positions in the batch (1 = oldest), oldest first, each followed by \30 and
-- the value in a bucketed index, joined by \31. Returns the number of index entries written.
local stream = KEYS[1]
local count = tonumber(ARGV[1])
local rows = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', count)
local ids = {}
for i, row in ipairs(rows) do ids[count - i + 1] = row[1] end
local floor = floor_of(stream)
for k = 2, #KEYS do
  local out, last = {}, nil
  for pos, rest in string.gmatch(ARGV[k], '(%d+)([^' .. SEP .. ']*)') do
    last = ids[tonumber(pos)]
    out[#out + 1] = last .. rest
  end
  add_index(KEYS[k], table.concat(out, SEP), last, floor)
end
return #KEYS - 1
