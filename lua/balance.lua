-- balance.lua (read-only): an account's balance, held amount (expired holds excluded) and lifetime.
-- Expired grants are left out of the balance as the next mutation would expire them.
-- KEYS[1] account hash   KEYS[2] holds hash   KEYS[3] hold expiry zset   KEYS[4] expiring grants hash
-- ARGV[1] clock offset ms
-- Reply: { "ok", "0", balance, held, lifetime purchased, exists ("1"/"0") }
local now = now_ms(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'bal', 'held', 'life', 'created', 'gx')
local held = (tonumber(v[2]) or 0) - expired_hold_total(KEYS[2], KEYS[3], now)
local bal = v[1] or '0'
if v[5] and tonumber(v[5]) <= now then
  bal = I((grants_expire(grants_load(KEYS[4]), KEYS[4], now, tonumber(bal), held, false, nil, nil, nil, nil)))
end
return { 'ok', '0', bal, I(held), v[3] or '0', v[4] and '1' or '0' }
