-- pool_member.lua: add, update or remove a team member (membership is O(1): the count is kept).
-- Removing a member keeps their spend history (all-time spend stays in the member spend hash).
-- KEYS[1] team hash   KEYS[2] members   KEYS[3] ledger stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] team id (raw)   ARGV[4] member id (raw)
-- ARGV[5] action: add | update | remove
-- ARGV[6] JSON of the fields to set: {role?, cap? (a string; "-1" removes the cap), period?}
-- Reply: { "ok"|"team_not_found"|"user_not_in_team", "0", role, cap or "", period, member count }
local now = now_ms(ARGV[1])
local tid, uid, action = ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', KEYS[1], 'created') == 0 then
  return { 'team_not_found', '0', '', '', '', '0' }
end
local raw = redis.call('HGET', KEYS[2], uid)
local m = raw and cjson.decode(raw) or nil
local mc = tonumber(redis.call('HGET', KEYS[1], 'mc')) or 0
if action ~= 'add' and not m then
  return { 'user_not_in_team', '0', '', '', '', I(mc) }
end
local op
if action == 'remove' then
  redis.call('HDEL', KEYS[2], uid)
  mc = redis.call('HINCRBY', KEYS[1], 'mc', -1)
  op = 'member_removed'
else
  if not m then
    m = { role = 'member', period = 'total' }
    mc = redis.call('HINCRBY', KEYS[1], 'mc', 1)
    op = 'member_added'
  else
    op = 'member_updated'
  end
  local set = cjson.decode(ARGV[6])
  if set.role then m.role = set.role end
  if set.period then m.period = set.period end
  if set.cap then
    if tonumber(set.cap) < 0 then m.cap = nil else m.cap = tostring(set.cap) end
  end
  redis.call('HSET', KEYS[2], uid, cjson.encode(m))
end
ledger(KEYS[3], { 'id', ARGV[2], 'ts', I(now), 'ak', 't', 'acct', tid, 'member', uid, 'kind', 'config',
  'amount', '0', 'op', op, 'meta', cjson.encode(m) })
local cap = ''
if m.cap ~= nil and m.cap ~= cjson.null then cap = m.cap end
return { 'ok', '0', m.role or '', cap, m.period or 'total', I(mc) }
