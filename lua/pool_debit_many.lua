-- pool_debit_many.lua: many team debits in one call, each all-or-nothing on its own and decided in
-- order, exactly as if pool_debit.lua had been called once per decision at one instant. All keys
-- share one hash tag (the client groups decisions by shard); one stream entry for the call.
-- KEYS: ledger events; per decision: team [idem]
-- ARGV: config shape; per decision: cid amount member frag [model]
--   member: the member's field, "U|<member id>" (as pool_debit.lua's)
--   shape: one character per decision ('0' + 1 if it sends its idem KEY + 2 if its model;
--   ducto_redis/specs.py SHAPE_CHARS): a decision without them has no idempotency key, model ""
-- REPLY (lines): per decision: status idempotent ref amount balance held cap retry remaining limit
--   one pool_debit.lua reply per decision, joined by newlines
local ctx = ctx_new(ARGV[1], KEYS[1], KEYS[2])
local shape = ARGV[2]
-- (lib/08_debit.lua's tables, refilled) one decision's KEYS and ARGV as pool_debit.lua has them
local replies, idems, K, A = MANY_REPLIES, MANY_MARKS, MANY_K, MANY_A
A[5], A[7] = nil, ''
local k, a = 3, 3  -- the next decision's first KEY and ARGV
for i = 1, #shape do
  local s = sbyte(shape, i)
  K[1] = KEYS[k]
  A[1], A[2], A[3], A[4] = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  k, a = k + 1, a + 4
  if s % 2 == 1 then  -- '1', '3': its idempotency key
    K[4], k = KEYS[k], k + 1
  else
    K[4] = nil
  end
  if s >= 50 then  -- '2', '3': its model
    A[6], a = ARGV[a], a + 1
  else
    A[6] = nil
  end
  replies[i] = team_debit(ctx, K, A)
  idems[i] = K[4] or false
end
return finish(ctx, replies, idems, #shape)
