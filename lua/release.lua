-- release.lua: give a reservation's credits back without spending them (resolves a hold once).
-- KEYS: account idem ledger grants
-- ARGV: cid tx rid frag config
-- REPLY (text): status idempotent rid amount balance held
--   status: ok | reservation_not_found
local ctx = ctx_new(ARGV[5], KEYS[3], KEYS[3])
local acct, idem = KEYS[1], KEYS[2]
local has_idem = #idem ~= #acct + 2  -- "<account>:i": no key
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, tx, rid, frag = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local hf = 'h:' .. rid
local st = account(ctx, acct, { hf })
local seen = ring_seen(st, cid)
if seen then return 'ok|1|' .. rid .. '|0|' .. bal_text(st) .. '|' .. held_text(st) end
local aid
if st.hx ~= '' or st.gx ~= '' then
  aid = frag_value(frag, 3)
  holds_sweep(ctx, st, 'u', aid, false)
end
local h = field(st, hf)
if not h then
  finish_writes(ctx)
  return 'reservation_not_found|0|' .. rid .. '|0|' .. bal_text(st) .. '|' .. held_text(st)
end
local amount, _, op = hold_decode(h, false)
st_held(st, st.held - amount)
field_del(st, hf)
quantity_resolve(st, rid, nil)  -- the hold's quantity estimate is given back
if sbyte(frag, 2) == 9 then frag = '\t' .. esc(op) .. ssub(frag, 2) end
row(ctx, tx, 'release', '0', bal_text(st), held_text(st), I(amount), '', '', '', '', frag)
-- the released hold may free the pinned rest of an expired grant
local list = grants_due(ctx, st, KEYS[4], 'u', aid, cid)
if list then grants_keep(st, list) end
ring_add(st, cid, nil)
finish_writes(ctx)
local r = 'ok|0|' .. rid .. '|' .. I(amount) .. '|' .. bal_text(st) .. '|' .. held_text(st)
if has_idem then rcall('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
