-- pool_read.lua (read-only): a team's balance, held (expired holds excluded), name, member count,
-- and with members = "1" every member with role, cap, period, all-time / today's / this month's
-- spend and what they hold (expired holds excluded).
-- KEYS: team
-- ARGV: members config
--   members: "1" lists the members too
-- REPLY (table): status idempotent name balance held count created; per member: id role cap period total today month held
--   status: ok | team_not_found; count: members; created: ms; a member's total, today, month: their
--   spend all-time, today and this month
local c = clock(config(ARGV[2]))
local v = rcall('HMGET', KEYS[1], 'b', 'S', 'name', 'mc', 'created')
if not v[1] then return { 'team_not_found', '0', '', '0', '0', '0', '0' } end
local st = st_new(KEYS[1], v[1] or nil, v[2] or nil, nil)
local expired, per = holds_expired(st, c.now, true)
local out = { 'ok', '0', v[3] or '', bal_text(st), I(st.held - expired), v[4] or '0', v[5] }
if ARGV[1] ~= '1' then return out end
local cursor = '0'
repeat
  local r = rcall('HSCAN', KEYS[1], cursor, 'MATCH', 'U|*', 'COUNT', 1000)
  cursor = r[1]
  for i = 1, #r[2], 2 do
    local uid = ssub(r[2][i], 3)
    local m = member_new(r[2][i + 1])
    if m.period ~= 'x' then
    local d = m.dB == c.day and m.T - m.dA or 0
    local mo = m.mB == c.month and m.T - m.mA or 0
    out[#out + 1] = uid
    out[#out + 1] = m.role
    out[#out + 1] = m.cap and I(m.cap) or ''
    out[#out + 1] = m.period
    out[#out + 1] = I(m.T)
    out[#out + 1] = I(d)
    out[#out + 1] = I(mo)
    out[#out + 1] = I(m.held - (per[uid] or 0))
    end
  end
until cursor == '0'
return out
