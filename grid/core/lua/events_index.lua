-- Index the batch of events added by the XADDs queued just before this call in the same
-- MULTI, so they are the newest ARGV[1] entries of the stream, and trim the indexes to the
-- stream's oldest entry. KEYS[1] = the stream, KEYS[2..] = index keys; for KEYS[k],
-- ARGV[2k-2] = its items with \29<position in the batch> (1 = oldest) where the event id goes,
-- oldest first, and ARGV[2k-1] = the position of its newest item. One gsub per key fills in
-- the ids (in C: no Lua string per item). Returns the number of index entries written.
local stream = KEYS[1]
local count = tonumber(ARGV[1])
local rows = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', count)
local ids = {}
for i, row in ipairs(rows) do ids[tostring(count - i + 1)] = row[1] end
local floor = floor_of(stream)
for k = 2, #KEYS do
  local payload = string.gsub(ARGV[2 * k - 2], '\29(%d+)', ids)
  add_index(KEYS[k], payload, ids[ARGV[2 * k - 1]], floor)
end
return #KEYS - 1
