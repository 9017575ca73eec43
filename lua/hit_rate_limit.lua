-- hit_rate_limit.lua: admit one request against an account's rate limit without moving money
-- (for routes that cost nothing). No ledger entry: no money moves.
-- KEYS[1] account hash
-- ARGV[1] clock offset ms
-- Reply: { "ok"|"rate_limited", "0", retry-after ms, remaining requests or "" (no limit set) }
local now = now_ms(ARGV[1])
local ok, tat, retry, left = gcra(KEYS[1], now)
if ok == nil then return { 'ok', '0', '0', '' } end
if not ok then return { 'rate_limited', '0', I(retry), '0' } end
redis.call('HSET', KEYS[1], 'tat', I(tat))
return { 'ok', '0', '0', I(left) }
