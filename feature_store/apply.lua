-- Apply one message's update to its customer atomically and idempotently, prune what
-- fell out of the largest window, and return the customer's whole state.
--
-- KEYS[1]  the customer's hash
-- ARGV[1]  MessagePack update: {off = "off:<topic>:<p>", offset = n, ts = seconds|nil,
--          ts_text = "...", day = n|nil, id = "#<source id>"|nil,
--          ops = {{op, field, value}, ...}}; empty to only read the state
-- ARGV[2]  largest window in days
-- Returns  {outcome, tiles, scalars}, without the script's bookkeeping (source ids,
--          offsets): tiles = {code1, day1, total1, code2, ...} with integer days and
--          totals, scalars = {field1, value1, ...} (text); outcome is one of
--          applied | redelivered | duplicate | late (applied, but older than every
--          window) | read
--
-- Values arrive as text and are passed to Redis untouched, so no float is re-printed
-- with Lua's 14 digits.

local key = KEYS[1]
local window = tonumber(ARGV[2])
local outcome = 'applied'

local function day_of(ts)
  return math.floor(ts / 86400)
end

local seen = tonumber(redis.call('HGET', key, 'seen'))

local u = ARGV[1] ~= '' and cmsgpack.unpack(ARGV[1])
local done = u and tonumber(redis.call('HGET', key, u.off))
if not u then
  outcome = 'read'
elseif done and u.offset <= done then
  outcome = 'redelivered' -- Kafka delivered this message again: already in the state
else
  redis.call('HSET', key, u.off, u.offset)
  if u.id and redis.call('HEXISTS', key, u.id) == 1 then
    outcome = 'duplicate' -- the same order/ticket sent twice by its producer
  else
    for _, op in ipairs(u.ops) do
      local kind, field, value = op[1], op[2], op[3]
      if kind == 'incr' then
        redis.call('HINCRBY', key, field, value)
      elseif kind == 'set' then
        redis.call('HSET', key, field, value)
      else
        local current = tonumber(redis.call('HGET', key, field))
        local candidate = tonumber(value)
        if not current or (kind == 'max' and candidate > current)
            or (kind == 'min' and candidate < current) then
          redis.call('HSET', key, field, value)
        end
      end
    end
    if u.ts and (not seen or u.ts > seen) then
      seen = u.ts
      redis.call('HSET', key, 'seen', u.ts_text)
    end
    if u.day and day_of(seen) - u.day >= window then
      -- Older than every window (topics drift apart in event time, e.g. while a
      -- backlog is consumed): it counts in lifetime totals only; its tile is pruned.
      outcome = 'late'
    end
    -- Remember the id for a largest window of the customer's event time from now
    -- (not from the event's own time), so a late event's duplicate is caught too.
    if u.id then redis.call('HSET', key, u.id, day_of(seen)) end
  end
end

local fields = redis.call('HGETALL', key)
local tiles, scalars = {}, {}
local first_day = seen and (day_of(seen) - window + 1)
local stale = {}
-- One pass, with plain finds and byte tests (a Lua pattern per field cost more than
-- everything else in this script).
for i = 1, #fields, 2 do
  local field, value = fields[i], fields[i + 1]
  if string.byte(field, 1) == 35 then -- '#': a source id; its value is its day
    if first_day and tonumber(value) < first_day then stale[#stale + 1] = field end
  else
    local at = string.find(field, '@', 1, true)
    if at then -- a tile: <code>@<day>
      local day = tonumber(string.sub(field, at + 1))
      if first_day and day < first_day then
        stale[#stale + 1] = field
      else
        tiles[#tiles + 1] = string.sub(field, 1, at - 1)
        tiles[#tiles + 1] = day
        tiles[#tiles + 1] = tonumber(value) -- an integer (HINCRBY): exact as a reply
      end
    elseif string.sub(field, 1, 4) ~= 'off:' then -- offsets are bookkeeping too
      scalars[#scalars + 1] = field
      scalars[#scalars + 1] = value
    end
  end
end
if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
return {outcome, tiles, scalars}
