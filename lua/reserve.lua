-- reserve.lua: hold credits for an operation (a pending transfer that expires on its own).
-- KEYS: account idem ledger grants
-- ARGV: cid rid amount floor ttl op frag config
--   floor: the balance to keep available; ttl: the hold's lifetime (ms); op: the operation (raw)
-- REPLY: status idempotent rid amount balance held expires
--   status: ok | insufficient_credits | ledger_backlog_full
local ctx = ctx_new(ARGV[8], KEYS[3], KEYS[3])
local acct, idem = KEYS[1], KEYS[2]
local has_idem = idem ~= acct .. ':i'
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, rid, amount_s, frag = ARGV[1], ARGV[2], ARGV[3], ARGV[7]
local hf = 'h:' .. rid
local st = account(ctx, acct, { hf })
local seen = ring_seen(st, cid)
if seen or field(st, hf) then
  local h = field(st, hf)
  local e = h and select(2, hold_decode(h, false)) or 0
  return 'ok|1|' .. rid .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. held_text(st) .. '|' .. I(e)
end
if backlog_full(ctx) then return 'ledger_backlog_full|0||0|0|0|0' end
local aid
if st.hx ~= '' or st.gx ~= '' then aid = frag_value(frag, 3) end
holds_sweep(ctx, st, 'u', aid, false)
grants_due(ctx, st, KEYS[4], 'u', aid, cid)
local amount = amount_s + 0
if st.bal - st.held - amount < ARGV[4] + 0 then
  finish(ctx, {}, nil)  -- expiries found on the way are kept
  return 'insufficient_credits|0||0|' .. bal_text(st) .. '|' .. held_text(st) .. '|0'
end
local expires = ctx.c.now + ARGV[5]
st_held(st, st.held + amount)
holds_expiry_add(st, expires)
field_set(st, hf, hold_text(amount, expires, ARGV[6]))
row(ctx, rid, 'hold', '0', bal_text(st), held_text(st), amount_s, I(expires), '', '', '', frag)
ring_add(st, cid, nil)
finish(ctx, {}, nil)
local r = 'ok|0|' .. rid .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. held_text(st) .. '|' .. I(expires)
if has_idem then redis.call('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
