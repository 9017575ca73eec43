-- pricing_read.lua (read-only): the active pricing version, one version, or every version.
-- KEYS: active versions
-- ARGV: which
--   which: "" = the active version, a version number, or "*" = all
-- REPLY (table): status idempotent active; per version: record
--   active: the active version or ""; record: JSON {id, version, label, ts, config}
local active = rcall('HGET', KEYS[1], 'version') or ''
local out = { 'ok', '0', active }
if ARGV[1] == '*' then
  for _, v in B_ipairs(rcall('HVALS', KEYS[2])) do out[#out + 1] = v end
else
  local want = ARGV[1] == '' and active or ARGV[1]
  local rec = want ~= '' and rcall('HGET', KEYS[2], want)
  if rec then out[4] = rec end
end
return out
