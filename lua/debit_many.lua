-- debit_many.lua: many debits (settle or charge) in one call, each all-or-nothing on its own and
-- decided in order, exactly as if debit.lua had been called once per decision (at one instant:
-- TIME is read once per call). All keys share one hash tag (the client groups decisions by shard).
-- Values equal for every decision of the call (the shard's streams, clock offset, TTLs, ...) are
-- sent once; the layout says which of debit.lua's positions those are:
-- ARGV[1] key layout: one letter per debit.lua KEYS position, 's' = shared (sent once), 'o' = own
-- ARGV[2] argument layout: the same per debit.lua ARGV position ('s' required at 1, the clock offset)
-- KEYS: the shared keys in position order, then per decision its own keys in position order
-- ARGV[3 ..]: the shared arguments in position order, then per decision its own arguments
-- Reply: one debit.lua reply per decision, in order
local kspec, aspec = ARGV[1], ARGV[2]
local K, A, kown, aown = {}, {}, {}, {}
local ki, ai = 0, 2
for p = 1, #kspec do
  if string.byte(kspec, p) == 115 then ki = ki + 1; K[p] = KEYS[ki] else kown[#kown + 1] = p end
end
for p = 1, #aspec do
  if string.byte(aspec, p) == 115 then ai = ai + 1; A[p] = ARGV[ai] else aown[#aown + 1] = p end
end
local nk, na = #kown, #aown
local now = now_ms(A[1])
local out = {}
for i = 0, (#KEYS - ki) / nk - 1 do
  local kb, ab = ki + i * nk, ai + i * na
  for j = 1, nk do K[kown[j]] = KEYS[kb + j] end
  for j = 1, na do A[aown[j]] = ARGV[ab + j] end
  out[i + 1] = user_debit(K, A, now)
end
return out
