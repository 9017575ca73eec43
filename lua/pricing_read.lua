-- pricing_read.lua (read-only): the active pricing version, one version, or every version.
-- KEYS[1] active pricing hash   KEYS[2] versions hash
-- ARGV[1] clock offset ms (unused)   ARGV[2] "" = the active version, a version number, or "*" = all
-- Reply: { "ok", "0", active version or "", record JSON... } (records: {id, version, label, ts, config})
local active = redis.call('HGET', KEYS[1], 'version') or ''
local out = { 'ok', '0', active }
if ARGV[2] == '*' then
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do out[#out + 1] = v end
else
  local want = ARGV[2] == '' and active or ARGV[2]
  local rec = want ~= '' and redis.call('HGET', KEYS[2], want)
  if rec then out[4] = rec end
end
return out
