-- pool_member.lua: add, update or remove a team member (membership is O(1): the count is kept).
-- A member is field U|<id> of the team hash (ducto_redis/layout.py Member). Removing a member keeps
-- the field with period 'x' (removed): their spend history stays, and comes back if they rejoin. The ledger entry (kind config, op
-- member_added | member_updated | member_removed) carries the member record after the change as
-- its metadata {role, cap, period}: restore rebuilds members from it.
-- KEYS: team ledger
-- ARGV: tx tid member action role cap period config
--   action: add | update | remove; role/cap/period "" keep the current value ("member", none,
--   total for a new member); cap "-1" removes the cap; period t|d|m
-- REPLY (text): status idempotent cap period count role
--   status: ok | team_not_found | user_not_in_team; idempotent: 0
local ctx = ctx_new(ARGV[8], KEYS[2], KEYS[2])
local tid, uid, action = ARGV[2], ARGV[3], ARGV[4]
local uf = 'U|' .. uid
local st = account(ctx, KEYS[1], 'mc', uf)
if not st.exists then return 'team_not_found|0|||0|' end
local mc = (field(st, 'mc') or '0') + 0
local m = member_of(st, uid, uf)
if action ~= 'add' and not m then return 'user_not_in_team|0|||' .. I(mc) .. '|' end
local op
if action == 'remove' then
  mc = mc - 1
  m.period, m.cap, m.dirty = 'x', false, true
  op = 'member_removed'
else
  op = m and 'member_updated' or 'member_added'
  if not m then
    m = member_record(st, uid, uf)  -- a removed member rejoining keeps their spend history
    if m then
      m.period, m.cap, m.role = 't', false, 'member'
    else
      m = { cap = false, period = 't', T = 0, dA = 0, mA = 0, held = 0, role = 'member' }
      st.members[uf] = m
    end
    mc = mc + 1
  end
  if ARGV[5] ~= '' then m.role = ARGV[5] end
  if ARGV[7] ~= '' then m.period = ARGV[7] end
  if ARGV[6] ~= '' then
    if ARGV[6] == '-1' then m.cap = false else m.cap = ARGV[6] + 0 end
  end
  m.dirty = true
end
field_set(st, 'mc', I(mc))
local PERIOD = { t = 'total', d = 'daily', m = 'monthly' }
local meta = ''
if action ~= 'remove' then
  meta = jencode({ role = m.role, cap = m.cap and I(m.cap) or nil, period = PERIOD[m.period] })
end
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', '',
  '\t' .. op .. '\tt\t' .. esc(tid) .. '\t' .. esc(uid) .. '\t\t\t\t\t' .. esc(meta))
finish_writes(ctx)
if action == 'remove' then return 'ok|0|||' .. I(mc) .. '|' end
return 'ok|0|' .. (m.cap and I(m.cap) or '') .. '|' .. m.period .. '|' .. I(mc) .. '|' .. m.role
