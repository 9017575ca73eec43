-- check_cap.lua (read-only): the cap that matters most for spending `amount` now.
-- Order: a deny cap that would refuse, then a warn/notify cap that would be passed, then the cap
-- with the least headroom. Without a model every cap counts (per-model caps against their model).
-- KEYS[1] caps hash   KEYS[2] day window   KEYS[3] month window
-- ARGV[1] clock offset ms   ARGV[2] model or ""   ARGV[3] amount, or "" for "one more credit"
-- Reply: { "ok", "0", capped ("1"/"0"), current spend, limit, action or "", model or "", period or "" }
local now = now_ms(ARGV[1])
local model = ARGV[2]
local caps
if model == '' then
  caps = {}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    local limit, action = string.match(v, '^(%d+)|(%a+)$')
    caps[#caps + 1] = { string.sub(f, 1, 1), string.sub(f, 3), tonumber(limit), action }
  end
else
  caps = applicable_caps(KEYS[1], model)
end
if #caps == 0 then return { 'ok', '0', '0', '0', '0', '', '', '' } end

local amount = tonumber(ARGV[3])
local best, best_rank, best_room = nil, 9, nil
for _, c in ipairs(caps) do
  local key = c[1] == 'd' and KEYS[2] or KEYS[3]
  local bucket = bucket_of(c[1], now)
  c[5] = window_spend(key, bucket, c[2] == '' and '*' or ('m|' .. c[2]))
  local over
  if amount then over = c[5] + amount > c[3] else over = c[5] >= c[3] end
  local rank = 3
  if over then rank = c[4] == 'deny' and 1 or 2 end
  local room = c[3] - c[5]
  if rank < best_rank or (rank == best_rank and room < best_room) then
    best, best_rank, best_room = c, rank, room
  end
end
return { 'ok', '0', best_rank == 1 and '1' or '0', I(best[5]), I(best[3]), best[4], best[2],
  best[1] == 'd' and 'daily' or 'monthly' }
