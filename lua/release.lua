-- release.lua: give a reservation's credits back without spending them (resolves a hold once).
-- KEYS[1] account hash   KEYS[2] holds hash   KEYS[3] hold expiry zset   KEYS[4] idempotency key
-- KEYS[5] ledger stream   KEYS[6] expiring grants hash (the released hold may free an expired grant)
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] user id (raw)   ARGV[4] reservation id
-- ARGV[5] has idempotency key   ARGV[6] idempotency key (raw)   ARGV[7] idempotency TTL s
-- ARGV[8] account kind
-- Reply: { "ok"|"reservation_not_found", idempotent, reservation id, amount released, balance, held after }
local acct, holds, hexp, idem, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local again = replay(idem, ARGV[5])
if again then return again end

local now = now_ms(ARGV[1])
local aid, rid, akind = ARGV[3], ARGV[4], ARGV[8]
local held = sweep_holds(acct, holds, hexp, now, stream, akind, aid)
local av = redis.call('HMGET', acct, 'bal', 'ql')
local bal = tonumber(av[1]) or 0
local h = redis.call('HGET', holds, rid)
if not h then
  return { 'reservation_not_found', '0', rid, '0', I(bal), I(held) }
end
local ha, _, op = string.match(h, '^(%d+)|(%d+)|(.*)$')
local amount = tonumber(ha)
held = held - amount
redis.call('HSET', acct, 'held', I(held))
redis.call('HDEL', holds, rid)
redis.call('ZREM', hexp, rid)
quantity_resolve(acct, av[2], rid, nil)  -- the hold's quantity estimate is given back
ledger(stream, { 'id', ARGV[2], 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', 'release', 'amount', '0',
  'hold', I(amount), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'idem', ARGV[6] })
local gx = redis.call('HGET', acct, 'gx')
if gx then bal = grants_due(acct, KEYS[6], gx, now, bal, held, stream, akind, aid, ARGV[2]) end

return remember(idem, ARGV[5], ARGV[7], { 'ok', '0', rid, I(amount), I(bal), I(held) })
