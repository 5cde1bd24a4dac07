-- A fenced write to one partition's keys (all in one hash slot, see keys.py).
--
-- KEYS[1]  the partition's meta hash; for `commit` also KEYS[2] its schedule (sorted
--          set), KEYS[3..] the state keys to write, in ARGV order, then the state keys
--          of erased customers, to delete, then the tally hashes, in header order,
--          and last the pending samples (sorted set)
-- ARGV[1]  'begin' | 'commit'
-- ARGV[2]  the writer's epoch
-- ARGV[3]  MessagePack: {previous = {topic = "offset"}, offsets = {topic = "offset"},
--          stream_time = "seconds" | nil, schedule = {{customer, "due" | false}, ...},
--          tallies = {{ttl, {field, "amount", field, "amount", ...}}, ...},
--          samples = {{member, "due" | false}, ...},
--          states = number of states, erased = number of erased customers}
-- ARGV[4..] for `begin`, the batch's last offsets (kept as given, for the next owner);
--          for `commit`, the customers' states, in KEYS order
-- Returns  'committed' | 'fenced' (a later epoch claimed the partition) | 'diverged'
--          (the store no longer holds what the writer last committed)
local meta = KEYS[1]
local epoch = tonumber(ARGV[2])
local batch = cmsgpack.unpack(ARGV[3])
local stored = tonumber(redis.call('HGET', meta, 'epoch') or '0')

local function holds(offsets)
  for topic, offset in pairs(offsets) do
    if tonumber(redis.call('HGET', meta, 'off:' .. topic) or '-1') ~= tonumber(offset) then
      return false
    end
  end
  return true
end

if ARGV[1] == 'commit' and stored == epoch and holds(batch.offsets) then
  return 'committed' -- already: the reply to an earlier try was lost
end
if stored > epoch then return 'fenced' end
if stored < epoch or not holds(batch.previous) then return 'diverged' end

if ARGV[1] == 'begin' then
  redis.call('HSET', meta, 'flight', ARGV[4])
  return 'committed'
end

local written = #ARGV - 3
local deleted = batch.erased or 0
for i = 3, 2 + written + deleted do
  if i - 2 <= written then
    redis.call('SET', KEYS[i], ARGV[i + 1])
  else
    redis.call('DEL', KEYS[i])
  end
end
for j, tally in ipairs(batch.tallies or {}) do
  local key = KEYS[2 + written + deleted + j]
  local amounts = tally[2]
  for k = 1, #amounts, 2 do
    redis.call('HINCRBYFLOAT', key, amounts[k], amounts[k + 1])
  end
  redis.call('EXPIRE', key, tally[1])
end
for _, entry in ipairs(batch.samples or {}) do
  if entry[2] then
    redis.call('ZADD', KEYS[#KEYS], entry[2], entry[1])
  else
    redis.call('ZREM', KEYS[#KEYS], entry[1])
  end
end
for _, entry in ipairs(batch.schedule) do
  if entry[2] then
    redis.call('ZADD', KEYS[2], entry[2], entry[1])
  else
    redis.call('ZREM', KEYS[2], entry[1])
  end
end
local fields = {}
for topic, offset in pairs(batch.offsets) do
  fields[#fields + 1] = 'off:' .. topic
  fields[#fields + 1] = offset
end
if batch.stream_time then
  fields[#fields + 1] = 'st'
  fields[#fields + 1] = batch.stream_time
end
redis.call('HSET', meta, unpack(fields))
redis.call('HDEL', meta, 'flight')
return 'committed'
