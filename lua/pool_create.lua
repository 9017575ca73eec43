-- pool_create.lua: create a team pool with a name and an initial balance (one ledger entry).
-- KEYS: team idem ledger
-- ARGV: tx name balance frag config
-- REPLY (text): status idempotent balance
--   status: ok | team_exists
local ctx = ctx_new(ARGV[5], KEYS[3], KEYS[3])
local acct, idem = KEYS[1], KEYS[2]
local has_idem = #idem ~= #acct + 2  -- "<account>:i": no key
if has_idem then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local st = account(ctx, acct)
if st.exists then return 'team_exists|0|0' end
st_balance(st, ctx.c, ARGV[3] + 0, 0)
st.wS = true
field_set(st, 'name', ARGV[2])
field_set(st, 'life', ARGV[3])
field_set(st, 'mc', '0')
field_set(st, 'created', ts_text(ctx.c))
row(ctx, ARGV[1], 'credit', ARGV[3], ARGV[3], '0', '', '', '', '', '', ARGV[4])
finish_writes(ctx)
local r = 'ok|0|' .. ARGV[3]
if has_idem then rcall('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
