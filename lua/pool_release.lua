-- pool_release.lua: give a team reservation's credits back to the pool without spending them.
-- KEYS: team idem ledger
-- ARGV: cid tx rid member frag config
-- REPLY (text): status idempotent rid amount balance held
--   status: ok | team_not_found | reservation_not_found
local ctx = ctx_new(ARGV[6], KEYS[3], KEYS[3])
local acct, idem = KEYS[1], KEYS[2]
local has_idem = #idem ~= #acct + 2  -- "<account>:i": no key
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, tx, rid, uid, frag = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local hf = 'h:' .. rid
local st = account(ctx, acct, hf, 'U|' .. uid)
if not st.exists then return 'team_not_found|0|' .. rid .. '|0|0|0' end
if ring_seen(st, cid) then return 'ok|1|' .. rid .. '|0|' .. bal_text(st) .. '|' .. held_text(st) end
local tid
if st.hx ~= '' then tid = frag_value(frag, 3) end
holds_sweep(ctx, st, 't', tid, true)
local raw = field(st, hf)
local amount, op, member, _
if raw then amount, _, op, member = hold_decode(raw, true) end
if not raw or member ~= uid then
  finish_writes(ctx)
  return 'reservation_not_found|0|' .. rid .. '|0|' .. bal_text(st) .. '|' .. held_text(st)
end
st_held(st, st.held - amount)
local m = member_record(st, uid)  -- a removed member's hold is released too
if m then m.held, m.dirty = m.held - amount, true end
field_del(st, hf)
if sbyte(frag, 2) == 9 then frag = '\t' .. esc(op) .. ssub(frag, 2) end
row(ctx, tx, 'release', '0', bal_text(st), held_text(st), I(amount), '', '', '', '', frag)
ring_add(st, cid, nil)
finish_writes(ctx)
local r = 'ok|0|' .. rid .. '|' .. I(amount) .. '|' .. bal_text(st) .. '|' .. held_text(st)
if has_idem then rcall('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
