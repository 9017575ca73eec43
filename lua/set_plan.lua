-- set_plan.lua: assign a plan to a user; its free allowance is consumed before paid credits.
-- Field 'plan' holds the current plan with this month's allowance use ("mB|used|<plan id>"); the
-- use under a plan the user leaves is kept in P|<plan id> ("mB|used") and comes back with the plan.
-- Does not create the user record. Recorded as a ledger 'config' entry (op plan_set, extra.plan).
-- KEYS: account ledger
-- ARGV: tx plan frag config
-- REPLY (table): status idempotent previous
--   previous: the previous plan id, or ""
local ctx = ctx_new(ARGV[4], KEYS[2], KEYS[2])
local plan = ARGV[2]
local st = account(ctx, KEYS[1], { 'plan', 'P|' .. plan })
local pm, pused, prev = plan_of(field(st, 'plan'))
if prev ~= plan then
  if prev ~= '' then field_set(st, 'P|' .. prev, plan_text(pm, pused)) end
  local kept = field(st, 'P|' .. plan)
  local km, kused = plan_left_of(kept)
  field_set(st, 'plan', plan_text(km, kused, plan))
  if kept then field_del(st, 'P|' .. plan) end
end
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', extra_json({ plan = plan, prev = prev }), ARGV[3])
finish_writes(ctx)
return { 'ok', '0', prev }
