-- reserve.lua: hold credits for an operation (a pending transfer that expires on its own).
-- KEYS: account idem ledger grants
-- ARGV: cid rid amount floor ttl op frag rate quantities model config
--   floor: the balance to keep available; ttl: the hold's lifetime (ms); op: the operation (raw);
--   rate: "1" applies the account's request-rate limit too (a gateway admitting a request with a hold);
--   quantities: "name=n;..." (an estimate, checked against the account's quantity limits and corrected
--   when the hold is settled) or ""; model: the request's model or ""
-- REPLY (text): status idempotent rid amount balance held expires retry remaining limit
--   remaining, limit: the request-rate limit's (rate "1"), '' when none was checked
--   status: ok | insufficient_credits | rate_limited | ledger_backlog_full
local ctx = ctx_new(ARGV[11], KEYS[3], KEYS[3])
local acct, idem = KEYS[1], KEYS[2]
local has_idem = #idem ~= #acct + 2  -- "<account>:i": no key
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
  local e = h and B_select(2, hold_decode(h, false)) or 0
  return 'ok|1|' .. rid .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. held_text(st) .. '|' .. I(e) .. '|0||'
end
if backlog_full(ctx) then return 'ledger_backlog_full|0||0|0|0|0|0||' end
local aid
if st.hx ~= '' or st.gx ~= '' then  -- expired holds and grants leave first
  aid = frag_value(frag, 3)
  holds_sweep(ctx, st, 'u', aid, false)
  grants_due(ctx, st, KEYS[4], 'u', aid, cid)
end
local amount = amount_s + 0
local function refused(status, retry, rate)  -- rate: "remaining|limit"
  finish_writes(ctx)  -- expiries found on the way are kept
  return status .. '|0||0|' .. bal_text(st) .. '|' .. held_text(st) .. '|0|' .. retry .. '|' .. rate
end
local new_tat, rate
if ARGV[8] == '1' and st.rl ~= '' then
  local ok, tat, retry, remaining, limit = gcra(st.rl, st.tat, ctx.c.now)
  if not ok then return refused('rate_limited', I(retry), '0|' .. limit) end
  new_tat, rate = tat, I(remaining) .. '|' .. limit
end
local q_ok, q_retry, q_writes = quantity_admit(st, ARGV[9], ARGV[10], ctx.c.now)
if not q_ok then return refused('rate_limited', I(q_retry), rate or '|') end
if st.bal - st.held - amount < ARGV[4] + 0 then return refused('insufficient_credits', '0', '|') end
local expires = ctx.c.now + ARGV[5]
st_held(st, st.held + amount)
holds_expiry_add(st, expires)
field_set(st, hf, hold_text(amount, expires, ARGV[6]))
if new_tat then st.tat, st.wS = I(new_tat), true end
if q_writes then
  quantity_store(st, q_writes)
  field_set(st, 'qh|' .. rid, ARGV[10] .. '|' .. ARGV[9])
end
row(ctx, rid, 'hold', '0', bal_text(st), held_text(st), amount_s, I(expires), '', '', '', frag)
ring_add(st, cid, nil)
finish_writes(ctx)
local r = 'ok|0|' .. rid .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. held_text(st) .. '|' .. I(expires) ..
  '|0|' .. (rate or '|')
if has_idem then rcall('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
