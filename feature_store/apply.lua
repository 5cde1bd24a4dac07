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

-- Redis calls are most of this script's cost, so an update makes at most three kinds:
-- one HMGET of everything it compares with, HINCRBYs, and one HSET of what it sets.
local u = ARGV[1] ~= '' and cmsgpack.unpack(ARGV[1])
local seen
if not u then
  outcome = 'read'
  seen = tonumber(redis.call('HGET', key, 'seen'))
else
  local wanted = {'seen', u.off, u.id or 'seen'}
  local compared = {} -- op index -> index in `wanted` of the field's current value
  for i, op in ipairs(u.ops) do
    if op[1] == 'max' or op[1] == 'min' then
      wanted[#wanted + 1] = op[2]
      compared[i] = #wanted
    end
  end
  local current = redis.call('HMGET', key, unpack(wanted))
  seen = tonumber(current[1])
  local done = tonumber(current[2])
  if done and u.offset <= done then
    outcome = 'redelivered' -- Kafka delivered this message again: already in the state
  else
    local writes = {u.off, u.offset}
    if u.id and current[3] then
      outcome = 'duplicate' -- the same order/ticket sent twice by its producer
    else
      for i, op in ipairs(u.ops) do
        local kind, field, value = op[1], op[2], op[3]
        if kind == 'incr' then
          redis.call('HINCRBY', key, field, value)
        elseif kind == 'set' then
          writes[#writes + 1] = field
          writes[#writes + 1] = value
        else
          local now = tonumber(current[compared[i]])
          local candidate = tonumber(value)
          if not now or (kind == 'max' and candidate > now)
              or (kind == 'min' and candidate < now) then
            writes[#writes + 1] = field
            writes[#writes + 1] = value
          end
        end
      end
      if u.ts and (not seen or u.ts > seen) then
        seen = u.ts
        writes[#writes + 1] = 'seen'
        writes[#writes + 1] = u.ts_text
      end
      if u.day and day_of(seen) - u.day >= window then
        -- Older than every window (topics drift apart in event time, e.g. while a
        -- backlog is consumed): it counts in lifetime totals only; its tile is pruned.
        outcome = 'late'
      end
      -- Remember the id for a largest window of the customer's event time from now
      -- (not from the event's own time), so a late event's duplicate is caught too.
      if u.id then
        writes[#writes + 1] = u.id
        writes[#writes + 1] = day_of(seen)
      end
    end
    redis.call('HSET', key, unpack(writes))
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
