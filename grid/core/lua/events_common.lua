-- Shared by events_append.lua and events_index.lua (prepended to each by grid.core.events.store).
-- An index key is a stream whose entry k lists, oldest first, the event ids in
-- (id of entry k-1, id of entry k]: field "ids" holds items separated by \31, each an event id,
-- followed in a bucketed index by \30 and the indexed value. Every index entry is written in
-- the same atomic step as the events it lists, so entry ids only grow.

local SEP, KV = '\31', '\30'

-- The oldest event id still in the stream: index entries older than it list only trimmed events.
local function floor_of(stream)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  return first[1] and first[1][1] or '0-1'
end

local function add_index(key, payload, last, floor)
  redis.call('XADD', key, 'MINID', '~', floor, last, 'ids', payload)
end
