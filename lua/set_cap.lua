-- set_cap.lua: set (or remove) one spend cap of an account and record it in the ledger.
-- All-model caps live in the account's state, per-model caps in its model field (M|<model>).
-- KEYS: account ledger
-- ARGV: tx period model value frag config
--   period: d | m; model: "" = all models; value: the cap ("<limit><d|w|n>"), "" removes it
-- REPLY (table): status idempotent previous
--   previous: the value before, or ""
local ctx = ctx_new(ARGV[6], KEYS[2], KEYS[2])
local period, model, value = ARGV[2], ARGV[3], ARGV[4]
local st = account(ctx, KEYS[1], model ~= '' and { 'M|' .. model } or {})
local prev
if model == '' then
  prev = period == 'd' and st.dC or st.mC
  if period == 'd' then st.dC = value else st.mC = value end
  st.wS = true
else
  local w = model_window(st, 'M|' .. model)
  prev = period == 'd' and w.dC or w.mC
  if period == 'd' then w.dC = value else w.mC = value end
  w.dirty = true
end
row(ctx, ARGV[1], 'config', '0', '', '', '', '', '', '', '', ARGV[5])
finish_writes(ctx)
return { 'ok', '0', prev }
