-- Claim a name for one connection of a user.
-- KEYS[1] the name's key. ARGV[1] "user_id:node:conn_id", ARGV[2] the user id,
-- ARGV[3] seconds the claim lives unless refreshed.
-- Returns 1 when the caller now holds the name (free, or held by another
-- connection of the same user, which hands it over), else 0.
local holder = redis.call('GET', KEYS[1])
if holder and string.match(holder, '^[^:]*') ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
return 1
