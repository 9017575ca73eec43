-- pool_reserve.lua: hold team credits for a member's long job (reserve_team); expires on its own.
-- The member's cap counts their open holds, so two-phase spending cannot bypass it.
-- KEYS: team idem ledger
-- ARGV: cid rid amount member ttl op frag config
-- REPLY (text): status idempotent rid amount balance held expires
--   status: ok | team_not_found | user_not_in_team | spend_cap_exceeded | insufficient_team_balance
--           | ledger_backlog_full
local ctx = ctx_new(ARGV[8], KEYS[3], KEYS[3])
local acct, idem = KEYS[1], KEYS[2]
local has_idem = #idem ~= #acct + 2  -- "<account>:i": no key
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, rid, amount_s, uid, frag = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7]
local hf = 'h:' .. rid
local st = account(ctx, acct, hf, 'U|' .. uid)
if not st.exists then return 'team_not_found|0||0|0|0|0' end
local m = member_of(st, uid)
if not m then return 'user_not_in_team|0||0|' .. bal_text(st) .. '|' .. held_text(st) .. '|0' end
if ring_seen(st, cid) or field(st, hf) then
  local h = field(st, hf)
  local e = h and B_select(2, hold_decode(h, true)) or 0
  return 'ok|1|' .. rid .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. held_text(st) .. '|' .. I(e)
end
if backlog_full(ctx) then return 'ledger_backlog_full|0||0|0|0|0' end
local tid
if st.hx ~= '' then tid = frag_value(frag, 3) end
holds_sweep(ctx, st, 't', tid, true)
local amount = amount_s + 0
local status
if m.cap and member_spent(m, ctx.c) + m.held + amount > m.cap then
  status = 'spend_cap_exceeded'
elseif st.bal - st.held - amount < 0 then
  status = 'insufficient_team_balance'
end
if status then
  finish_writes(ctx)
  return status .. '|0||0|' .. bal_text(st) .. '|' .. held_text(st) .. '|0'
end
local expires = ctx.c.now + ARGV[5]
st_held(st, st.held + amount)
m.held, m.dirty = m.held + amount, true
holds_expiry_add(st, expires)
field_set(st, hf, hold_text(amount, expires, ARGV[6], uid))
row(ctx, rid, 'hold', '0', bal_text(st), held_text(st), amount_s, I(expires), '', '', '', frag)
ring_add(st, cid, nil)
finish_writes(ctx)
local r = 'ok|0|' .. rid .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. held_text(st) .. '|' .. I(expires)
if has_idem then rcall('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
