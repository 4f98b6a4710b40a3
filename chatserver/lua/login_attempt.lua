-- Count one password attempt unless a limit is reached. The check and the
-- count are one step, so parallel attempts cannot all pass the check before
-- the first of them is counted.
-- KEYS[1] the name's counter, KEYS[2] the address's counter.
-- ARGV[1] the name's limit, ARGV[2] the address's limit, ARGV[3] the window (s).
-- Returns 0 when the attempt was counted, else the seconds until one is allowed.
for i = 1, 2 do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[i]) then
    return math.max(1, redis.call('TTL', KEYS[i]))
  end
end
for i = 1, 2 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[3], 'NX')
end
return 0
