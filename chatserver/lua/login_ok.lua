-- A password attempt was right: forget the name's failures and give the
-- address back the attempt login_attempt.lua counted (never below zero, and
-- never a counter without an expiry).
-- KEYS[1] the name's counter, KEYS[2] the address's counter.
-- Returns the address's count left.
redis.call('DEL', KEYS[1])
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
if count > 0 then
  return redis.call('DECR', KEYS[2])
end
return 0
