-- refund.lua: give back all or part of a debit (a charge or a settlement), ONCE: as in ducto 1.0, a
-- transaction that has been refunded (in full or in part) answers already_refunded, so a retried
-- refund call written for ducto (which has no idempotency key) can never pay out twice. The credits return in the form they were spent: first the part that came
-- from ordinary credits, then the parts that came from expiring grants (latest-expiring first), each
-- restored to its grant with the grant's original expiry (a grant already past it expires at once).
-- One ledger entry of kind 'refund' (amount positive, 'ref' = the original transaction id).
-- KEYS[1] the debit's refund record   KEYS[2] refund idempotency key   KEYS[3] ledger stream
-- KEYS[4] the shard's grant index   KEYS[5] account hash   KEYS[6] expiring grants hash
-- KEYS[7] holds hash   KEYS[8] hold expiry zset
-- ARGV[1] clock offset ms   ARGV[2] refund transaction id   ARGV[3] original transaction id
-- ARGV[4] user id (raw, as refund_find.lua read it)   ARGV[5] amount, or "" for the whole debit
-- ARGV[6] reason or ""   ARGV[7] metadata JSON   ARGV[8] has idempotency key   ARGV[9] idempotency key
-- ARGV[10] idempotency TTL s
-- Reply: { status, idempotent, refund transaction id, amount, new balance, user id }
--   status: ok | transaction_not_found | already_refunded | invalid_amount
local rf, idem, stream, gidx, acct, G, holds, hexp =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local again = replay(idem, ARGV[8])
if again then return again end

local uid = ARGV[4]
local rec = redis.call('GET', rf)
if not rec then return { 'transaction_not_found', '0', '', '0', '0', uid } end
local a, r, used, ruid = string.match(rec, '^(%d+)|(%d+)|([^|]*)|(.*)$')
if ruid ~= uid then return { 'transaction_not_found', '0', '', '0', '0', uid } end
a, r = tonumber(a), tonumber(r)
local bal0 = redis.call('HGET', acct, 'bal') or '0'
-- once: a record names its debit's refunded amount, 0 until the one refund
if r > 0 then return { 'already_refunded', '0', '', '0', bal0, uid } end
local x = ARGV[5] == '' and a or tonumber(ARGV[5])
if x > a then return { 'invalid_amount', '0', '', I(x), bal0, uid } end

local now = now_ms(ARGV[1])
local held = sweep_holds(acct, holds, hexp, now, stream, 'u', uid)
local av = redis.call('HMGET', acct, 'bal', 'gx')
local bal = grants_due(acct, G, av[2], now, tonumber(av[1]) or 0, held, stream, 'u', uid, ARGV[2])
if bal + x > MAX_SAFE then return { 'invalid_amount', '0', '', I(x), I(bal), uid } end

-- which grant parts this refund returns: units [0, x) of the debit, ordinary credits first,
-- then the grant parts in reverse order of consumption
local parts = {}
for gid, e, n in string.gmatch(used, '([^:;]+):(%d+):(%d+)') do
  parts[#parts + 1] = { gid, tonumber(e), tonumber(n) }
end
local pos = a
for _, p in ipairs(parts) do pos = pos - p[3] end
local back, back_s, earliest = {}, {}, nil
for i = #parts, 1, -1 do
  local p = parts[i]
  local lo, hi = pos, math.min(pos + p[3], x)
  if hi > lo then
    back[#back + 1] = { p[1], p[2], hi - lo }
    back_s[#back_s + 1] = p[1] .. ':' .. I(p[2]) .. ':' .. I(hi - lo)
  end
  pos = pos + p[3]
end

bal = bal + x
redis.call('HSET', acct, 'bal', I(bal))
redis.call('SET', rf, I(a) .. '|' .. I(x) .. '|' .. used .. '|' .. uid, 'KEEPTTL')
for _, g in ipairs(back) do
  local cur = redis.call('HGET', G, g[1])
  local rem = cur and tonumber(string.match(cur, '|(%d+)$')) or 0
  redis.call('HSET', G, g[1], I(g[2]) .. '|' .. I(rem + g[3]))
  if not earliest or g[2] < earliest then earliest = g[2] end
end
ledger(stream, { 'id', ARGV[2], 'ts', I(now), 'ak', 'u', 'acct', uid, 'kind', 'refund', 'amount', I(x),
  'bal', I(bal), 'held', I(held), 'type', 'refund', 'ref', ARGV[3], 'reason', ARGV[6], 'gr', table.concat(back_s, ';'),
  'idem', ARGV[9], 'meta', ARGV[7] })
if earliest then
  local gx = tonumber(redis.call('HGET', acct, 'gx'))
  if not gx or earliest < gx then
    redis.call('HSET', acct, 'gx', I(earliest))
    redis.call('ZADD', gidx, earliest, uid)
  end
  -- a part whose grant expiry has passed leaves again at once
  bal = grants_due(acct, G, redis.call('HGET', acct, 'gx'), now, bal, held, stream, 'u', uid, ARGV[2])
end

return remember(idem, ARGV[8], ARGV[10], { 'ok', '0', ARGV[2], I(x), I(bal), uid })
