-- plan_read.lua (read-only): a user's plan and the allowance it has used this month (UTC calendar).
-- KEYS[1] account hash   KEYS[2] plan usage window hash
-- ARGV[1] clock offset ms
-- Reply: { "ok", "0", plan id or "", used this month, month start ms, month end ms (exclusive) }
local now = now_ms(ARGV[1])
local plan = redis.call('HGET', KEYS[1], 'plan') or ''
local bucket, ends = bucket_of('m', now)
local used = 0
if plan ~= '' then used = window_spend(KEYS[2], bucket, 'p|' .. plan) end
local y = math.floor(bucket / 12)
local m = bucket - y * 12 + 1
return { 'ok', '0', plan, I(used), I(days_from_civil(y, m, 1) * 86400000), I(ends) }
