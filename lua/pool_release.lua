-- pool_release.lua: give a team reservation's credits back to the pool without spending them.
-- KEYS: as pool_debit.lua (14 keys)
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] team id (raw)   ARGV[4] member id (raw)
-- ARGV[5] reservation id   ARGV[6] has idempotency key   ARGV[7] idempotency key (raw)
-- ARGV[8] idempotency TTL s
-- Reply: { status, idempotent, reservation id, amount released, team balance, held after }
local TK = team_keys(KEYS)
local again = replay(TK.idem, ARGV[6])
if again then return again end
local now = now_ms(ARGV[1])
local tid, uid, rid = ARGV[3], ARGV[4], ARGV[5]
local av = redis.call('HMGET', TK.acct, 'bal', 'held', 'created')
if not av[3] then return { 'team_not_found', '0', rid, '0', '0', '0' } end
local bal = tonumber(av[1]) or 0
local held = sweep_team_holds(TK, now, tid, tonumber(av[2]) or 0, bal)
local raw = redis.call('HGET', TK.holds, rid)
local amount, expires, member, op
if raw then amount, expires, member, op = team_hold_decode(raw) end
if not raw or member ~= uid then return { 'reservation_not_found', '0', rid, '0', I(bal), I(held) } end
held = held - amount
redis.call('HSET', TK.acct, 'held', I(held))
team_hold_drop(TK, rid, uid, amount)
ledger(TK.stream, { 'id', ARGV[2], 'ts', I(now), 'ak', 't', 'acct', tid, 'member', uid, 'kind', 'release',
  'amount', '0', 'hold', I(amount), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'idem', ARGV[7] })
return remember(TK.idem, ARGV[6], ARGV[8], { 'ok', '0', rid, I(amount), I(bal), I(held) })
