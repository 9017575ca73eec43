-- pricing_set.lua: publish a pricing configuration as the next version and make it active.
-- Every version stays readable. Publishing the config (and label) that is already active changes
-- nothing and answers the active id (idempotent).
-- KEYS[1] active pricing hash (id, version, label, ts, config)   KEYS[2] versions hash (version -> JSON)
-- KEYS[3] the pricing ledger stream (a config entry per version: restore publishes them again)
-- ARGV[1] clock offset ms   ARGV[2] new id   ARGV[3] label or ""   ARGV[4] config JSON (validated)
-- Reply: { "ok", idempotent ("1" = already active), id, version }
local now = now_ms(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'id', 'version', 'label', 'config')
if cur[4] == ARGV[4] and (cur[3] or '') == ARGV[3] then
  return { 'ok', '1', cur[1], cur[2] }
end
local version = redis.call('HLEN', KEYS[2]) + 1
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'version', I(version), 'label', ARGV[3], 'ts', I(now),
  'config', ARGV[4])
local record = '{"id":' .. cjson.encode(ARGV[2]) .. ',"version":' .. I(version) ..
  ',"label":' .. cjson.encode(ARGV[3]) .. ',"ts":' .. I(now) .. ',"config":' .. ARGV[4] .. '}'
redis.call('HSET', KEYS[2], I(version), record)
ledger(KEYS[3], { 'id', ARGV[2], 'ts', I(now), 'ak', 'p', 'acct', 'pricing', 'kind', 'config', 'amount', '0',
  'op', 'pricing_set', 'meta', record })
return { 'ok', '0', ARGV[2], I(version) }
