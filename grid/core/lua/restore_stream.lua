-- Append stream entries in one call (restoring a backup): ARGV holds, for each entry, its
-- id, the number of its fields and values, then those. KEYS[1]: the stream.
local i, n = 1, #ARGV
while i <= n do
  local count = tonumber(ARGV[i + 1])
  local args = {}
  for j = 1, count do
    args[j] = ARGV[i + 1 + j]
  end
  redis.call('XADD', KEYS[1], ARGV[i], unpack(args))
  i = i + 2 + count
end
return n
