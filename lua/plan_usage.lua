-- plan_usage.lua: add to the allowance a user has used this month under a plan
-- (ducto's increment_usage_window). Recorded as a ledger 'config' entry (op allowance_used).
-- KEYS: account ledger
-- ARGV: tx plan amount frag config
-- REPLY (table): status idempotent used
--   used: used this month, after
local ctx = ctx_new(ARGV[5], KEYS[2], KEYS[2])
local plan, amount = ARGV[2], ARGV[3] + 0
local month = ctx.c.month
local st = account(ctx, KEYS[1], { 'plan', 'P|' .. plan })
local f, m, used, cp = 'plan', plan_of(field(st, 'plan'))
if cp ~= plan then
  f = 'P|' .. plan
  m, used = plan_left_of(field(st, f))
end
local after = (m == month and used or 0) + amount
field_set(st, f, plan_text(month, after, f == 'plan' and plan or nil))
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', extra_json({ free = ARGV[3], plan = plan }), ARGV[4])
finish_writes(ctx)
return { 'ok', '0', I(after) }
