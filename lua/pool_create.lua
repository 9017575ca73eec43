-- pool_create.lua: create a team pool with a name and an initial balance (one ledger entry).
-- KEYS[1] team hash   KEYS[2] idempotency key   KEYS[3] ledger stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] team id (raw)   ARGV[4] name
-- ARGV[5] initial balance (>= 0)   ARGV[6] has idempotency key   ARGV[7] idempotency key (raw)
-- ARGV[8] idempotency TTL s
-- Reply: { "ok"|"team_exists", idempotent, team id, name, balance }
local again = replay(KEYS[2], ARGV[6])
if again then return again end
if redis.call('HEXISTS', KEYS[1], 'created') == 1 then
  return { 'team_exists', '0', ARGV[3], ARGV[4], '0' }
end
local now = now_ms(ARGV[1])
redis.call('HSET', KEYS[1], 'name', ARGV[4], 'bal', ARGV[5], 'held', '0', 'life', ARGV[5], 'mc', '0',
  'created', I(now))
ledger(KEYS[3], { 'id', ARGV[2], 'ts', I(now), 'ak', 't', 'acct', ARGV[3], 'kind', 'credit',
  'amount', ARGV[5], 'bal', ARGV[5], 'held', '0', 'type', 'team_created', 'op', 'team_created',
  'idem', ARGV[7], 'meta', cjson.encode({ name = ARGV[4] }) })
return remember(KEYS[2], ARGV[6], ARGV[8], { 'ok', '0', ARGV[3], ARGV[4], ARGV[5] })
