-- lib/06_limits.lua: rate limits, both GCRA: the request-rate limit (requests per period) and
-- quantity limits (tokens per minute..., optionally per model).

-- Request-rate limit (GCRA): rl = "limit,period_ms,burst", tat = theoretical arrival time (ms).
-- Returns allowed, new tat (to store on success), retry-after ms, remaining requests, and the limit
-- (text: the requests per period, RateLimit-Limit's quota; burst is how many pass at once).
local function gcra(rl, tat, now)
  local limit, period, burst = smatch(rl, '^(%d+),(%d+),(%d+)$')
  local t = period / limit
  local window = burst * t
  local at = tat ~= '' and tat + 0 or now
  if at < now then at = now end
  local new_tat = at + t
  if new_tat - now > window then
    return false, nil, mceil(new_tat - window - now), 0, limit
  end
  return true, mceil(new_tat), 0, mfloor((window - (new_tat - now)) / t), limit
end

-- ── Quantity limits (tokens per minute, optionally per model) ──────────
-- A limit on a quantity a request carries. The account state's ql lists the limits as
-- "name|model|limit|period_ms" joined by ';' (model '' = every model); field 'qt|name|model' is the
-- limit's theoretical arrival time (ms): GCRA where a request of n units counts n times, so `limit`
-- units fit in each `period`. A request's quantities come as "name=n;name=n" ('' = none). A hold
-- keeps its estimate in field 'qh|<reservation id>' ("model|name=n;...") so its settlement can
-- correct the count with the actual quantities (no refusal then: the work is done), its release
-- can give the estimate back, and its expiry forgets it.
local function quantities_parse(q)
  local out = {}
  for name, n in sgmatch(q, '([^;=]+)=(%d+)') do out[name] = n + 0 end
  return out
end

-- the limits of `ql` on the names of `q` that apply to `model`: {tat field, ms per unit, period ms, name}
local function quantity_limits(ql, q, model)
  local out = {}
  for spec in sgmatch(ql, '[^;]+') do
    local name, m, limit, period = smatch(spec, '^(.-)|(.-)|(%d+)|(%d+)$')
    if name and q[name] and (m == '' or m == model) then
      out[#out + 1] = { 'qt|' .. name .. '|' .. m, period / limit, period + 0, name }
    end
  end
  return out
end

local function quantity_tats(st, lims)
  local fields = {}
  for i, l in B_ipairs(lims) do fields[i] = l[1] end
  local tats = rcall('HMGET', st.key, B_unpack(fields))
  for i, l in B_ipairs(lims) do
    local pending = st.set and st.set[l[1]]  -- written earlier in this call
    if pending then tats[i] = pending end
  end
  return tats
end

-- Admit a request's quantities `qs` now: ok, retry-after ms, and the new arrival times to store on
-- success (a list of field, value; nil when no limit applies).
local function quantity_admit(st, qs, model, now)
  if st.ql == '' or qs == '' then return true, 0, nil end
  local q = quantities_parse(qs)
  local lims = quantity_limits(st.ql, q, model)
  if #lims == 0 then return true, 0, nil end
  local tats = quantity_tats(st, lims)
  local writes, retry = {}, 0
  for i, l in B_ipairs(lims) do
    local at = tats[i] and tats[i] + 0 or now
    if at < now then at = now end
    local new_tat = at + q[l[4]] * l[2]
    if new_tat - now > l[3] then
      retry = mmax(retry, mceil(new_tat - l[3] - now))
    else
      writes[#writes + 1] = l[1]
      writes[#writes + 1] = I(mceil(new_tat))
    end
  end
  if retry > 0 then return false, retry, nil end
  return true, 0, writes
end

local function quantity_store(st, writes)
  if writes then
    for i = 1, #writes, 2 do field_set(st, writes[i], writes[i + 1]) end
  end
end

-- Resolve a hold's estimate: settle with the actual quantities `qs` ('' = as estimated), or give
-- it all back (release: qs = nil). Nothing for a hold without an estimate.
local function quantity_resolve(st, rid, qs)
  local f = 'qh|' .. rid
  local held = field(st, f)
  if not held then return end
  field_del(st, f)
  if st.ql == '' then return end
  local model, est = smatch(held, '^(.-)|(.*)$')
  local e = quantities_parse(est)
  local actual = qs and qs ~= '' and quantities_parse(qs) or (qs and e or {})
  local lims = quantity_limits(st.ql, e, model)
  if #lims == 0 then return end
  local tats = quantity_tats(st, lims)
  for i, l in B_ipairs(lims) do
    local delta = (actual[l[4]] or 0) - e[l[4]]
    if delta ~= 0 and tats[i] then field_set(st, l[1], I(mceil(tats[i] + delta * l[2]))) end
  end
end
