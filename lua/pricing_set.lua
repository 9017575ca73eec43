-- pricing_set.lua: publish a pricing configuration as the next version and make it active.
-- Every version stays readable. Publishing the config (and label) that is already active changes
-- nothing and answers the active id (idempotent). Each version is a ledger config row of the
-- pricing stream (account kind p): restore publishes them again.
-- KEYS: active versions ledger
-- ARGV: id label pricing config
--   pricing: the validated config as JSON
-- REPLY (table): status idempotent id version
--   idempotent: "1" = already active
local ctx = ctx_new(ARGV[4], KEYS[3], KEYS[3])
local cur = rcall('HMGET', KEYS[1], 'id', 'version', 'label', 'config')
if cur[4] == ARGV[3] and (cur[3] or '') == ARGV[2] then
  return { 'ok', '1', cur[1], cur[2] }
end
local version = rcall('HLEN', KEYS[2]) + 1
rcall('HSET', KEYS[1], 'id', ARGV[1], 'version', I(version), 'label', ARGV[2], 'ts', ts_text(ctx.c),
  'config', ARGV[3])
local record = '{"id":' .. jencode(ARGV[1]) .. ',"version":' .. I(version) ..
  ',"label":' .. jencode(ARGV[2]) .. ',"ts":' .. ts_text(ctx.c) .. ',"config":' .. ARGV[3] .. '}'
rcall('HSET', KEYS[2], I(version), record)
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', '', '\tpricing_set\tp\tpricing\t\t\t\t\t\t' .. esc(record))
ctx_xadd(ctx)
return { 'ok', '0', ARGV[1], I(version) }
