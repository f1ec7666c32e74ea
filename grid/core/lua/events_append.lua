-- Store one event and index it, atomically (one round trip; usable in a caller's pipeline).
-- KEYS[1] = the stream, KEYS[2..] = the index keys of this event.
-- ARGV[1] = MAXLEN ~ of the stream, ARGV[2] = MINID ~ of the stream (ms), ARGV[3] = n,
-- ARGV[4..3+n] = field names, then n values, then one value per index key ('' for an exact
-- index such as the event type's). Returns the event id.
local stream = KEYS[1]
local n = tonumber(ARGV[3])
local entry = {}
for i = 1, n do
  entry[2 * i - 1] = ARGV[3 + i]
  entry[2 * i] = ARGV[3 + n + i]
end
local id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', unpack(entry))
redis.call('XTRIM', stream, 'MINID', '~', ARGV[2])
local floor = floor_of(stream)
for k = 2, #KEYS do
  local value = ARGV[3 + 2 * n + k - 1]
  add_index(KEYS[k], value == '' and id or (id .. KV .. value), id, floor)
end
return id
