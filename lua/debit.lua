-- debit.lua: spend credits, checking spend caps and balance in the same step. Two modes:
--   settle a reservation (ARGV[4] = reservation id): the hold is gone after; spending less than the
--   hold returns the rest, more succeeds only if the available balance covers the difference;
--   charge (ARGV[4] = ""): the gateway's one-round-trip debit with no hold.
-- A deny cap that would be exceeded refuses the debit (and releases the hold when settling);
-- warn/notify caps let it pass and append an event.
-- KEYS[1] account hash   KEYS[2] holds hash   KEYS[3] hold expiry zset   KEYS[4] caps hash
-- KEYS[5] day window   KEYS[6] month window   KEYS[7] idempotency key   KEYS[8] ledger stream
-- KEYS[9] events stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] user id (raw)   ARGV[4] reservation id or ""
-- ARGV[5] amount (>= 0 settling, >= 1 charging)   ARGV[6] operation type   ARGV[7] model or ""
-- ARGV[8] metadata JSON   ARGV[9] has idempotency key   ARGV[10] idempotency key (raw)
-- ARGV[11] idempotency TTL s   ARGV[12] events stream max length   ARGV[13] min balance (charge)
-- ARGV[14] account kind   ARGV[15] ledger backlog limit (0 = none)   ARGV[16] backlog policy (closed|open)
-- Reply: { status, idempotent, transaction id, amount, balance after, held after, cap action or "" }
--   status: ok | insufficient_credits | spend_cap_exceeded | reservation_not_found | ledger_backlog_full
local acct, holds, hexp, caps_key, wd, wm, idem, stream, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local again = replay(idem, ARGV[9])
if again then return again end

if backlog_full(stream, ARGV[15], ARGV[16]) then
  return { 'ledger_backlog_full', '0', '', ARGV[5], '0', '0', '' }
end
local now = now_ms(ARGV[1])
local tx, aid, rid, akind = ARGV[2], ARGV[3], ARGV[4], ARGV[14]
local amount = tonumber(ARGV[5])
local op, model = ARGV[6], ARGV[7]
local held = sweep_holds(acct, holds, hexp, now, stream, akind, aid)
local bal = tonumber(redis.call('HGET', acct, 'bal')) or 0

local hold = 0
if rid ~= '' then
  local h = redis.call('HGET', holds, rid)
  if not h then
    return { 'reservation_not_found', '0', '', I(amount), I(bal), I(held), '' }
  end
  local ha, _, hop = string.match(h, '^(%d+)|(%d+)|(.*)$')
  hold = tonumber(ha)
  if op == '' then op = hop end
end

local caps = applicable_caps(caps_key, model)
local deny, warns = evaluate_caps(caps, wd, wm, now, amount)
if deny then
  cap_event(events, ARGV[12], 'credits.cap_reached', now, akind, aid, deny, amount, tx)
  if rid == '' then
    return { 'spend_cap_exceeded', '0', '', I(amount), I(bal), I(held), 'deny' }
  end
  -- refusing a settlement releases the hold: the reserved credits stay the user's
  held = held - hold
  redis.call('HSET', acct, 'held', I(held))
  redis.call('HDEL', holds, rid)
  redis.call('ZREM', hexp, rid)
  ledger(stream, { 'id', tx, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', 'release', 'amount', '0',
    'hold', I(hold), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'model', model,
    'idem', ARGV[10], 'reason', 'spend_cap_exceeded', 'meta', ARGV[8] })
  return remember(idem, ARGV[9], ARGV[11],
    { 'spend_cap_exceeded', '0', tx, I(amount), I(bal), I(held), 'deny' })
end

-- the hold covers up to its amount; anything beyond must come from the available balance
local need = amount - hold
local floor = rid == '' and tonumber(ARGV[13]) or 0
if need > 0 and bal - held - need < floor then
  return { 'insufficient_credits', '0', '', I(amount), I(bal), I(held), '' }
end

bal = bal - amount
if rid ~= '' then
  held = held - hold
  redis.call('HDEL', holds, rid)
  redis.call('ZREM', hexp, rid)
  redis.call('HSET', acct, 'bal', I(bal), 'held', I(held))
else
  redis.call('HSET', acct, 'bal', I(bal))
end
if amount > 0 then record_spend(wd, wm, now, amount, model) end

local action = ''
for _, c in ipairs(warns) do
  cap_event(events, ARGV[12], c[4] == 'warn' and 'credits.cap_warning' or 'credits.cap_reached',
    now, akind, aid, c, amount, tx)
  if action == '' or c[4] == 'warn' then action = c[4] end
end

ledger(stream, { 'id', tx, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', rid ~= '' and 'settle' or 'debit',
  'amount', I(-amount), 'hold', rid ~= '' and I(hold) or '', 'bal', I(bal), 'held', I(held), 'rid', rid,
  'op', op, 'model', model, 'idem', ARGV[10], 'cap', action, 'meta', ARGV[8] })

return remember(idem, ARGV[9], ARGV[11], { 'ok', '0', tx, I(amount), I(bal), I(held), action })
