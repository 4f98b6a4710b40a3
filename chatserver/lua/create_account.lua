-- Register a name: create its account hash unless the name has one.
-- KEYS[1] the account's key. ARGV field, value, field, value, ...
-- Returns 1 when created, 0 when the name is registered already.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
