-- lib/04_caps.lua: spend caps (daily and monthly, all models or one) and the events of caps passed.

-- caps '<limit><d|w|n>' -> limit, action word (remembered: a pure function of the text)
local cap_memo, cap_count = {}, 0
local function cap_parse(text)
  local c = cap_memo[text]
  if not c then
    local limit, a = smatch(text, '^(%d+)(%a)$')
    c = { limit + 0, ACTION[a] }
    if cap_count > 256 then cap_memo, cap_count = {}, 0 end
    cap_memo[text], cap_count = c, cap_count + 1
  end
  return c[1], c[2]
end

-- One cap (text) against `spend` + `amount`: the cap passed, as {period d|m, model or '', limit,
-- action, spend}, or nil
local function cap_passed(text, period, mdl, spend, amount)
  if text == '' then return nil end
  local limit, action = cap_parse(text)
  if spend + amount <= limit then return nil end
  return { period, mdl, limit, action, spend }
end

local function cap_sort(cap, deny, warns)
  if cap[4] == 'deny' then return deny or cap, warns end
  warns = warns or {}
  warns[#warns + 1] = cap
  return deny, warns
end

-- Caps that spending `amount` now would pass: the first deny cap (or nil) and the warn/notify caps
-- passed (or nil). st: the account (its caps parsed with its state: dL/dA, mL/mA); w: the model's
-- window (or nil).
local function caps_check(st, w, model, amount, c)
  local deny, warns
  local limit = st.dL
  if limit then
    local spend = st.dB == c.day and st.dK - st.bal or 0
    if spend + amount > limit then deny, warns = cap_sort({ 'd', '', limit, st.dA, spend }, deny, warns) end
  end
  limit = st.mL
  if limit then
    local spend = st.mB == c.month and st.mK - st.bal or 0
    if spend + amount > limit then deny, warns = cap_sort({ 'm', '', limit, st.mA, spend }, deny, warns) end
  end
  local cap
  if w and (w.dC ~= '' or w.mC ~= '') then
    local wd, wm = mw_spend(w, c)
    cap = cap_passed(w.dC, 'd', model, wd, amount)
    if cap then deny, warns = cap_sort(cap, deny, warns) end
    cap = cap_passed(w.mC, 'm', model, wm, amount)
    if cap then deny, warns = cap_sort(cap, deny, warns) end
  end
  return deny, warns
end

-- A cap event (credits.cap_reached / credits.cap_warning), written when the call finishes: an event
-- about a decision that wrote a row names it ('ref' = "<entry>/<row>", the transaction id's source).
local function cap_event(ctx, etype, ak, aid, cap, amount, row_index)
  local pending = ctx.pending
  pending[#pending + 1] = { { 'type', etype, 'ts', ts_text(ctx.c), 'ak', ak, 'acct', aid,
    'period', cap[1] == 'd' and 'daily' or 'monthly', 'model', cap[2], 'limit', I(cap[3]), 'action', cap[4],
    'spend', I(cap[5]), 'amount', I(amount) }, row_index }
end

local function events_write(ctx, entry)
  for _, e in B_ipairs(ctx.pending) do
    local fields = e[1]
    if e[2] and entry then
      fields[#fields + 1] = 'ref'
      fields[#fields + 1] = ref_of(entry, e[2])
    end
    event(ctx, fields)
  end
end
