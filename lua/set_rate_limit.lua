-- set_rate_limit.lua: set (or remove) an account's request-rate limit (GCRA) and record it.
-- KEYS[1] account hash   KEYS[2] ledger stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] account kind   ARGV[4] account id (raw)
-- ARGV[5] "limit|period_ms|burst", or "" to remove
-- Reply: { "ok", "0" }
local now = now_ms(ARGV[1])
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[1], 'rl', 'tat')
else
  redis.call('HSET', KEYS[1], 'rl', ARGV[5])
end
ledger(KEYS[2], { 'id', ARGV[2], 'ts', I(now), 'ak', ARGV[3], 'acct', ARGV[4], 'kind', 'config',
  'amount', '0', 'op', ARGV[5] == '' and 'rate_limit_removed' or 'rate_limit_set', 'meta', ARGV[5] })
return { 'ok', '0' }
