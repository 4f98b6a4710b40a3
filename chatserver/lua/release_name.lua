-- Release a name if this very connection still holds it.
-- KEYS[1] the name's key. ARGV[1] "user_id:node:conn_id".
-- Returns 1 if released, 0 if someone else holds it (or nobody).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
