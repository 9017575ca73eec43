-- plan_usage.lua: add to the allowance a user has used this month under a plan
-- (ducto's increment_usage_window). Recorded as a ledger 'config' entry (op allowance_used).
-- KEYS: account ledger
-- ARGV: tx plan amount frag config
-- REPLY: [ok, 0, used this month after]
local ctx = ctx_new(ARGV[5], KEYS[2], KEYS[2])
local plan, amount = ARGV[2], ARGV[3] + 0
local month = ctx.c.month
local st = account(ctx, KEYS[1], { 'plan', 'P|' .. plan })
local cur = field(st, 'plan')
local f, m, used, tail = 'P|' .. plan, '', '0', ''
local cp = cur and smatch(cur, '^%d*|%d+|(.*)$')
if cp == plan then
  f, tail = 'plan', '|' .. plan
  m, used = smatch(cur, '^(%d*)|(%d+)|')
else
  local kept = field(st, f)
  if kept then m, used = smatch(kept, '^(%d*)|(%d+)$') end
end
local after = ((m ~= '' and m + 0 == month) and used + 0 or 0) + amount
field_set(st, f, I(month) .. '|' .. I(after) .. tail)
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', extra_json({ free = ARGV[3], plan = plan }), ARGV[4])
finish_writes(ctx)
return { 'ok', '0', I(after) }
