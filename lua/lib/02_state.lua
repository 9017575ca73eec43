-- lib/02_state.lua: the stored formats of an account hash (ducto_redis/layout.py defines them;
-- tests/test_layout.py holds the two sides together). One account in memory is a table `st`:
--   key, bal (number), bals (bal as stored text), held, hx, gx, rl, tat (text, '' = none),
--   dB, dK, mB, mK (day / month bucket and anchor: spend = anchor - balance in the current bucket),
--   dC, mC (caps '<limit><d|w|n>' or ''; parsed: dL/dA, mL/mA limit and action, nil without),
--   ql (quantity limits), ring (recent call ids), and what to write back: wb (balance changed),
--   wS (state changed), set (field -> value), del (fields), rc / rr / ring_new (ring entries).

local SPAT = '^(%d*)|(%d*)|(%d*)|([^|]*)|(%d*)|(%d*)|(%-?%d*)|(%d*)|(%-?%d*)|(%w*)|(%w*)|(.*)$'
local RING_KEEP = 130

local function num(s) if s == '' then return nil end return s + 0 end

-- a cap '<limit><d|w|n>' -> limit (number), action word; nil for ''
local ACTION = { d = 'deny', w = 'warn', n = 'notify' }
local function cap_of(text)
  if text == '' then return nil, nil end
  local limit, a = smatch(text, '^(%d+)(%a)$')
  return limit + 0, ACTION[a]
end

-- The parsed state S, remembered per distinct text (a pure function of it; a hot account's S
-- changes only when its day rolls over or its holds / caps / limits change). An account table reads
-- what it does not hold itself from it (metatable __index): writes land in the account table and
-- shadow the shared values, never changing them.
local parsed, parsed_count = {}, 0
local EMPTY_S = '0|||||||||||'
local function state_of(S)
  local p = parsed[S]
  if p then return p end
  local held, hx, gx, rl, tat, dB, dK, mB, mK, dC, mC, ql = smatch(S, SPAT)
  if not held then  -- a state of the older eleven fields: no quantity limits
    held, hx, gx, rl, tat, dB, dK, mB, mK, dC, mC = smatch(S .. '|', SPAT)
    ql = ''
  end
  p = { held = held + 0, helds = held, helds_of = held + 0, hx = hx, gx = gx, rl = rl, tat = tat, dB = num(dB),
    dK = (num(dK) or 0), mB = num(mB), mK = (num(mK) or 0), dC = dC, mC = mC, ql = ql }
  p.dL, p.dA = cap_of(dC)  -- the caps parsed (limit, action; nil without); set_cap.lua never debits
  p.mL, p.mA = cap_of(mC)
  -- nothing in a plain debit's row depends on the time: no holds or grants due to look at, no
  -- warn/notify cap (lib/08_debit.lua debit_clock)
  p.timeless = hx == '' and gx == '' and (not p.dL or p.dA == 'deny') and (not p.mL or p.mA == 'deny')
  -- a charge on it depends on the time only through the day and the month (no holds or grants due
  -- to look at, no request-rate or quantity limit: they need the time itself; lib/08_debit.lua many_clock_now)
  p.day_only = hx == '' and gx == '' and rl == '' and ql == ''
  p.mt = { __index = p }
  if parsed_count > 10000 then parsed, parsed_count = {}, 0 end
  parsed[S], parsed_count = p, parsed_count + 1
  return p
end

local function st_new(key, b, S, ring, team)
  -- made with the fields a charge sets (at 8 the table never grows during it; a field the table
  -- lacks is read from the shared parsed state). bals: the balance as text, false once it changed
  local st
  if team then  -- a team's account also keeps its members
    st = { key = key, bal = 0, bals = '0', ring = ring or '', exists = false, wb = false, f = false,
      members = false, one = false, rc = false, rr = false }
  else
    st = { key = key, bal = 0, bals = '0', ring = ring or '', exists = false, wb = false, rc = false, rr = false }
  end
  if b then st.bal, st.bals = b + 0, b end
  return B_setmetatable(st, (parsed[S or EMPTY_S] or state_of(S or EMPTY_S)).mt)
end

local function st_text(st)
  return I(st.held) .. '|' .. st.hx .. '|' .. st.gx .. '|' .. st.rl .. '|' .. st.tat .. '|' ..
    (st.dB and I(st.dB) or '') .. '|' .. I(st.dK) .. '|' .. (st.mB and I(st.mB) or '') .. '|' .. I(st.mK) ..
    '|' .. st.dC .. '|' .. st.mC .. '|' .. st.ql
end

-- spend today and this month (all models)
local function st_spend(st, c)
  return st.dB == c.day and st.dK - st.bal or 0, st.mB == c.month and st.mK - st.bal or 0
end

-- the balance becomes `bal`; `spent` of the change is spend (a debit: bal falls by spent), the rest
-- is not (credits, refunds, expiries) and moves the anchors with it
local function st_balance(st, c, bal, spent)
  local move = bal - st.bal + spent
  st.bal, st.bals, st.wb = bal, false, true
  if st.dB == c.day then
    if move ~= 0 then st.dK, st.wS = st.dK + move, true end
  elseif spent > 0 then
    st.dB, st.dK, st.wS = c.day, bal + spent, true
  end
  if st.mB == c.month then
    if move ~= 0 then st.mK, st.wS = st.mK + move, true end
  elseif spent > 0 then
    st.mB, st.mK, st.wS = c.month, bal + spent, true
  end
end

local function st_held(st, held)
  st.held, st.wS = held, true
end

-- the call id's earlier entry ("<entry>/<row>", or '' for a mutation without a row) if this account
-- saw it recently: in its ring, or earlier in this call (st.rc: the call's first call id, with
-- st.rr its row or false; st.ring_new: any further ones, pairs call id, row)
local function ring_seen(st, cid)
  if st.ring ~= '' then
    local p = sfind(st.ring, cid, 1, true)
    if p then return smatch(st.ring, '^=([^;]*)', p + #cid) end
  end
  if st.rc then
    if st.rc == cid then return '' end
    local new = st.ring_new
    if new then
      for i = 1, #new, 2 do
        if new[i] == cid then return '' end
      end
    end
  end
  return nil
end

-- the ring with the call's new entries in front (`ring`), longer than 2 * RING_KEEP bytes, cut
-- back to about RING_KEEP
local function ring_text(ring)
  local cut = sfind(ring, ';', RING_KEEP, true)
  if cut then ring = ssub(ring, 1, cut) end
  return ring
end

-- A model's window and caps (field M|<model>): { T, dB, dA, mB, mA, dC, mC }; spend = T - anchor.
local MPAT = '^(%d*)|(%d*)|(%-?%d*)|(%d*)|(%-?%d*)|(%w*)|(%w*)$'

local function mw_new(text)
  local w = { T = 0, dA = 0, mA = 0, dC = '', mC = '' }
  if text then
    local T, dB, dA, mB, mA, dC, mC = smatch(text, MPAT)
    w.T, w.dB, w.dA, w.mB, w.mA, w.dC, w.mC = T + 0, num(dB), (num(dA) or 0), num(mB), (num(mA) or 0), dC, mC
  end
  return w
end

local function mw_text(w)
  return I(w.T) .. '|' .. (w.dB and I(w.dB) or '') .. '|' .. I(w.dA) .. '|' .. (w.mB and I(w.mB) or '') .. '|' ..
    I(w.mA) .. '|' .. w.dC .. '|' .. w.mC
end

local function mw_spend(w, c)
  return w.dB == c.day and w.T - w.dA or 0, w.mB == c.month and w.T - w.mA or 0
end

-- add `x` of spend to a window table with fields T (total), dB/dA, mB/mA (model windows, members)
local function total_add(w, c, x)
  if w.dB ~= c.day then w.dB, w.dA = c.day, w.T end
  if w.mB ~= c.month then w.mB, w.mA = c.month, w.T end
  w.T = w.T + x
end

-- A team member (field U|<id>): "T|cap|period|dB|dA|mB|mA|held|role", in memory { T (all-time
-- spend), cap (number, or false: none), period (t|d|m, x: removed), dB, dA, mB, mA (day / month
-- bucket and anchor: spend = T - anchor), held (by their open holds), role }. A debit changes only
-- T (the windows move when a period rolls over, held with holds): T leads the record, and the rest
-- is parsed once per distinct text and remembered (a pure function of it), as state_of() does for S.
-- A member table holds T and reads the rest from the shared parsed table (metatable __index);
-- writes land in the member table and shadow the shared values, never changing them (so a value is
-- never set to nil: cap false is no cap). dirty: true = write the record in full; 'T' = only T
-- changed (member_add), so the rest is written as it was read. An older record (T third,
-- "cap|period|T|...") is read as well and written back in the new order.
local RPAT = '^(%d*)|(%a)|(%d*)|(%-?%d*)|(%d*)|(%-?%d*)|(%d+)|(.*)$'
local UPAT_OLD = '^(%d*)|(%a)|(%d+)|(%d*)|(%-?%d*)|(%d*)|(%-?%d*)|(%d+)|(.*)$'
local member_parsed, member_parsed_count = {}, 0

local function member_rest(rest)
  local p = member_parsed[rest]
  if p then return p end
  local cap, period, dB, dA, mB, mA, held, role = smatch(rest, RPAT)
  p = { cap = num(cap) or false, period = period, dB = num(dB), dA = (num(dA) or 0), mB = num(mB),
    mA = (num(mA) or 0), held = held + 0, role = role, rest = rest }
  p.mt = { __index = p }
  if member_parsed_count > 10000 then member_parsed, member_parsed_count = {}, 0 end
  member_parsed[rest], member_parsed_count = p, member_parsed_count + 1
  return p
end

local function member_new(text)
  local T, rest = smatch(text, '^(%d+)|(%d*|%a|.*)$')
  if T then return B_setmetatable({ T = T + 0, dirty = false }, (member_parsed[rest] or member_rest(rest)).mt) end
  local cap, period, dB, dA, mB, mA, held, role
  cap, period, T, dB, dA, mB, mA, held, role = smatch(text, UPAT_OLD)
  return { cap = num(cap) or false, period = period, T = T + 0, dB = num(dB), dA = (num(dA) or 0), mB = num(mB),
    mA = (num(mA) or 0), held = held + 0, role = role }
end

local function member_text(m)
  if m.dirty == 'T' then
    local rest = m.rest
    if rest then return I(m.T) .. '|' .. rest end
  end
  return I(m.T) .. '|' .. (m.cap and I(m.cap) or '') .. '|' .. m.period .. '|' .. (m.dB and I(m.dB) or '') .. '|' ..
    I(m.dA) .. '|' .. (m.mB and I(m.mB) or '') .. '|' .. I(m.mA) .. '|' .. I(m.held) .. '|' .. m.role
end

-- add `x` of spend to a member; when no window rolls over, only T changes
local function member_add(m, c, x)
  if m.dB == c.day and m.mB == c.month then
    m.T = m.T + x
    if not m.dirty then m.dirty = 'T' end
  else
    total_add(m, c, x)
    m.dirty = true
  end
end

-- the member's spend in their cap's period
local function member_spent(m, c)
  if m.period == 'd' then return m.dB == c.day and m.T - m.dA or 0 end
  if m.period == 'm' then return m.mB == c.month and m.T - m.mA or 0 end
  return m.T
end

-- A plan's allowance use: field 'plan' = "mB|used|<plan id>" (the current plan), field P|<plan id> =
-- "mB|used" (a plan the user has left); mB is '' before any use. The month bucket (nil: none), used,
-- and for 'plan' the plan id ('' without a field).
local function plan_of(text)
  if not text then return nil, 0, '' end
  local m, used, plan = smatch(text, '^(%d*)|(%d+)|(.*)$')
  return m ~= '' and m + 0 or nil, used + 0, plan
end

local function plan_left_of(text)
  if not text then return nil, 0 end
  local m, used = smatch(text, '^(%d*)|(%d+)$')
  return m ~= '' and m + 0 or nil, used + 0
end

-- field 'plan' (with its plan id), or P|<plan id> (plan nil)
local function plan_text(month, used, plan)
  local t = (month and I(month) or '') .. '|' .. I(used)
  if plan then return t .. '|' .. plan end
  return t
end

-- Holds (field h:<reservation id>): user "amount|expires_ms|op",
-- team "amount|expires_ms|<#member>|<member><op>"
local function hold_decode(raw, team)
  if not team then
    local a, e, op = smatch(raw, '^(%d+)|(%d+)|(.*)$')
    return a + 0, e + 0, op, nil
  end
  local a, e, n, rest = smatch(raw, '^(%d+)|(%d+)|(%d+)|(.*)$')
  n = n + 0
  return a + 0, e + 0, ssub(rest, n + 1), ssub(rest, 1, n)
end

local function hold_text(amount, expires, op, member)
  if not member then return I(amount) .. '|' .. I(expires) .. '|' .. op end
  return I(amount) .. '|' .. I(expires) .. '|' .. I(#member) .. '|' .. member .. op
end
