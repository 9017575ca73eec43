-- add_credits.lua: credit an account's balance (amount 0 only creates the record). With expires_at
-- (users) the credit is an expiring grant (lib/07_grants.lua) and the account joins its shard's
-- grant index. An expiry already past is taken, as ducto takes it: the grant is due at once, so it
-- is never spendable, and the next sweep (or script touching the account) expires it.
-- KEYS: account idem ledger grants gindex
-- ARGV: cid tx amount purchase frag expires must_exist config
--   purchase: "1" when the credit counts toward lifetime purchased; must_exist: "1" for a team top-up
-- REPLY (text): status idempotent tx amount balance life
--   status: ok | invalid_amount | team_not_found
local ctx = ctx_new(ARGV[8], KEYS[3], KEYS[3])
local acct, idem = KEYS[1], KEYS[2]
local has_idem = #idem ~= #acct + 2  -- "<account>:i": no key
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, tx, amount_s, frag = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local st = account(ctx, acct, { 'life', 'created' })
local life = field(st, 'life') or '0'
local seen = ring_seen(st, cid)
if seen then return 'ok|1|' .. tx .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. life end
if ARGV[7] == '1' and not st.exists then return 'team_not_found|0||' .. amount_s .. '|0|0' end
local amount = amount_s + 0
if st.bal + amount > MAX_SAFE then
  return 'invalid_amount|0||' .. amount_s .. '|' .. bal_text(st) .. '|' .. life
end
local ak = ARGV[7] == '1' and 't' or 'u'  -- the fragment's account kind: only a team top-up must exist
local aid
if st.gx ~= '' or ARGV[6] ~= '' or st.hx ~= '' then aid = frag_value(frag, 3) end
if st.hx ~= '' then holds_sweep(ctx, st, ak, aid, ak == 't') end
-- expired grants leave first
if st.gx ~= '' then grants_due(ctx, st, KEYS[4], ak, aid, cid) end
st_balance(st, ctx.c, st.bal + amount, 0)
if ARGV[4] == '1' then life = I(life + amount) end
field_set(st, 'life', life)
if not field(st, 'created') then field_set(st, 'created', ts_text(ctx.c)) end
if ARGV[6] ~= '' and amount > 0 then
  local expires = ARGV[6] + 0
  rcall('HSET', KEYS[4], tx, ARGV[6] .. '|' .. amount_s)
  if st.gx == '' or expires < st.gx + 0 then
    st.gx, st.wS = ARGV[6], true
    rcall('ZADD', KEYS[5], expires, aid)
  end
end
row(ctx, tx, 'credit', amount_s, bal_text(st), held_text(st), '', ARGV[6], '', '', '', frag)
ring_add(st, cid, nil)
st.wS = st.wS or not st.exists
local r = 'ok|0|' .. tx .. '|' .. amount_s .. '|' .. bal_text(st) .. '|' .. life
finish_writes(ctx)
if has_idem then rcall('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
