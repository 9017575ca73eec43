-- plan_read.lua (read-only): a user's plan and the allowance it has used this month (UTC calendar).
-- KEYS: account
-- ARGV: config
-- REPLY: [ok, 0, plan id or "", used this month, month start ms, month end ms (exclusive)]
local c = clock(config(ARGV[1]))
local cur = rcall('HGET', KEYS[1], 'plan')
local used, plan = 0, ''
if cur then
  local pm, u, p = smatch(cur, '^(%d*)|(%d+)|(.*)$')
  plan = p
  if pm ~= '' and pm + 0 == c.month then used = u + 0 end
end
local _, ends = month_of_day(c.day)
local y = mfloor(c.month / 12)
local m = c.month - y * 12 + 1
return { 'ok', '0', plan, I(used), I(days_from_civil(y, m, 1) * 86400000), I(ends) }
