-- lib/10_team.lua: one team debit (deduct_team, or the settlement of a team hold), the body of
-- pool_debit.lua and pool_debit_many.lua (its reply and the steps it shares with a user debit:
-- lib/08_debit.lua). The team hash holds the pool (b, S as a user's), its members (U|<id>: cap,
-- period, spend windows, held) and its holds (h:<rid>, naming the member). A team exists once its
-- hash has b: pool_create.lua writes it (with 'created'), and no script writes b to a team that
-- does not exist (a team cap set beforehand writes S only), so the hot path reads no extra field.
-- Checks, in order: team exists -> membership -> the member's cap (their period spend plus what
-- their open holds hold) -> the team's caps -> pool balance (beyond any hold); then debits the pool
-- (never a member's personal balance). A refusal changes nothing, except that refusing a
-- settlement for a cap releases its hold.

-- K: pool_debit.lua's KEYS: { team hash, (ledger, events: unused), idempotency key or "<team>:i" or
--      nil } (lean: team and ledger only, see keys_short)
-- A: pool_debit.lua's ARGV: { call id, amount (text), member's field (U|<id>), fragment, (config: unused), then
--      optional (nil = ""): model, reservation id }
local function team_debit(ctx, K, A)
  local acct, idem = K[1], K[4]
  if idem then idem = idem_given(acct, idem) end
  local has_idem = idem ~= nil
  if has_idem then
    local again = idem_seen(ctx, idem)
    if again then return again end
  end
  local cid, amount_s, uf, frag, model, rid = A[1], A[2], A[3], A[4], A[6] or '', A[7] or ''
  local hf = rid ~= '' and ('h:' .. rid) or nil
  local mf = model ~= '' and ('M|' .. model) or nil
  local st = account(ctx, acct, (hf and mf) and { hf, mf } or hf or mf, uf)
  if not st.exists then return refusal('team_not_found', amount_s, st) end
  local m = member_of(st, nil, uf)
  if not m then return refusal('user_not_in_team', amount_s, st) end
  if st.rc or (st.ring ~= '' and sfind(st.ring, cid, 1, true)) then  -- (a cheap test first: a repeat is rare)
    local seen = ring_seen(st, cid)
    if seen then return seen_reply(st, seen, amount_s) end
  end
  if ctx.cfg.backlog > 0 and backlog_full(ctx) then return refusal('ledger_backlog_full', amount_s, st) end
  local amount = amount_s + 0
  local c = ctx.c or debit_clock(ctx, st, not (hf or mf) and frag, amount_s, amount, st.bal - st.held - amount, m)
  local tid
  if st.hx ~= '' then
    tid = frag_value(frag, 3)
    holds_sweep(ctx, st, 't', tid, true)
  end

  local hold = 0
  if hf then
    local raw = field(st, hf)
    local hop, hm, _
    if raw then hold, _, hop, hm = hold_decode(raw, true) end
    if not raw or 'U|' .. hm ~= uf then return refusal('reservation_not_found', amount_s, st) end
    if sbyte(frag, 2) == 9 then frag = '\t' .. esc(hop) .. ssub(frag, 2) end
  end

  -- the member's cap (their spend in its period, plus what their other open holds hold), then the
  -- team's caps
  local caps_ok = ctx.caps_ok
  local over = not caps_ok and m.cap and member_spent(m, c) + (m.held - hold) + amount > m.cap
  local w, deny, warns
  if not over then
    w = mf and model_window(st, mf)
    if not caps_ok and (st.dL or st.mL or (w and (w.dC ~= '' or w.mC ~= ''))) then
      deny, warns = caps_check(st, w, model, amount, c)
      -- a lean call that passed a cap (its event) is refused: keys_short asked only then
      if (deny or warns) and keys_short(ctx, st, deny, warns) then return KEYS_SHORT end
    end
  end
  if over or deny then  -- refused by the member's cap (no event), or by a deny cap of the team's
    if not hf then
      if deny then cap_event(ctx, 'credits.cap_reached', 't', tid or frag_value(frag, 3), deny, amount) end
      return refusal('spend_cap_exceeded', amount_s, st, 'deny')
    end
    m.held, m.dirty = m.held - hold, true
    return settle_refused(ctx, st, hf, hold, frag, cid, amount_s, amount, 't', deny, has_idem and idem)
  end
  local need = amount - hold
  if need > 0 and st.bal - st.held - need < 0 then return refusal('insufficient_team_balance', amount_s, st) end

  st_balance(st, c, st.bal - amount, amount)
  if hf then
    st_held(st, st.held - hold)
    m.held, m.dirty = m.held - hold, true
    field_del(st, hf)
  end
  if amount > 0 then member_add(m, c, amount) end
  if w and amount > 0 then
    total_add(w, c, amount)
    w.dirty = true
  end
  if ctx.pre then return debit_made(ctx, st, cid, amount_s, idem, '|') end  -- (none of what follows applies)
  local action = warns and cap_action(warns) or ''
  local bals, helds = bal_text(st), st.helds_of == st.held and st.helds or held_text(st)
  local n = row(ctx, '', hf and 'settle' or 'debit', amount_s, bals, helds,
    hf and I(hold) or '', '', action, '', '', frag, amount > 0 and '-' or nil)
  if warns then cap_warnings(ctx, warns, 't', tid or frag_value(frag, 3), amount, n) end
  if st.rc then ring_add(st, cid, n) else st.rc, st.rr = cid, n end
  local r = { 'ok', n, amount_s, bals, helds, action, '|', '0' }
  if has_idem then idem_put(ctx, idem, r) end
  return r
end
