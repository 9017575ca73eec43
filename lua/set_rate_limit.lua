-- set_rate_limit.lua: set (or remove) an account's request-rate limit (GCRA) and record it.
-- KEYS: account ledger
-- ARGV: tx value frag config
--   value: "limit,period_ms,burst", or "" to remove
-- REPLY (table): status idempotent
local ctx = ctx_new(ARGV[4], KEYS[2], KEYS[2])
local st = account(ctx, KEYS[1], {})
st.rl, st.wS = ARGV[2], true
if ARGV[2] == '' then st.tat = '' end
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', '', ARGV[3])
finish_writes(ctx)
return { 'ok', '0' }
