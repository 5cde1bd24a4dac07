-- A fenced write to one partition's keys (all in one hash slot, see keys.py).
--
-- KEYS[1]  the partition's meta hash; for `commit` also KEYS[2] its schedule (sorted
--          set), KEYS[3..] the state keys to write, in ARGV order, then the state keys
--          of erased customers, to delete, then the tally keys, in header order, then
--          the pending samples (sorted set), and last the work-list's index (sorted
--          set), entries and paths (hashes)
-- ARGV[1]  'begin' | 'commit'
-- ARGV[2]  the writer's epoch
-- ARGV[3]  MessagePack: {previous = {topic = "offset"}, offsets = {topic = "offset"},
--          stream_time = "seconds" | nil, erased = number of erased customers | nil,
--          schedule = {"due", customer, "due", customer, ...} (flat: ZADD's order),
--          unscheduled = {customer, ...},
--          samples = {"due", member, ...}, decided = {member, ...},
--          listed = {customer, "score", fresh (1/0), ...} (flat; each one's entry and
--          steps are ARGV after the tallies'),
--          unlisted = {customer, ...}, list_size = n, path_bytes = n,
--          states = number of states, tallies = {{ttl, how, amounts}, ...}}: how is
--          'add' (a MessagePack map: the amounts in the next ARGV after the states and
--          earlier tallies' are added to it), 'whole' (that ARGV is its new value) or
--          'each' (a hash: each of `amounts` added to its field)
-- ARGV[4..] for `begin`, the batch's last offsets (kept as given, for the next owner);
--          for `commit`, the customers' states, in KEYS order, then the tallies',
--          then each listed customer's entry and steps
-- Returns  'committed' | 'fenced' (a later epoch claimed the partition) | 'diverged'
--          (the store no longer holds what the writer last committed); a commit that
--          added to tallies returns {'committed', for each: its new value, or false
--          when it had none (its value is what was added)}
--
-- Every kind of write is one command for the whole batch (MSET, DEL, ZADD, ZREM, in
-- chunks): a command called from a script costs microseconds whatever it carries.
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

-- `command` over the items from `first` to `last`, a chunk at a time (a script's
-- stack holds a few thousand values); `step` keeps pairs together.
local function each_chunk(command, key, items, first, last)
  local step = 1000
  for i = first, last, step do
    local j = math.min(i + step - 1, last)
    if key then
      redis.call(command, key, unpack(items, i, j))
    else
      redis.call(command, unpack(items, i, j))
    end
  end
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

local written = batch.states or 0
local deleted = batch.erased or 0
if written > 0 then
  local pairs_ = {}
  for i = 1, written do
    pairs_[2 * i - 1] = KEYS[2 + i]
    pairs_[2 * i] = ARGV[3 + i]
  end
  each_chunk('MSET', nil, pairs_, 1, #pairs_)
end
if deleted > 0 then
  each_chunk('DEL', nil, KEYS, 3 + written, 2 + written + deleted)
end
local reply = {'committed'}
local next_arg = 3 + written
for j, tally in ipairs(batch.tallies or {}) do
  local key, ttl, how = KEYS[2 + written + deleted + j], tally[1], tally[2]
  if how == 'each' then
    for field, amount in pairs(tally[3]) do
      redis.call('HINCRBYFLOAT', key, field, amount)
    end
    redis.call('EXPIRE', key, ttl)
  else
    next_arg = next_arg + 1
    local value = ARGV[next_arg]
    if how == 'add' then
      local current = redis.call('GET', key)
      if current then
        local counters = cmsgpack.unpack(current)
        for field, amount in pairs(cmsgpack.unpack(value)) do
          counters[field] = (counters[field] or 0) + amount
        end
        value = cmsgpack.pack(counters)
        reply[#reply + 1] = value
      else
        reply[#reply + 1] = false
      end
    end
    redis.call('SET', key, value, 'EX', ttl)
  end
end
local function move(key, added, removed)
  if added and #added > 0 then each_chunk('ZADD', key, added, 1, #added) end
  if removed and #removed > 0 then each_chunk('ZREM', key, removed, 1, #removed) end
end
move(KEYS[#KEYS - 3], batch.samples, batch.decided)

-- The work-list: list, append to paths (keeping their last path_bytes), unlist, and
-- drop the lowest past list_size.
local index, entries, paths = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
local listed = batch.listed or {}
for i = 1, #listed, 3 do
  local customer, entry, steps = listed[i], ARGV[next_arg + 1], ARGV[next_arg + 2]
  next_arg = next_arg + 2
  local path = listed[i + 2] == 1 and '' or (redis.call('HGET', paths, customer) or '')
  path = path .. steps
  if #path > batch.path_bytes then path = string.sub(path, #path - batch.path_bytes + 1) end
  redis.call('ZADD', index, listed[i + 1], customer)
  redis.call('HSET', entries, customer, entry)
  redis.call('HSET', paths, customer, path)
end
local function unlist(customers)
  if #customers == 0 then return end
  each_chunk('ZREM', index, customers, 1, #customers)
  each_chunk('HDEL', entries, customers, 1, #customers)
  each_chunk('HDEL', paths, customers, 1, #customers)
end
unlist(batch.unlisted or {})
if #listed > 0 then
  local over = redis.call('ZCARD', index) - (batch.list_size or 0)
  if over > 0 then
    unlist(redis.call('ZRANGE', index, 0, over - 1))
  end
end
move(KEYS[2], batch.schedule, batch.unscheduled)
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
if #reply == 1 then return 'committed' end
return reply
