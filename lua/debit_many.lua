-- debit_many.lua: many debits (settle or charge) in one call, each all-or-nothing on its own and
-- decided in order, exactly as if debit.lua had been called once per decision.
-- All keys must share one hash tag (the client groups decisions by shard).
-- KEYS: 11 keys per decision, in debit.lua's order (decision i uses KEYS[11*(i-1)+1 .. 11*i])
-- ARGV: 17 arguments per decision, in debit.lua's order (decision i uses ARGV[17*(i-1)+1 .. 17*i])
-- Reply: one debit.lua reply per decision, in order
local out = {}
local n = #KEYS / 11
for i = 0, n - 1 do
  local K, A = {}, {}
  for j = 1, 11 do K[j] = KEYS[i * 11 + j] end
  for j = 1, 17 do A[j] = ARGV[i * 17 + j] end
  out[i + 1] = user_debit(K, A)
end
return out
