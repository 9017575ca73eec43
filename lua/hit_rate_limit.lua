-- hit_rate_limit.lua: admit one request against an account's rate limit without moving money
-- (for routes that cost nothing). No ledger entry: no money moves.
-- KEYS: account
-- ARGV: config
-- REPLY (text): status idempotent retry remaining limit
--   status: ok | rate_limited; idempotent: 0; remaining, limit: "" = no limit set
local now = clock(config(ARGV[1])).now
local v = rcall('HMGET', KEYS[1], 'b', 'S')
local st = st_new(KEYS[1], v[1] or nil, v[2] or nil, nil)
if st.rl == '' then return 'ok|0|0||' end
local ok, tat, retry, left, limit = gcra(st.rl, st.tat, now)
if not ok then return 'rate_limited|0|' .. I(retry) .. '|0|' .. limit end
st.tat = I(tat)
rcall('HSET', KEYS[1], 'S', st_text(st))
return 'ok|0|0|' .. I(left) .. '|' .. limit
