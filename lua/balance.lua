-- balance.lua (read-only): an account's balance, held amount (expired holds excluded) and lifetime.
-- KEYS[1] account hash   KEYS[2] holds hash   KEYS[3] hold expiry zset
-- ARGV[1] clock offset ms
-- Reply: { "ok", "0", balance, held, lifetime purchased, exists ("1"/"0") }
local now = now_ms(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'bal', 'held', 'life', 'created')
local held = (tonumber(v[2]) or 0) - expired_hold_total(KEYS[2], KEYS[3], now)
return { 'ok', '0', v[1] or '0', I(held), v[3] or '0', v[4] and '1' or '0' }
