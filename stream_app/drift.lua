-- Compare-and-set of the drift monitor's alert book (one hash: one slot, see keys.py).
--
-- KEYS[1]  the book
-- ARGV[1]  the `cursor` the writer read ('' for none yet)
-- ARGV[2..] field, value, field, value, ... to set (the new `cursor` among them)
-- Returns  1 if set, 0 if another writer had moved the cursor first
if (redis.call('HGET', KEYS[1], 'cursor') or '') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
