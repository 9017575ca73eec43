-- lib/08_user.lua: one user debit (a charge, or the settlement of a hold), the body of debit.lua,
-- debit_many.lua and plan_debit.lua.
--
-- A decision's reply is a table r = { status, idempotent, row, amount, balance, held, cap action,
-- retry-after ms, rate-limit remaining, [tail] } turned into text by reply_text once the call's
-- entry id is known: "status|idempotent|<entry>/<row>|amount|balance|held|cap|retry|remaining[|tail]"
-- (<entry>/<row> names the decision's ledger row, '' when it wrote none).

local function reply_text(r, entry)
  local ref = r.ref or (r[3] and (entry .. '/' .. N(r[3]))) or ''
  local s = r[1] .. '|' .. r[2] .. '|' .. ref .. '|' .. r[4] .. '|' .. r[5] .. '|' .. r[6] .. '|' .. (r[7] or '') ..
    '|' .. (r[8] or '0') .. '|' .. (r[9] or '')
  if r[10] then s = s .. '|' .. r[10] end
  return s
end

local function refusal(status, amount, st, cap, retry, remaining)
  return { status, '0', nil, amount, bal_text(st), held_text(st), cap or '', retry or '0', remaining or '' }
end

-- the reply to a call id this account has seen (a re-sent call): nothing changes
local function seen_reply(st, seen, amount)
  return { 'ok', '1', nil, amount, bal_text(st), held_text(st), '', '0', '', ref = seen }
end

-- Run one user debit in the call's context.
-- K: { account hash, grants hash, idempotency key (or the never-written "<account>:i") }
-- A: { call id, amount (text), model, min balance (text, charges), fragment, reservation id or "",
--      quantities ("name=n;..." or "": a charge's, checked; a settlement's actual ones, correcting its hold's estimate) }
-- X: extra fields for the row's extra JSON (plan_debit.lua), or nil
-- Returns the reply table (see reply_text), or a string (an idempotency replay).
local function user_debit(ctx, K, A, X)
  local acct, G, idem = K[1], K[2], K[3]
  local has_idem = idem ~= acct .. ':i'
  if has_idem then
    local again = idem_seen(ctx, idem)
    if again then return again end
  end
  local cid, amount_s, model, frag, rid = A[1], A[2], A[3], A[5], A[6]
  local hf = rid ~= '' and ('h:' .. rid) or nil
  local mf = model ~= '' and ('M|' .. model) or nil
  local extra = (hf and mf) and { hf, mf } or (hf and { hf }) or (mf and { mf }) or {}
  local st = account(ctx, acct, extra)
  local seen = ring_seen(st, cid)
  if seen then return seen_reply(st, seen, amount_s) end
  if backlog_full(ctx) then return refusal('ledger_backlog_full', amount_s, st) end
  local c = ctx.c
  local amount = amount_s + 0
  local aid
  if st.hx ~= '' or st.gx ~= '' then aid = frag_value(frag, 3) end
  holds_sweep(ctx, st, 'u', aid, false)
  local grants = grants_due(ctx, st, G, 'u', aid, cid)

  local hold, hop = 0, nil
  if hf then
    local h = field(st, hf)
    if not h then return refusal('reservation_not_found', amount_s, st) end
    local _
    hold, _, hop = hold_decode(h, false)
    if string.byte(frag, 2) == 9 then frag = '\t' .. esc(hop) .. string.sub(frag, 2) end  -- op from the hold
  end

  -- request-rate limit: charges only (a settlement belongs to a request already admitted)
  local new_tat, left
  if not hf and st.rl ~= '' then
    local ok, tat, retry, remaining = gcra(st.rl, st.tat, c.now)
    if not ok then return refusal('rate_limited', amount_s, st, '', I(retry), '0') end
    new_tat, left = tat, remaining
  end
  -- quantity limits (tokens per minute...): a charge is checked with its quantities
  local q_writes
  if not hf and st.ql ~= '' then
    local q_ok, q_retry
    q_ok, q_retry, q_writes = quantity_admit(st, A[7] or '', model, c.now)
    if not q_ok then return refusal('rate_limited', amount_s, st, '', I(q_retry), left and I(left) or '') end
  end

  local dS, mS = st_spend(st, c)
  local w = mf and model_window(st, mf)
  local deny, warns = caps_check(st, w, model, amount, dS, mS, c)
  if deny then
    aid = aid or frag_value(frag, 3)
    if not hf then
      cap_event(ctx, 'credits.cap_reached', 'u', aid, deny, amount)
      return refusal('spend_cap_exceeded', amount_s, st, 'deny')
    end
    -- refusing a settlement releases the hold: the reserved credits stay the user's
    st_held(st, st.held - hold)
    field_del(st, hf)
    quantity_resolve(st, rid, nil)
    local n = row(ctx, '', 'release', '0', bal_text(st), held_text(st), I(hold), '', '', 'spend_cap_exceeded', '',
      frag)
    cap_event(ctx, 'credits.cap_reached', 'u', aid, deny, amount, n)
    ring_add(st, cid, n)
    local r = { 'spend_cap_exceeded', '0', n, amount_s, bal_text(st), held_text(st), 'deny', '0', '' }
    if has_idem then ctx.idem[idem] = r end
    return r
  end

  -- the hold covers up to its amount; anything beyond must come from the available balance
  local need = amount - hold
  local floor = hf and 0 or A[4] + 0
  if need > 0 and st.bal - st.held - need < floor then return refusal('insufficient_credits', amount_s, st) end

  st_balance(st, c, st.bal - amount, amount)
  if hf then
    st_held(st, st.held - hold)
    field_del(st, hf)
    quantity_resolve(st, rid, A[7] or '')
  end
  if new_tat then st.tat, st.wS = I(new_tat), true end
  quantity_store(st, q_writes)
  if w and amount > 0 then
    total_add(w, c, amount)
    w.dirty = true
  end
  local action = ''
  if warns then
    for _, cap in ipairs(warns) do
      if action == '' or cap[4] == 'warn' then action = cap[4] end
    end
  end
  local x = ''
  if grants or X then
    local e = {}
    if grants then
      local used = grants_consume(grants, G, amount, c.now, hf ~= nil)
      if used ~= '' then e.gc = used end
    end
    if X then for k, v in pairs(X) do e[k] = v end end
    if next(e) then x = extra_json(e) end
  end
  local n = row(ctx, '', hf and 'settle' or 'debit', amount == 0 and '0' or '-' .. amount_s, bal_text(st),
    held_text(st), hf and I(hold) or '', '', action, '', x, frag)
  if warns then
    aid = aid or frag_value(frag, 3)
    for _, cap in ipairs(warns) do
      cap_event(ctx, cap[4] == 'warn' and 'credits.cap_warning' or 'credits.cap_reached', 'u', aid, cap, amount, n)
    end
  end
  if grants then
    -- a settled hold may free the pinned rest of an expired grant: it expires now
    if hf then grants_expire(ctx, st, grants, G, true, 'u', aid, cid) end
    grants_keep(st, grants)
  end
  ring_add(st, cid, n)
  local r = { 'ok', '0', n, amount_s, bal_text(st), held_text(st), action, '0', left and I(left) or '' }
  if has_idem then ctx.idem[idem] = r end
  return r
end

-- Finish a call: write the entry, the accounts, the idempotency keys; the replies as text.
local function finish(ctx, replies, idem_keys)
  local entry = ctx_xadd(ctx)
  accounts_store(ctx, entry)
  if #ctx.pending > 0 then events_write(ctx, entry) end
  local out = {}
  for i, r in ipairs(replies) do
    if type(r) == 'string' then
      out[i] = r
    else
      out[i] = reply_text(r, entry)
      local key = idem_keys and idem_keys[i]
      if key and r[2] == '0' and ctx.idem[key] == r then
        redis.call('SET', key, out[i], 'EX', ctx.cfg.idem_ttl)
        ctx.idem[key] = replayed(out[i])
      end
    end
  end
  return out
end
