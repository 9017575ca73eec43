-- check_cap.lua (read-only): the cap that matters most for spending `amount` now.
-- Order: a deny cap that would refuse, then a warn/notify cap that would be passed, then the cap
-- with the least headroom. Without a model every cap counts (per-model caps against their model).
-- KEYS: account
-- ARGV: model amount config
--   amount: "" = one more credit
-- REPLY (table): status idempotent capped spend limit action model period
--   capped: "1" | "0"; spend: the current spend; action, model, period: "" when no cap applies
local c = clock(config(ARGV[3]))
local model = ARGV[1]
local v = rcall('HMGET', KEYS[1], 'b', 'S')
local st = st_new(KEYS[1], v[1] or nil, v[2] or nil, nil)
local dS, mS = st_spend(st, c)
local caps = {}
local function add(text, period, mdl, spend)
  if text ~= '' then
    local limit, action = cap_parse(text)
    caps[#caps + 1] = { period, mdl, limit, action, spend }
  end
end
add(st.dC, 'd', '', dS)
add(st.mC, 'm', '', mS)
local function add_model(mdl, text)
  local w = mw_new(text)
  local wd, wm = mw_spend(w, c)
  add(w.dC, 'd', mdl, wd)
  add(w.mC, 'm', mdl, wm)
end
if model ~= '' then
  local t = rcall('HGET', KEYS[1], 'M|' .. model)
  if t then add_model(model, t) end
else
  local cursor = '0'
  repeat
    local r = rcall('HSCAN', KEYS[1], cursor, 'MATCH', 'M|*', 'COUNT', 1000)
    cursor = r[1]
    for i = 1, #r[2], 2 do add_model(ssub(r[2][i], 3), r[2][i + 1]) end
  until cursor == '0'
end
if #caps == 0 then return { 'ok', '0', '0', '0', '0', '', '', '' } end
local amount = ARGV[2] ~= '' and ARGV[2] + 0 or nil
local best, best_rank, best_room = nil, 9, nil
for _, cap in B_ipairs(caps) do
  local over
  if amount then over = cap[5] + amount > cap[3] else over = cap[5] >= cap[3] end
  local rank = 3
  if over then rank = cap[4] == 'deny' and 1 or 2 end
  local room = cap[3] - cap[5]
  if rank < best_rank or (rank == best_rank and room < best_room) then
    best, best_rank, best_room = cap, rank, room
  end
end
return { 'ok', '0', best_rank == 1 and '1' or '0', I(best[5]), I(best[3]), best[4], best[2],
  best[1] == 'd' and 'daily' or 'monthly' }
