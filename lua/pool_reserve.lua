-- pool_reserve.lua: hold team credits for a member's long job (reserve_team); expires on its own.
-- The member's cap counts their open holds, so two-phase spending cannot bypass it.
-- KEYS: as pool_debit.lua (14 keys)
-- ARGV[1] clock offset ms   ARGV[2] reservation id   ARGV[3] team id (raw)   ARGV[4] member id (raw)
-- ARGV[5] amount   ARGV[6] operation type   ARGV[7] hold TTL ms   ARGV[8] metadata JSON
-- ARGV[9] has idempotency key   ARGV[10] idempotency key (raw)   ARGV[11] idempotency TTL s
-- ARGV[12] ledger backlog limit   ARGV[13] backlog policy
-- Reply: { status, idempotent, reservation id, amount, team balance, held after, expires ms }
local TK = team_keys(KEYS)
local again = replay(TK.idem, ARGV[9])
if again then return again end
if backlog_full(TK.stream, ARGV[12], ARGV[13]) then
  return { 'ledger_backlog_full', '0', '', '0', '0', '0', '0' }
end
local now = now_ms(ARGV[1])
local rid, tid, uid = ARGV[2], ARGV[3], ARGV[4]
local amount = tonumber(ARGV[5])
local av = redis.call('HMGET', TK.acct, 'bal', 'held', 'created')
if not av[3] then return { 'team_not_found', '0', '', '0', '0', '0', '0' } end
local bal = tonumber(av[1]) or 0
local m = member_get(TK.members, uid)
if not m then return { 'user_not_in_team', '0', '', '0', I(bal), av[2] or '0', '0' } end
local held = sweep_team_holds(TK, now, tid, tonumber(av[2]) or 0, bal)
if m.cap ~= nil and m.cap ~= cjson.null then
  local spent, mheld = member_usage(TK, uid, m.period, now)
  if spent + mheld + amount > tonumber(m.cap) then
    return { 'spend_cap_exceeded', '0', '', '0', I(bal), I(held), '0' }
  end
end
if bal - held - amount < 0 then
  return { 'insufficient_team_balance', '0', '', '0', I(bal), I(held), '0' }
end
if redis.call('HEXISTS', TK.holds, rid) == 1 then
  return redis.error_reply('reservation id already in use')
end
local expires = now + tonumber(ARGV[7])
held = held + amount
redis.call('HSET', TK.acct, 'held', I(held))
redis.call('HSET', TK.holds, rid, cjson.encode({ a = I(amount), e = I(expires), m = uid, o = ARGV[6] }))
redis.call('ZADD', TK.hexp, expires, rid)
redis.call('HINCRBY', TK.mheld, uid, amount)
ledger(TK.stream, { 'id', rid, 'ts', I(now), 'ak', 't', 'acct', tid, 'member', uid, 'kind', 'hold',
  'amount', '0', 'hold', I(amount), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', ARGV[6],
  'idem', ARGV[10], 'exp', I(expires), 'meta', ARGV[8] })
return remember(TK.idem, ARGV[9], ARGV[11], { 'ok', '0', rid, I(amount), I(bal), I(held), I(expires) })
