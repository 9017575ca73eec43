-- debit_many.lua: many debits (settle or charge) in one call, each all-or-nothing on its own and
-- decided in order, exactly as if debit.lua had been called once per decision (at one instant:
-- TIME is read once per call). All keys share one hash tag (the client groups decisions by shard).
-- Values equal for every decision of the call (the shard's streams, clock offset, TTLs, ...) are
-- sent once; a layout names which of debit.lua's KEYS / ARGV positions are shared and which are
-- each decision's own, as strings of one byte per position (the byte's value = the 1-based position):
-- ARGV[1] own key positions    ARGV[2] shared key positions
-- ARGV[3] own argument positions    ARGV[4] shared argument positions (must include 1, the clock offset)
-- KEYS: the shared keys in the order of ARGV[2], then per decision its own keys in the order of ARGV[1]
-- ARGV[5 ..]: the shared arguments in the order of ARGV[4], then per decision its own arguments
-- Reply: one debit.lua reply per decision, in order
local kown, kshared = { string.byte(ARGV[1], 1, -1) }, { string.byte(ARGV[2], 1, -1) }
local aown, ashared = { string.byte(ARGV[3], 1, -1) }, { string.byte(ARGV[4], 1, -1) }
local K, A = {}, {}
for j = 1, #kshared do K[kshared[j]] = KEYS[j] end
for j = 1, #ashared do A[ashared[j]] = ARGV[4 + j] end
local ki, ai, nk, na = #kshared, 4 + #ashared, #kown, #aown
local now = now_ms(A[1])
local out = {}
for i = 0, (#KEYS - ki) / nk - 1 do
  local kb, ab = ki + i * nk, ai + i * na
  for j = 1, nk do K[kown[j]] = KEYS[kb + j] end
  for j = 1, na do A[aown[j]] = ARGV[ab + j] end
  out[i + 1] = user_debit(K, A, nil, now)
end
return out
