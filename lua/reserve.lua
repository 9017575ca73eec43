-- reserve.lua: hold credits for an operation (a pending transfer that expires on its own).
-- KEYS[1] account hash   KEYS[2] holds hash   KEYS[3] hold expiry zset   KEYS[4] idempotency key
-- KEYS[5] ledger stream   KEYS[6] expiring grants hash (expired grants leave before the check)
-- ARGV[1] clock offset ms   ARGV[2] reservation id   ARGV[3] user id (raw)   ARGV[4] amount (>= 1)
-- ARGV[5] operation type   ARGV[6] min balance to keep available   ARGV[7] hold TTL ms
-- ARGV[8] metadata JSON   ARGV[9] has idempotency key   ARGV[10] idempotency key (raw)
-- ARGV[11] idempotency TTL s   ARGV[12] account kind   ARGV[13] ledger backlog limit   ARGV[14] policy
-- Reply: { "ok"|"insufficient_credits"|"ledger_backlog_full", idempotent, reservation id, amount, balance, held after, expires ms }
local acct, holds, hexp, idem, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local again = replay(idem, ARGV[9])
if again then return again end

if backlog_full(stream, ARGV[13], ARGV[14]) then
  return { 'ledger_backlog_full', '0', '', '0', '0', '0', '0' }
end
local now = now_ms(ARGV[1])
local rid, aid, akind = ARGV[2], ARGV[3], ARGV[12]
local amount = tonumber(ARGV[4])
local held = sweep_holds(acct, holds, hexp, now, stream, akind, aid)
local av = redis.call('HMGET', acct, 'bal', 'gx')
local bal = tonumber(av[1]) or 0
if av[2] then bal = grants_due(acct, KEYS[6], av[2], now, bal, held, stream, akind, aid, rid) end
if bal - held - amount < tonumber(ARGV[6]) then
  return { 'insufficient_credits', '0', '', '0', I(bal), I(held), '0' }
end
if redis.call('HEXISTS', holds, rid) == 1 then
  return redis.error_reply('reservation id already in use')
end
local expires = now + tonumber(ARGV[7])
held = held + amount
redis.call('HSET', acct, 'held', I(held))
redis.call('HSET', holds, rid, I(amount) .. '|' .. I(expires) .. '|' .. ARGV[5])
redis.call('ZADD', hexp, expires, rid)

ledger(stream, { 'id', rid, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', 'hold', 'amount', '0',
  'hold', I(amount), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', ARGV[5], 'idem', ARGV[10],
  'exp', I(expires), 'meta', ARGV[8] })

return remember(idem, ARGV[9], ARGV[11], { 'ok', '0', rid, I(amount), I(bal), I(held), I(expires) })
