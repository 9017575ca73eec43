-- plan_debit.lua: charge priced usage with the user's plan allowance consumed first, in one step.
-- The plan's free allowance left this month (UTC calendar) covers what it can; the rest is charged
-- exactly as debit.lua charges (rate limit, spend caps, balance and min balance: the shared
-- user_debit); the allowance is consumed only when the whole decision succeeds, so it can never be
-- spent twice and nothing is held. One ledger row: 'amount' is minus the paid part, extra.free the
-- allowance part and extra.plan the plan (a fully covered charge is a 'debit' row of amount 0).
-- Spend caps count the paid part only.
-- KEYS: account grants idem ledger events
-- ARGV: cid amount model floor frag allowances config
--   allowances: JSON {"<plan id>": free allowance per month, ...}
-- REPLY: status idempotent ref paid balance held cap retry remaining free left plan
--   status: as debit.lua (ok | insufficient_credits | spend_cap_exceeded | rate_limited | ledger_backlog_full)
local ctx = ctx_new(ARGV[7], KEYS[4], KEYS[5])
local acct, G, idem = KEYS[1], KEYS[2], KEYS[3]
local has_idem = #idem ~= #acct + 2  -- "<account>:i": no key
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, amount_s, model, frag = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local st = account(ctx, acct, { 'plan' })
local month = ctx.c.month
local plan, used = '', 0
local cur = field(st, 'plan')
if cur then
  local pm, u, p = smatch(cur, '^(%d*)|(%d+)|(.*)$')
  plan = p
  if pm ~= '' and pm + 0 == month then used = u + 0 end
end
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
local paid = amount - free
local r
if paid > 0 then
  r = user_debit(ctx, { acct, G, acct .. ':i' }, { cid, I(paid), model, ARGV[4], frag, '' },
    { free = free > 0 and I(free) or nil, plan = plan ~= '' and plan or nil })
  if B_type(r) == 'string' then  -- refused (or a replay): nothing of the allowance is used
    return finish_one(ctx, r, nil) .. '|0|' .. I(left) .. '|' .. plan  -- a deny cap's event is written
  end
else
  -- wholly covered by the allowance: no money moves, but the request still counts for the rate
  -- limit and is recorded in the ledger
  if ctx.cfg.backlog > 0 and backlog_full(ctx) then
    return 'ledger_backlog_full|0||0|0|0||0||0|' .. I(left) .. '|' .. plan
  end
  local aid
  if st.hx ~= '' then aid = frag_value(frag, 3) end
  holds_sweep(ctx, st, 'u', aid, false)
  local new_tat, remaining
  if st.rl ~= '' then
    local ok, tat, retry, rem = gcra(st.rl, st.tat, ctx.c.now)
    if not ok then
      return 'rate_limited|0||0|' .. bal_text(st) .. '|' .. held_text(st) .. '||' .. I(retry) .. '|0|0|' ..
        I(left) .. '|' .. plan
    end
    new_tat, remaining = tat, rem
  end
  if new_tat then st.tat, st.wS = I(new_tat), true end
  local n = row(ctx, '', 'debit', '0', bal_text(st), held_text(st), '', '', '', '',
    extra_json({ free = I(free), plan = plan }), frag)
  ring_add(st, cid, n)
  r = { 'ok', n, '|0|' .. bal_text(st) .. '|' .. held_text(st) .. '||0|' .. (remaining and I(remaining) or ''), '0' }
end
if free > 0 then field_set(st, 'plan', I(month) .. '|' .. I(used + free) .. '|' .. plan) end
r[3] = r[3] .. '|' .. I(free) .. '|' .. I(left - free) .. '|' .. plan
if has_idem then ctx.idem[idem] = r end
return finish_one(ctx, r, idem)
