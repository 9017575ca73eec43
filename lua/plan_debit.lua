-- plan_debit.lua: charge priced usage with the user's plan allowance consumed first, in one step.
-- The plan's free allowance left this month (UTC calendar) covers what it can; the rest is charged
-- exactly as debit.lua charges (rate limit, spend caps, balance and min balance: the shared
-- user_debit); the allowance is consumed only when the whole decision succeeds, so it can never be
-- spent twice and nothing is held. One ledger entry: 'amount' is minus the paid part, 'free' the
-- allowance part and 'plan' the plan (a fully covered charge is a 'debit' entry of amount 0).
-- Spend caps count the paid part only.
-- KEYS: debit.lua's keys (KEYS[1] account ... KEYS[9] events), then LAST the plan usage window hash
-- ARGV: debit.lua's arguments for a charge (ARGV[4] = "": no reservation; ARGV[5] = the whole priced
--   amount, >= 1), then LAST the plan allowances JSON {"<plan id>": free allowance per month, ...}
-- (the extra key and argument come last so debit.lua's own list can grow without touching this file)
-- Reply: { status, idempotent, transaction id, paid amount, balance after, held after, cap action or "",
--          retry after ms, rate limit remaining or "", allowance used, plan id or "", allowance left after }
--   status: as debit.lua (ok | insufficient_credits | spend_cap_exceeded | rate_limited | ledger_backlog_full)
local K, A = {}, {}
for i = 1, #KEYS - 1 do K[i] = KEYS[i] end
for i = 1, #ARGV - 1 do A[i] = ARGV[i] end
local pw, allowances = KEYS[#KEYS], ARGV[#ARGV]

local acct, idem, stream = K[1], K[7], K[8]
local again = replay(idem, A[9])
if again then return again end

local now = now_ms(A[1])
local amount = tonumber(A[5])
local plan = redis.call('HGET', acct, 'plan') or ''
local free, left, field, bucket, ends = 0, 0, '', 0, 0
if plan ~= '' then
  local allowance = tonumber(cjson.decode(allowances)[plan]) or 0
  if allowance > 0 then
    bucket, ends = bucket_of('m', now)
    field = 'p|' .. plan
    left = math.max(0, allowance - window_spend(pw, bucket, field))
    free = math.min(left, amount)
  end
end
local paid = amount - free

local reply
if paid > 0 then
  local P = {}
  for i = 1, #A do P[i] = A[i] end
  P[5] = I(paid)
  P[9] = '0'  -- the idempotency key is remembered below, with the allowance part
  reply = user_debit(K, P, { 'free', free > 0 and I(free) or '', 'plan', plan })
  if reply[1] ~= 'ok' then
    return { reply[1], '0', '', I(paid), reply[5], reply[6], reply[7], reply[8] or '0', reply[9] or '', '0',
      plan, I(left) }
  end
else
  -- wholly covered by the allowance: no money moves, but the request still counts for the rate
  -- limit and is recorded in the ledger
  if backlog_full(stream, A[15], A[16]) then
    return { 'ledger_backlog_full', '0', '', '0', '0', '0', '', '0', '', '0', plan, I(left) }
  end
  local held = sweep_holds(acct, K[2], K[3], now, stream, A[14], A[3])
  local av = redis.call('HMGET', acct, 'bal', 'rl', 'tat')
  local bal = tonumber(av[1]) or 0
  local rl_ok, rl_tat, rl_retry, rl_left = gcra_known(av[2], av[3], now)
  if rl_ok == false then
    return { 'rate_limited', '0', '', '0', I(bal), I(held), '', I(rl_retry), '0', '0', plan, I(left) }
  end
  if rl_tat then redis.call('HSET', acct, 'tat', I(rl_tat)) end
  ledger(stream, { 'id', A[2], 'ts', I(now), 'ak', A[14], 'acct', A[3], 'kind', 'debit', 'amount', '0',
    'bal', I(bal), 'held', I(held), 'op', A[6], 'model', A[7], 'idem', A[10], 'meta', A[8],
    'free', I(free), 'plan', plan })
  reply = { 'ok', '0', A[2], '0', I(bal), I(held), '', '0', rl_left and I(rl_left) or '' }
end

if free > 0 then window_add(pw, bucket, ends, free, field) end
return remember(idem, A[9], A[11], { 'ok', '0', reply[3], reply[4], reply[5], reply[6], reply[7],
  reply[8] or '0', reply[9] or '', I(free), plan, I(left - free) })
