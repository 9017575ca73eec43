-- set_quantity_limit.lua: set (or remove) a limit on a quantity requests carry (tokens per period,
-- optionally for one model), kept in the account state's quantity limits (lib/06_limits.lua),
-- and record it: the ledger entry's metadata holds the account's limits after the change ('ql'),
-- which restore sets again.
-- KEYS: account ledger
-- ARGV: tx user name model value config
--   value: "limit|period_ms", or "" to remove
-- REPLY (table): status idempotent limits
--   limits: the limits after ("name|model|limit|period_ms;...")
local ctx = ctx_new(ARGV[6], KEYS[2], KEYS[2])
local name, model, value = ARGV[3], ARGV[4], ARGV[5]
local st = account(ctx, KEYS[1], {})
local prefix = name .. '|' .. model .. '|'
local kept = {}
for spec in sgmatch(st.ql, '[^;]+') do
  if ssub(spec, 1, #prefix) ~= prefix then kept[#kept + 1] = spec end
end
if value ~= '' then kept[#kept + 1] = prefix .. value end
local ql = tconcat(kept, ';')
st.ql, st.wS = ql, true
if value == '' then field_del(st, 'qt|' .. name .. '|' .. model) end
local meta = jencode({ quantity = name, model = model, limit = value, ql = ql })
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', '', '\t' ..
  (value == '' and 'quantity_limit_removed' or 'quantity_limit_set') .. '\tu\t' .. esc(ARGV[2]) .. '\t\t\t' ..
  esc(model) .. '\t\t\t' .. esc(meta))
finish_writes(ctx)
return { 'ok', '0', ql }
