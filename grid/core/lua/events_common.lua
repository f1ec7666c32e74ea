-- Shared by events_append.lua and events_index.lua (prepended to each by grid.core.events.store).
-- An index key is a stream whose entry k lists, oldest first, the event ids in
-- (id of entry k-1, id of entry k]: field "ids" holds items separated by \31, each an event id,
-- optionally followed by \30 and the indexed value (bucketed indexes hold several values).

local SEP, KV = '\31', '\30'

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_less(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as < bs)
end

local function item_id(item)
  local cut = string.find(item, KV, 1, true)
  return cut and string.sub(item, 1, cut - 1) or item
end

local function split(payload)
  local items = {}
  for item in string.gmatch(payload, '[^' .. SEP .. ']+') do items[#items + 1] = item end
  return items
end

-- Append `payload` (items sorted oldest first, from event `first` to event `last`) to index
-- `key`. The normal case is one XADD whose id is `last`. When another writer already wrote a
-- newer entry (two batches interleaved), the entries from `first` on are merged with ours into
-- one entry past the top, which keeps entry k's events inside (id of entry k-1, id of entry k].
local function add_index(key, payload, first, last, floor)
  local ok = redis.pcall('XADD', key, 'MINID', '~', floor, last, 'ids', payload)
  if type(ok) ~= 'table' or not ok.err then return end
  local all = split(payload)
  for _, row in ipairs(redis.call('XRANGE', key, first, '+')) do
    redis.call('XDEL', key, row[1])
    local fields = row[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'ids' then
        for _, item in ipairs(split(fields[j + 1])) do all[#all + 1] = item end
      end
    end
  end
  table.sort(all, function(a, b) return id_less(item_id(a), item_id(b)) end)
  local info = redis.call('XINFO', 'STREAM', key)
  local top
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then top = info[j + 1] end
  end
  local ms, seq = parse_id(top)
  local id = string.format('%.0f-%.0f', ms, seq + 1)
  redis.call('XADD', key, 'MINID', '~', floor, id, 'ids', table.concat(all, SEP))
end

-- The oldest event id still in the stream: index entries older than it list only trimmed events.
local function floor_of(stream)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  return first[1] and first[1][1] or '0-1'
end
