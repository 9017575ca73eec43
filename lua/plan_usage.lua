-- plan_usage.lua: add to the allowance a user has used this month under a plan
-- (ducto's increment_usage_window). Recorded as a ledger 'config' entry (op allowance_used).
-- KEYS[1] plan usage window hash   KEYS[2] ledger stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] user id (raw)   ARGV[4] plan id
-- ARGV[5] amount (>= 1)
-- Reply: { "ok", "0", used this month after }
local now = now_ms(ARGV[1])
local bucket, ends = bucket_of('m', now)
local field = 'p|' .. ARGV[4]
window_add(KEYS[1], bucket, ends, tonumber(ARGV[5]), field)
ledger(KEYS[2], { 'id', ARGV[2], 'ts', I(now), 'ak', 'u', 'acct', ARGV[3], 'kind', 'config', 'amount', '0',
  'op', 'allowance_used', 'free', ARGV[5], 'plan', ARGV[4] })
return { 'ok', '0', I(window_spend(KEYS[1], bucket, field)) }
