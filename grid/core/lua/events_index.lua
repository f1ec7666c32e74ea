-- Index a batch of events that the same writer added to the stream one round trip earlier,
-- trimming each index to the stream's oldest entry as it goes.
-- KEYS[1] = the stream, KEYS[2..] = index keys; for KEYS[k], ARGV[3k-5..3k-3] = its first
-- event id, its last event id and its items joined by \31 (see events_common.lua).
-- Returns the number of index entries written.
local floor = floor_of(KEYS[1])
for k = 2, #KEYS do
  local at = 3 * (k - 2)
  add_index(KEYS[k], ARGV[at + 3], ARGV[at + 1], ARGV[at + 2], floor)
end
return #KEYS - 1
