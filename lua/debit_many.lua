-- debit_many.lua: many charges in one call, each all-or-nothing on its own and decided in order,
-- exactly as if debit.lua had been called once per decision at one instant (TIME is read once).
-- All keys share one hash tag (the client groups decisions by shard). An account is read once and
-- written once per call; the decisions' ledger rows form ONE stream entry.
-- KEYS: ledger events; per decision: account grants idem
-- ARGV: config; per decision: cid amount model floor frag quantities
-- REPLY (lines): per decision: status idempotent ref amount balance held cap retry remaining limit
--   one debit.lua reply per decision, joined by newlines
local ctx = ctx_new(ARGV[1], KEYS[1], KEYS[2])
local replies, idems = {}, {}
-- one decision's KEYS and ARGV as debit.lua has them, refilled for each (user_debit keeps neither)
local K, A = {}, {}
A[7] = ''
for i = 0, (#KEYS - 2) / 3 - 1 do
  local k, a = 2 + 3 * i, 1 + 6 * i
  local acct = KEYS[k + 1]
  local idem = idem_given(acct, KEYS[k + 3])
  K[1], K[4], K[5] = acct, KEYS[k + 2], idem
  A[1], A[2], A[3], A[5], A[6], A[8] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 5], ARGV[a + 3], ARGV[a + 4], ARGV[a + 6]
  replies[i + 1] = user_debit(ctx, K, A)
  idems[i + 1] = idem or false
end
return tconcat(finish(ctx, replies, idems), '\n')
