-- add_credits.lua: credit a user's balance (amount 0 only creates the record).
-- With expires_at (users only) the credit is an expiring grant: it leaves the balance at that time if
-- unspent (see lib.lua grants_*); the account joins its shard's grant index.
-- KEYS[1] account hash   KEYS[2] idempotency key   KEYS[3] ledger stream
-- KEYS[4] expiring grants hash   KEYS[5] the shard's grant index (accounts by earliest expiry)
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] user id (raw)   ARGV[4] amount (>= 0)
-- ARGV[5] transaction type   ARGV[6] counts toward lifetime_purchased ("1"/"0")   ARGV[7] metadata JSON
-- ARGV[8] has idempotency key ("1"/"0")   ARGV[9] idempotency key (raw)   ARGV[10] idempotency TTL s
-- ARGV[11] expires_at ms or ""   ARGV[12] account kind ("u"; "t" for a team top-up)
-- ARGV[13] "1" when the account must already exist (team top-up), else "0" or absent
-- Reply: { "ok"|"invalid_amount"|"team_not_found", idempotent, transaction id, amount, balance after,
--          lifetime purchased }
local acct, idem, stream = KEYS[1], KEYS[2], KEYS[3]
local again = replay(idem, ARGV[8])
if again then return again end

local now = now_ms(ARGV[1])
local amount = tonumber(ARGV[4])
local vals = redis.call('HMGET', acct, 'bal', 'life', 'held', 'created', 'gx')
local bal = tonumber(vals[1]) or 0
local life = tonumber(vals[2]) or 0
if ARGV[13] == '1' and not vals[4] then
  return { 'team_not_found', '0', '', I(amount), '0', '0' }
end
-- an expiry already past is taken, as ducto takes it: the grant is due at once, so it is never
-- spendable, and the next sweep (or script touching the account) expires it
local expires = tonumber(ARGV[11])
if bal + amount > MAX_SAFE then
  return { 'invalid_amount', '0', '', I(amount), I(bal), I(life) }
end
-- expired grants leave first (held is as stored: a stale, larger held only pins more)
if vals[5] then
  bal = grants_due(acct, KEYS[4], vals[5], now, bal, tonumber(vals[3]) or 0, stream, ARGV[12], ARGV[3], ARGV[2])
end
bal = bal + amount
if ARGV[6] == '1' then life = life + amount end
redis.call('HSET', acct, 'bal', I(bal), 'life', I(life))
if not vals[4] then redis.call('HSET', acct, 'created', I(now), 'held', '0') end
if expires and amount > 0 then
  redis.call('HSET', KEYS[4], ARGV[2], I(expires) .. '|' .. I(amount))
  local gx = tonumber(redis.call('HGET', acct, 'gx'))
  if not gx or expires < gx then
    redis.call('HSET', acct, 'gx', I(expires))
    redis.call('ZADD', KEYS[5], expires, ARGV[3])
  end
end

ledger(stream, { 'id', ARGV[2], 'ts', I(now), 'ak', ARGV[12], 'acct', ARGV[3], 'kind', 'credit',
  'amount', I(amount), 'bal', I(bal), 'held', vals[3] or '0', 'type', ARGV[5], 'idem', ARGV[9],
  'exp', ARGV[11], 'meta', ARGV[7] })

return remember(idem, ARGV[8], ARGV[10], { 'ok', '0', ARGV[2], I(amount), I(bal), I(life) })
