-- Append one message to a room's log and publish it, atomically.
-- KEYS[1] the room's meta hash ({room}: epoch, top), KEYS[2] its stream,
-- KEYS[3] the message's idempotency key.
-- ARGV[1] channel, ARGV[2] message body (JSON without the id), ARGV[3] an epoch
-- to use if the room has none yet, ARGV[4] stream cap (0: none, -1: store
-- nothing), ARGV[5] seconds the idempotency key lives.
-- Returns {id, epoch, duplicate}: a retry with the same key returns the first
-- append's id and epoch with duplicate = 1, and neither stores nor publishes.
local seen = redis.call('GET', KEYS[3])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if seen and epoch then
  return {tonumber(seen), epoch, 1}
end
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local id = redis.call('HINCRBY', KEYS[1], 'top', 1)
local cap = tonumber(ARGV[4])
if cap > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', cap, id .. '-1', 'b', ARGV[2])
elseif cap == 0 then
  redis.call('XADD', KEYS[2], id .. '-1', 'b', ARGV[2])
end
redis.call('SET', KEYS[3], id, 'EX', tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[1], id .. '|' .. epoch .. '|' .. ARGV[2])
return {id, epoch, 0}
