-- set_plan.lua: assign a plan to a user; its free allowance is consumed before paid credits.
-- The plan id lives in the account hash (field 'plan') so plan_debit.lua reads it in the same slot.
-- Does not create the user record. Recorded as a ledger 'config' entry (op plan_set, plan <id>).
-- KEYS[1] account hash   KEYS[2] ledger stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] user id (raw)   ARGV[4] plan id
-- ARGV[5] metadata JSON (the plan as known when set)
-- Reply: { "ok", "0", previous plan id or "" }
local now = now_ms(ARGV[1])
local prev = redis.call('HGET', KEYS[1], 'plan') or ''
redis.call('HSET', KEYS[1], 'plan', ARGV[4])
ledger(KEYS[2], { 'id', ARGV[2], 'ts', I(now), 'ak', 'u', 'acct', ARGV[3], 'kind', 'config', 'amount', '0',
  'op', 'plan_set', 'plan', ARGV[4], 'prev', prev, 'meta', ARGV[5] })
return { 'ok', '0', prev }
