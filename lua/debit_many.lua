-- debit_many.lua: many charges in one call, each all-or-nothing on its own and decided in order,
-- exactly as if debit.lua had been called once per decision at one instant: the time of the call's
-- ledger entry, or TIME read once (lib/08_debit.lua: the clock of a batch, many_stands).
-- All keys share one hash tag (the client groups decisions by shard). An account is read once and
-- written once per call; the decisions' ledger rows form ONE stream entry.
-- KEYS: ledger events; per decision: account grants [idem]
-- ARGV: config shape; per decision: cid amount frag [model floor quantities]
--   shape: one character per decision ('0' + 1 if it sends its idem KEY + 2 if its model floor
--   quantities; ducto_redis/specs.py SHAPE_CHARS): a decision without them reads them as debit.lua
--   does an absent one (no idempotency key; "")
-- REPLY (lines): per decision: status idempotent ref amount balance held cap retry remaining limit
--   one debit.lua reply per decision, joined by newlines
local ctx = ctx_new(ARGV[1], KEYS[1], KEYS[2], 'many')
local shape = ARGV[2]
-- (lib/08_debit.lua's tables, refilled) one decision's KEYS and ARGV as debit.lua has them
local replies, marks, K, A = MANY_REPLIES, MANY_MARKS, MANY_K, MANY_A
A[4], A[7] = nil, ''
repeat
  local k, a = 3, 3  -- the next decision's first KEY and ARGV
  for i = 1, #shape do
    local s = sbyte(shape, i)
    K[1], K[4] = KEYS[k], KEYS[k + 1]
    A[1], A[2], A[3] = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    k, a = k + 2, a + 3
    if s % 2 == 1 then  -- '1', '3': its idempotency key
      K[5], k = KEYS[k], k + 1
    else
      K[5] = nil
    end
    if s >= 50 then  -- '2', '3': its model, floor and quantities
      A[5], A[6], A[8], a = ARGV[a], ARGV[a + 1], ARGV[a + 2], a + 3
    else
      A[5], A[6], A[8] = nil, nil, nil
    end
    local r, tail = user_debit(ctx, K, A)
    replies[i], marks[i] = r, tail or K[5] or false
  end
  local out = finish(ctx, replies, marks, #shape)
  if out then return out end
  -- decided on a day or month that is not the entry's: once more, on Redis' clock as it was read
  ctx = ctx_new(ARGV[1], KEYS[1], KEYS[2], CLOCK)
until false
