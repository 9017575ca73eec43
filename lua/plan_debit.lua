-- plan_debit.lua: charge priced usage with the user's plan allowance consumed first, in one step.
-- The plan's free allowance left this month (UTC calendar) covers what it can; the rest is charged
-- exactly as debit.lua charges (the shared user_debit: backlog, expiries, rate limit, spend caps,
-- balance and min balance); the allowance is consumed only when the whole decision succeeds, so it
-- can never be spent twice and nothing is held. One ledger row: 'amount' is minus the paid part,
-- extra.free the allowance part and extra.plan the plan (a fully covered charge is a 'debit' row
-- of amount 0, which the rate limit still counts). Spend caps count the paid part only.
-- KEYS: account grants ledger events [idem]
-- ARGV: cid amount model floor frag allowances config
--   allowances: JSON {"<plan id>": free allowance per month, ...}
-- REPLY (text): status idempotent ref paid balance held cap retry remaining limit free left plan
--   status: as debit.lua (ok | insufficient_credits | spend_cap_exceeded | rate_limited | ledger_backlog_full)
local ctx = ctx_new(ARGV[7], KEYS[3], KEYS[4])
local acct, G, idem = KEYS[1], KEYS[2], KEYS[5]
local has_idem = idem ~= nil
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, amount_s = ARGV[1], ARGV[2]
local st = account(ctx, acct, { 'plan' })
local month = ctx.c.month
local plan_month, used, plan = plan_of(field(st, 'plan'))
if plan_month ~= month then used = 0 end
local seen = ring_seen(st, cid)
if seen then return seen_reply(st, seen, amount_s) .. '|0|0|' .. plan end
local amount = amount_s + 0
local free, left = 0, 0
if plan ~= '' then
  local allowance = plan_allowance(ARGV[6], plan)
  if allowance > 0 then
    left = mmax(0, allowance - used)
    free = mmin(left, amount)
  end
end
-- the paid part (0 when the allowance covers it all: no money moves, but the request still counts
-- for the rate limit and is recorded in the ledger) is a charge as debit.lua's
local r = user_debit(ctx, { acct, nil, nil, G }, { cid, I(amount - free), ARGV[5], nil, ARGV[3], ARGV[4], '' },
  { free = free > 0 and I(free) or nil, plan = plan ~= '' and plan or nil })
if B_type(r) == 'string' then  -- refused (or a replay): nothing of the allowance is used
  return finish_one(ctx, r, nil) .. '|0|' .. I(left) .. '|' .. plan  -- a deny cap's event is written
end
if free > 0 then field_set(st, 'plan', plan_text(month, used + free, plan)) end
r[9] = '|' .. I(free) .. '|' .. I(left - free) .. '|' .. plan
if has_idem then idem_put(ctx, idem, r) end
return finish_one(ctx, r, idem)
