-- Extend a name claim if this connection still holds it, or retake it if it
-- lapsed (a Redis that lost its data, a long pause).
-- KEYS[1] the name's key. ARGV[1] "user_id:node:conn_id", ARGV[2] seconds.
-- Returns 1 if the connection holds the name afterwards, else 0.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return 1
end
return 0
