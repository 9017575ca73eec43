-- sweep_due.lua (read-only): the accounts of one shard with a grant due (expiry <= now).
-- KEYS: gindex
-- ARGV: config
-- REPLY (table): status idempotent; per account: user
local due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', clock(config(ARGV[1])).now)
local out = { 'ok', '0' }
for _, uid in B_ipairs(due) do out[#out + 1] = uid end
return out
