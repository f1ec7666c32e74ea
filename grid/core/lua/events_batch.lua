-- Store and index a batch of events in one atomic call (the buffered writer's round trip).
-- KEYS[1] = the stream, KEYS[2..] = index keys.
-- ARGV[1] = MAXLEN ~ of the stream, ARGV[2] = MINID ~ of the stream (ms), ARGV[3] = f, the
-- number of fields, ARGV[4..3+f] = their names, ARGV[4+f] = n, the number of events, then
-- n * f values, event after event; then for each index key, in KEYS order, its items (each
-- the event's 0-based position in the batch, then \30 and the value in a bucketed index,
-- separated by \31, oldest first) and the position of its newest item.
--
-- The first event gets an id from XADD '*' (ms-seq, past anything the stream ever held); the
-- others get ms-(seq+k), consecutive in that millisecond and so still increasing. An index
-- entry then names its events by position against the batch's first id (field "base"):
-- nothing to read back and no per-item string work here. Returns the number of events.
local stream = KEYS[1]
local f = tonumber(ARGV[3])
local n = tonumber(ARGV[4 + f])
local at = 4 + f
local entry = {}
for i = 1, f do entry[2 * i - 1] = ARGV[3 + i] end
for i = 1, f do entry[2 * i] = ARGV[at + i] end
local base = redis.call('XADD', stream, '*', unpack(entry))
local ms, seq = string.match(base, '^(%d+)-(%d+)$')
seq = tonumber(seq)
for k = 1, n - 1 do
  local off = at + k * f
  for i = 1, f do entry[2 * i] = ARGV[off + i] end
  redis.call('XADD', stream, ms .. '-' .. string.format('%.0f', seq + k), unpack(entry))
end
redis.call('XTRIM', stream, 'MAXLEN', '~', ARGV[1])
redis.call('XTRIM', stream, 'MINID', '~', ARGV[2])
local floor = floor_of(stream)
local arg = at + n * f
for k = 2, #KEYS do
  local newest = ms .. '-' .. string.format('%.0f', seq + tonumber(ARGV[arg + 2]))
  redis.call('XADD', KEYS[k], 'MINID', '~', floor, newest, 'ids', ARGV[arg + 1], 'base', base)
  arg = arg + 2
end
return n
