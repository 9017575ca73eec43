-- reserve.lua: hold credits for an operation (a pending transfer that expires on its own).
-- KEYS[1] account hash   KEYS[2] holds hash   KEYS[3] hold expiry zset   KEYS[4] idempotency key
-- KEYS[5] ledger stream   KEYS[6] expiring grants hash (expired grants leave before the check)
-- ARGV[1] clock offset ms   ARGV[2] reservation id   ARGV[3] user id (raw)   ARGV[4] amount (>= 1)
-- ARGV[5] operation type   ARGV[6] min balance to keep available   ARGV[7] hold TTL ms
-- ARGV[8] metadata JSON   ARGV[9] has idempotency key   ARGV[10] idempotency key (raw)
-- ARGV[11] idempotency TTL s   ARGV[12] account kind   ARGV[13] ledger backlog limit   ARGV[14] policy
-- ARGV[15] "1": apply the account's request-rate limit too (a gateway's hold)   ARGV[16] quantities
--   "name=n;..." checked against the account's quantity limits ('' = none)   ARGV[17] model or ""
-- Reply: { "ok"|"insufficient_credits"|"ledger_backlog_full"|"rate_limited", idempotent, reservation id,
--   amount, balance, held after, expires ms, retry-after ms, rate limit remaining or "" }
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
local av = redis.call('HMGET', acct, 'bal', 'gx', 'rl', 'tat', 'ql')
local bal = tonumber(av[1]) or 0
if av[2] then bal = grants_due(acct, KEYS[6], av[2], now, bal, held, stream, akind, aid, rid) end
local rl_tat, rl_left = nil, nil
if ARGV[15] == '1' then
  local rl_ok, rl_retry
  rl_ok, rl_tat, rl_retry, rl_left = gcra_known(av[3], av[4], now)
  if rl_ok == false then
    return { 'rate_limited', '0', '', '0', I(bal), I(held), '0', I(rl_retry), '0' }
  end
end
local q_ok, q_retry, q_writes = quantity_admit(acct, av[5], ARGV[16], ARGV[17] or '', now)
if not q_ok then
  return { 'rate_limited', '0', '', '0', I(bal), I(held), '0', I(q_retry), rl_left and I(rl_left) or '' }
end
if bal - held - amount < tonumber(ARGV[6]) then
  return { 'insufficient_credits', '0', '', '0', I(bal), I(held), '0' }
end
if redis.call('HEXISTS', holds, rid) == 1 then
  return redis.error_reply('reservation id already in use')
end
local expires = now + tonumber(ARGV[7])
held = held + amount
redis.call('HSET', acct, 'held', I(held))
if rl_tat then redis.call('HSET', acct, 'tat', I(rl_tat)) end
if q_writes then
  q_writes[#q_writes + 1] = 'qh|' .. rid
  q_writes[#q_writes + 1] = (ARGV[17] or '') .. '|' .. ARGV[16]
  redis.call('HSET', acct, unpack(q_writes))
end
redis.call('HSET', holds, rid, I(amount) .. '|' .. I(expires) .. '|' .. ARGV[5])
redis.call('ZADD', hexp, expires, rid)

ledger(stream, { 'id', rid, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', 'hold', 'amount', '0',
  'hold', I(amount), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', ARGV[5], 'idem', ARGV[10],
  'exp', I(expires), 'meta', ARGV[8] })

return remember(idem, ARGV[9], ARGV[11],
  { 'ok', '0', rid, I(amount), I(bal), I(held), I(expires), '0', rl_left and I(rl_left) or '' })
