-- plan_read.lua (read-only): a user's plan and the allowance it has used this month (UTC calendar).
-- KEYS: account
-- ARGV: config
-- REPLY (table): status idempotent plan used start end
--   plan: the plan id or ""; used: this month; start, end: the month's first ms and end ms (exclusive)
local c = clock(config(ARGV[1]))
local pm, used, plan = plan_of(rcall('HGET', KEYS[1], 'plan') or nil)
if pm ~= c.month then used = 0 end
local _, ends = month_of_day(c.day)
local y = mfloor(c.month / 12)
local m = c.month - y * 12 + 1
return { 'ok', '0', plan, I(used), I(days_from_civil(y, m, 1) * 86400000), I(ends) }
