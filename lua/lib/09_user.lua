-- lib/09_user.lua: one user debit (a charge, or the settlement of a hold), the body of debit.lua,
-- debit_many.lua and plan_debit.lua. Its reply and the steps it shares with a team debit are
-- lib/08_debit.lua's.

-- Run one user debit in the call's context.
-- K: debit.lua's KEYS: { account hash, (ledger, events: unused), grants hash, idempotency key or
--      "<account>:i" or nil } (lean: account and ledger only, see keys_short)
-- A: debit.lua's ARGV: { call id, amount (text), fragment, (config: unused), then optional (nil = ""):
--      model, min balance (text, charges; "" = 0), reservation id, quantities ("name=n;...": a
--      charge's, checked; a settlement's actual ones, correcting its hold's estimate) }
-- X: extra fields for the row's extra JSON (plan_debit.lua), or nil
-- Returns the reply: its text, or the pending table of a decision that wrote a row; in a batch
-- (ctx.many), one without an idempotency key to remember it answers instead the text that follows
-- its entry id, and true (finish puts "ok|0|<entry>" before it).
local function user_debit(ctx, K, A, X)
  local acct, G, idem = K[1], K[4], K[5]
  if idem then idem = idem_given(acct, idem) end
  local has_idem = idem ~= nil
  if has_idem then
    local again = idem_seen(ctx, idem)
    if again then return again end
  end
  local cid, amount_s, frag, model, rid = A[1], A[2], A[3], A[5] or '', A[7] or ''
  local hf = rid ~= '' and ('h:' .. rid) or nil
  local mf = model ~= '' and ('M|' .. model) or nil
  local st = account(ctx, acct, (hf and mf) and { hf, mf } or hf or mf)
  if st.rc or (st.ring ~= '' and sfind(st.ring, cid, 1, true)) then  -- (a cheap test first: a repeat is rare)
    local seen = ring_seen(st, cid)
    if seen then return seen_reply(st, seen, amount_s) end
  end
  if ctx.cfg.backlog > 0 and backlog_full(ctx) then return refusal('ledger_backlog_full', amount_s, st) end
  local amount = amount_s + 0
  local floor = not hf and A[6]
  floor = (floor and floor ~= '') and floor + 0 or 0
  local c = ctx.c
  if not c then
    c = debit_clock(ctx, st, not (hf or mf or X) and frag, amount_s, amount, st.bal - st.held - amount - floor)
  elseif c == SPEC and not st.day_only then  -- a batch's, on an account that needs the time itself
    c = many_clock_now(ctx)
  end
  local now = c.now
  local aid, grants
  if st.hx ~= '' or st.gx ~= '' then
    if keys_short(ctx, st) then return KEYS_SHORT end
    aid = frag_value(frag, 3)
    holds_sweep(ctx, st, 'u', aid, false)
    grants = grants_due(ctx, st, G, 'u', aid, cid)
  end

  local hold, hop = 0, nil
  if hf then
    local h = field(st, hf)
    if not h then return refusal('reservation_not_found', amount_s, st) end
    local _
    hold, _, hop = hold_decode(h, false)
    if sbyte(frag, 2) == 9 then frag = '\t' .. esc(hop) .. ssub(frag, 2) end  -- op from the hold
  end

  -- request-rate limit: charges only (a settlement belongs to a request already admitted)
  local new_tat, rate
  if not hf and st.rl ~= '' then
    local ok, tat, retry, remaining, limit = gcra(st.rl, st.tat, now)
    if not ok then return refusal('rate_limited', amount_s, st, '', I(retry), '0|' .. limit) end
    new_tat, rate = tat, I(remaining) .. '|' .. limit
  end
  -- quantity limits (tokens per minute...): a charge is checked with its quantities
  local q_writes
  if not hf and st.ql ~= '' then
    local q_ok, q_retry
    q_ok, q_retry, q_writes = quantity_admit(st, A[8] or '', model, now)
    if not q_ok then return refusal('rate_limited', amount_s, st, '', I(q_retry), rate) end
  end

  -- spend caps: a charge of nothing (plan_debit.lua's allowance-only charge) passes none
  local w = mf and model_window(st, mf)
  local deny, warns
  if not ctx.caps_ok and (st.dL or st.mL or (w and (w.dC ~= '' or w.mC ~= ''))) and (amount > 0 or hf) then
    deny, warns = caps_check(st, w, model, amount, c)
    if c == SPEC then ctx.dated = true end  -- (judged on SPEC's day: many_stands checks it)
    -- a lean call that passed a cap (its event) is refused: keys_short asked only then
    if (deny or warns) and keys_short(ctx, st, deny, warns) then return KEYS_SHORT end
  end
  if deny then
    if not hf then
      cap_event(ctx, 'credits.cap_reached', 'u', aid or frag_value(frag, 3), deny, amount)
      return refusal('spend_cap_exceeded', amount_s, st, 'deny')
    end
    quantity_resolve(st, rid, nil)
    return settle_refused(ctx, st, hf, hold, frag, cid, amount_s, amount, 'u', deny, has_idem and idem)
  end

  -- the hold covers up to its amount; anything beyond must come from the available balance
  local need = amount - hold
  if need > 0 and st.bal - st.held - need < floor then
    return refusal('insufficient_credits', amount_s, st)
  end

  st_balance(st, c, st.bal - amount, amount)
  if hf then
    st_held(st, st.held - hold)
    field_del(st, hf)
    quantity_resolve(st, rid, A[8] or '')
  end
  if new_tat then st.tat, st.wS = I(new_tat), true end
  if q_writes then quantity_store(st, q_writes) end
  if w and amount > 0 then
    total_add(w, c, amount)
    w.dirty = true
  end
  if ctx.pre then return debit_made(ctx, st, cid, amount_s, idem, rate or '|') end  -- (none of what follows applies)
  local action = warns and cap_action(warns) or ''
  local x = ''
  if grants or X then
    local e = {}
    if grants then
      local used = grants_consume(grants, G, amount, now, hf ~= nil)
      if used ~= '' then e.gc = used end
    end
    if X then for k, v in B_pairs(X) do e[k] = v end end
    if B_next(e) then x = extra_json(e) end
  end
  local bals, helds = st.bals, st.helds_of == st.held and st.helds or held_text(st)
  if not bals then  -- (bal_text's, without its call)
    bals = sformat('%d', st.bal)
    st.bals = bals
  end
  local n = row(ctx, '', hf and 'settle' or 'debit', amount_s, bals, helds,
    hf and I(hold) or '', '', action, '', x, frag, amount > 0 and '-' or nil)
  if warns then cap_warnings(ctx, warns, 'u', aid or frag_value(frag, 3), amount, n) end
  if grants then
    -- a settled hold may free the pinned rest of an expired grant: it expires now
    if hf then
      grants_expire(ctx, st, grants, G, true, 'u', aid, cid)
      bals = bal_text(st)
    end
    grants_keep(st, grants)
  end
  if st.rc then ring_add(st, cid, n) else st.rc, st.rr = cid, n end
  if ctx.many and not has_idem then  -- a batch's: its text after the entry id, and true (finish)
    return (ROW_SUFFIX[n] or row_suffix(n)) .. '|' .. amount_s .. '|' .. bals .. '|' .. helds .. '|' .. action ..
      '|0|' .. (rate or '|'), true
  end
  local r = { 'ok', n, amount_s, bals, helds, action, rate or '|', '0' }
  if has_idem then idem_put(ctx, idem, r) end
  return r
end
