-- pool_debit_many.lua: many team debits in one call, each all-or-nothing on its own and decided in
-- order, exactly as if pool_debit.lua had been called once per decision. All keys share one hash
-- tag (the client groups decisions by shard).
-- KEYS: 14 keys per decision, in pool_debit.lua's order
-- ARGV: 15 arguments per decision, in pool_debit.lua's order
-- Reply: one pool_debit.lua reply per decision, in order
local out = {}
for i = 0, #KEYS / 14 - 1 do
  local K, A = {}, {}
  for j = 1, 14 do K[j] = KEYS[i * 14 + j] end
  for j = 1, 15 do A[j] = ARGV[i * 15 + j] end
  out[i + 1] = team_debit(K, A)
end
return out
