-- pool_debit_many.lua: many team debits in one call, each all-or-nothing on its own and decided in
-- order, exactly as if pool_debit.lua had been called once per decision at one instant. All keys
-- share one hash tag (the client groups decisions by shard); one stream entry for the call.
-- KEYS: ledger events; per decision: team idem
-- ARGV: config; per decision: cid amount model member frag
--   member: the member's field, "U|<member id>" (as pool_debit.lua's)
-- REPLY (lines): per decision: status idempotent ref amount balance held cap retry remaining limit
--   one pool_debit.lua reply per decision, joined by newlines
local ctx = ctx_new(ARGV[1], KEYS[1], KEYS[2])
local replies, idems = {}, {}
-- one decision's KEYS and ARGV as pool_debit.lua has them, refilled for each (team_debit keeps neither)
local K, A = {}, {}
A[7] = ''
for i = 0, (#KEYS - 2) / 2 - 1 do
  local k, a = 2 + 2 * i, 1 + 5 * i
  local team = KEYS[k + 1]
  local idem = idem_given(team, KEYS[k + 2])
  K[1], K[4] = team, idem
  A[1], A[2], A[3], A[4], A[6] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4], ARGV[a + 5], ARGV[a + 3]
  replies[i + 1] = team_debit(ctx, K, A)
  idems[i + 1] = idem or false
end
return tconcat(finish(ctx, replies, idems), '\n')
