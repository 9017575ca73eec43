-- set_quantity_limit.lua: set (or remove) a limit on a quantity requests carry (tokens per period,
-- optionally for one model), kept in the account hash's 'ql' field (see lib.lua quantity_admit), and record it
-- (the ledger entry's meta holds the account's limits after the change, 'ql': restore sets them again).
-- KEYS[1] account hash   KEYS[2] ledger stream
-- ARGV[1] clock offset ms   ARGV[2] transaction id   ARGV[3] account kind   ARGV[4] account id (raw)
-- ARGV[5] quantity name   ARGV[6] model or ""   ARGV[7] "limit|period_ms", or "" to remove
-- Reply: { "ok", "0", the limits after ("name|model|limit|period_ms;...") }
local now = now_ms(ARGV[1])
local name, model = ARGV[5], ARGV[6]
local prefix = name .. '|' .. model .. '|'
local kept = {}
for spec in string.gmatch(redis.call('HGET', KEYS[1], 'ql') or '', '[^;]+') do
  if string.sub(spec, 1, #prefix) ~= prefix then kept[#kept + 1] = spec end
end
if ARGV[7] ~= '' then kept[#kept + 1] = prefix .. ARGV[7] end
local ql = table.concat(kept, ';')
if ql == '' then
  redis.call('HDEL', KEYS[1], 'ql', 'qt|' .. name .. '|' .. model)
else
  redis.call('HSET', KEYS[1], 'ql', ql)
  if ARGV[7] == '' then redis.call('HDEL', KEYS[1], 'qt|' .. name .. '|' .. model) end
end
ledger(KEYS[2], { 'id', ARGV[2], 'ts', I(now), 'ak', ARGV[3], 'acct', ARGV[4], 'kind', 'config', 'amount', '0',
  'op', ARGV[7] == '' and 'quantity_limit_removed' or 'quantity_limit_set', 'model', model,
  'meta', cjson.encode({ quantity = name, model = model, limit = ARGV[7], ql = ql }) })
return { 'ok', '0', ql }
