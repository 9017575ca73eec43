-- sweep_credits.lua: expire the due grants of some accounts of one shard (sweep_expired_credits).
-- Each expired grant remainder leaves the balance with one ledger entry (kind 'expire', reason
-- 'credit_expired'); never below what is held (lib.lua grants_expire). The account's place in the
-- grant index moves to its next expiry (or it leaves the index). A dry run writes nothing.
-- KEYS[1] the shard's grant index   KEYS[2] ledger stream
-- KEYS[3 + 4i .. 6 + 4i] account i: account hash, expiring grants hash, holds hash, hold expiry zset
-- ARGV[1] clock offset ms   ARGV[2] dry run ("1"/"0")   ARGV[3] this call's unique id
-- ARGV[4 + i] user id i (raw)
-- Reply: { "ok", "0", count, amount, then per expiry: user id, grant id, amount, expires ms, entry id }
local gidx, stream = KEYS[1], KEYS[2]
local now = now_ms(ARGV[1])
local dry = ARGV[2] == '1'
local count, total, out = 0, 0, {}
for i = 0, (#KEYS - 2) / 4 - 1 do
  local acct, G, holds, hexp = KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i], KEYS[6 + 4 * i]
  local uid = ARGV[4 + i]
  local v = redis.call('HMGET', acct, 'bal', 'held', 'gx')
  if not v[3] then
    if not dry then redis.call('ZREM', gidx, uid) end
  else
    local bal = tonumber(v[1]) or 0
    local held
    if dry then
      held = (tonumber(v[2]) or 0) - expired_hold_total(holds, hexp, now)
    else
      held = sweep_holds_known(acct, holds, hexp, now, stream, 'u', uid, tonumber(v[2]) or 0, bal)
    end
    local list = grants_load(G)
    local after, expired = grants_expire(list, G, now, bal, held, not dry, stream, 'u', uid, ARGV[3])
    for _, e in ipairs(expired) do
      count, total = count + 1, total + e[2]
      out[#out + 1] = uid
      out[#out + 1] = e[1]
      out[#out + 1] = I(e[2])
      out[#out + 1] = I(e[3])
      out[#out + 1] = e[4]
    end
    if not dry then
      if after ~= bal then redis.call('HSET', acct, 'bal', I(after)) end
      list = grants_keep(acct, list)
      if #list > 0 then redis.call('ZADD', gidx, list[1][2], uid) else redis.call('ZREM', gidx, uid) end
    end
  end
end
local reply = { 'ok', '0', I(count), I(total) }
for _, x in ipairs(out) do reply[#reply + 1] = x end
return reply
