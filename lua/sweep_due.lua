-- sweep_due.lua (read-only): the accounts of one shard with a grant due (expiry <= now).
-- KEYS[1] the shard's grant index
-- ARGV[1] clock offset ms
-- Reply: { "ok", "0", user id, ... }
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(ARGV[1]))
local out = { 'ok', '0' }
for _, uid in ipairs(due) do out[#out + 1] = uid end
return out
