-- pool_read.lua (read-only): a team's balance, held (expired holds excluded), name, member count,
-- and with ARGV[2] = "1" every member with role, cap, period, all-time / today's / this month's
-- spend and what they hold (expired holds excluded).
-- KEYS: as pool_debit.lua (14 keys)
-- ARGV[1] clock offset ms   ARGV[2] "1" to list members
-- Reply: { "ok"|"team_not_found", "0", name, balance, held, member count, created ms,
--          then per member: id, member JSON, all-time, today, this month, held }
local TK = team_keys(KEYS)
local now = now_ms(ARGV[1])
local v = redis.call('HMGET', TK.acct, 'name', 'bal', 'held', 'mc', 'created')
if not v[5] then return { 'team_not_found', '0', '', '0', '0', '0', '0' } end
local held = (tonumber(v[3]) or 0) - team_expired_total(TK, now)
local out = { 'ok', '0', v[1] or '', v[2] or '0', I(held), v[4] or '0', v[5] }
if ARGV[2] ~= '1' then return out end
local all = redis.call('HGETALL', TK.members)
local db = bucket_of('d', now)
local mb = bucket_of('m', now)
-- holds past due but not swept yet are no longer held, per member as for the pool
local expired = {}
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', TK.hexp, '-inf', now)) do
  local raw = redis.call('HGET', TK.holds, rid)
  if raw then
    local amount, _, member = team_hold_decode(raw)
    expired[member] = (expired[member] or 0) + amount
  end
end
for i = 1, #all, 2 do
  local uid = all[i]
  out[#out + 1] = uid
  out[#out + 1] = all[i + 1]
  out[#out + 1] = redis.call('HGET', TK.mspend, uid) or '0'
  out[#out + 1] = I(window_spend(TK.md, db, member_field(uid)))
  out[#out + 1] = I(window_spend(TK.mm, mb, member_field(uid)))
  out[#out + 1] = I((tonumber(redis.call('HGET', TK.mheld, uid)) or 0) - (expired[uid] or 0))
end
return out
