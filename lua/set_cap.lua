-- set_cap.lua: set (or remove) one spend cap of an account and record it in the ledger.
-- KEYS[1] caps hash   KEYS[2] ledger stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] account kind   ARGV[4] account id (raw)
-- ARGV[5] cap field ("d", "m", "d|<model>", "m|<model>")   ARGV[6] "limit|action", or "" to remove
-- ARGV[7] the cap as JSON (ledger metadata)
-- Reply: { "ok", "0", previous value or "" }
local now = now_ms(ARGV[1])
local prev = redis.call('HGET', KEYS[1], ARGV[5]) or ''
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[1], ARGV[5])
else
  redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
end
ledger(KEYS[2], { 'id', ARGV[2], 'ts', I(now), 'ak', ARGV[3], 'acct', ARGV[4], 'kind', 'config',
  'amount', '0', 'op', ARGV[6] == '' and 'cap_removed' or 'cap_set', 'meta', ARGV[7] })
return { 'ok', '0', prev }
