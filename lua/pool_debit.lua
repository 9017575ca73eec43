-- pool_debit.lua: spend from a team pool for a member (deduct_team), or settle a team reservation.
-- Checks, in order: team exists -> membership -> the member's cap (their period spend plus what
-- their open reservations hold) -> the team's caps -> pool balance (beyond any hold); then debits
-- the pool (never a member's personal balance) and appends one ledger entry naming team and member.
-- A refusal changes nothing, except that refusing a settlement for a cap releases its hold.
-- KEYS[1] team hash   KEYS[2] holds   KEYS[3] hold expiry   KEYS[4] team caps   KEYS[5] day window
-- KEYS[6] month window   KEYS[7] idempotency key   KEYS[8] ledger stream   KEYS[9] events stream
-- KEYS[10] members   KEYS[11] member all-time spend   KEYS[12] member day spend
-- KEYS[13] member month spend   KEYS[14] member held
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] team id (raw)   ARGV[4] member id (raw)
-- ARGV[5] reservation id or ""   ARGV[6] amount   ARGV[7] operation type   ARGV[8] model or ""
-- ARGV[9] metadata JSON   ARGV[10] has idempotency key   ARGV[11] idempotency key (raw)
-- ARGV[12] idempotency TTL s   ARGV[13] events max length   ARGV[14] ledger backlog limit
-- ARGV[15] backlog policy
-- Reply: { status, idempotent, transaction id, amount, team balance after, held after, cap action }
--   status: ok | team_not_found | user_not_in_team | spend_cap_exceeded | insufficient_team_balance
--           | reservation_not_found | ledger_backlog_full
local TK = team_keys(KEYS)
local again = replay(TK.idem, ARGV[10])
if again then return again end
if backlog_full(TK.stream, ARGV[14], ARGV[15]) then
  return { 'ledger_backlog_full', '0', '', ARGV[6], '0', '0', '' }
end
local now = now_ms(ARGV[1])
local tx, tid, uid, rid = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local amount = tonumber(ARGV[6])
local op, model = ARGV[7], ARGV[8]

local av = redis.call('HMGET', TK.acct, 'bal', 'held', 'created')
if not av[3] then return { 'team_not_found', '0', '', I(amount), '0', '0', '' } end
local bal = tonumber(av[1]) or 0
local held = tonumber(av[2]) or 0
local m = member_get(TK.members, uid)
if not m then return { 'user_not_in_team', '0', '', I(amount), I(bal), I(held), '' } end
held = sweep_team_holds(TK, now, tid, held, bal)

local hold = 0
if rid ~= '' then
  local raw = redis.call('HGET', TK.holds, rid)
  local hm, hop, hexp_ms
  if raw then hold, hexp_ms, hm, hop = team_hold_decode(raw) end
  if not raw or hm ~= uid then
    return { 'reservation_not_found', '0', '', I(amount), I(bal), I(held), '' }
  end
  if op == '' then op = hop end
end

local function refuse_for_cap(c)
  if c then cap_event(TK.events, ARGV[13], 'credits.cap_reached', now, 't', tid, c, amount, tx) end
  if rid == '' then
    return { 'spend_cap_exceeded', '0', '', I(amount), I(bal), I(held), 'deny' }
  end
  held = held - hold
  redis.call('HSET', TK.acct, 'held', I(held))
  team_hold_drop(TK, rid, uid, hold)
  ledger(TK.stream, { 'id', tx, 'ts', I(now), 'ak', 't', 'acct', tid, 'member', uid, 'kind', 'release',
    'amount', '0', 'hold', I(hold), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'model', model,
    'idem', ARGV[11], 'reason', 'spend_cap_exceeded', 'meta', ARGV[9] })
  return remember(TK.idem, ARGV[10], ARGV[12], { 'spend_cap_exceeded', '0', tx, I(amount), I(bal), I(held), 'deny' })
end

-- the member's cap
if m.cap ~= nil and m.cap ~= cjson.null then
  local spent, mheld = member_usage(TK, uid, m.period, now)
  if spent + (mheld - hold) + amount > tonumber(m.cap) then return refuse_for_cap(nil) end
end
-- the team's caps
local deny, warns = evaluate_caps(applicable_caps(TK.caps, model), TK.wd, TK.wm, now, amount)
if deny then return refuse_for_cap(deny) end
-- the pool
local need = amount - hold
if need > 0 and bal - held - need < 0 then
  return { 'insufficient_team_balance', '0', '', I(amount), I(bal), I(held), '' }
end

bal = bal - amount
if rid ~= '' then
  held = held - hold
  team_hold_drop(TK, rid, uid, hold)
end
redis.call('HSET', TK.acct, 'bal', I(bal), 'held', I(held))
if amount > 0 then
  redis.call('HINCRBY', TK.mspend, uid, amount)
  local db, dend = bucket_of('d', now)
  window_add(TK.md, db, dend, amount, uid)
  local mb, mend = bucket_of('m', now)
  window_add(TK.mm, mb, mend, amount, uid)
  record_spend(TK.wd, TK.wm, now, amount, model)
end
local action = ''
for _, c in ipairs(warns) do
  cap_event(TK.events, ARGV[13], c[4] == 'warn' and 'credits.cap_warning' or 'credits.cap_reached',
    now, 't', tid, c, amount, tx)
  if action == '' or c[4] == 'warn' then action = c[4] end
end
ledger(TK.stream, { 'id', tx, 'ts', I(now), 'ak', 't', 'acct', tid, 'member', uid,
  'kind', rid ~= '' and 'settle' or 'debit', 'amount', I(-amount), 'hold', rid ~= '' and I(hold) or '',
  'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'model', model, 'idem', ARGV[11], 'cap', action,
  'meta', ARGV[9] })
return remember(TK.idem, ARGV[10], ARGV[12], { 'ok', '0', tx, I(amount), I(bal), I(held), action })
