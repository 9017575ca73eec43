-- debit_many.lua: many debits (settle or charge) in one call, each all-or-nothing on its own and
-- decided in order, exactly as if debit.lua had been called once per decision.
-- All keys must share one hash tag (the client groups decisions by shard).
-- KEYS: 9 keys per decision, in debit.lua's order (decision i uses KEYS[9*(i-1)+1 .. 9*i])
-- ARGV: 16 arguments per decision, in debit.lua's order (decision i uses ARGV[16*(i-1)+1 .. 16*i])
-- Reply: one debit.lua reply per decision, in order
local out = {}
local n = #KEYS / 9
for i = 0, n - 1 do
  local K, A = {}, {}
  for j = 1, 9 do K[j] = KEYS[i * 9 + j] end
  for j = 1, 16 do A[j] = ARGV[i * 16 + j] end
  out[i + 1] = user_debit(K, A)
end
return out
