-- lib.lua: the helpers of every script (see ducto_redis/scripts.py): loaded once at the top of the
-- scripts' function library, and put before a script's body when it is sent with EVAL. The top level
-- only defines things: it runs at library load time, where Redis offers no string, table or cjson.
-- It reads no KEYS or ARGV of its own. Conventions shared by all scripts:
--   * ARGV[1] is always the clock offset in ms (0 except in tests); time is redis TIME + offset.
--   * Replies are arrays of strings: { status, idempotent ("0"/"1"), fields... }.
--   * Integers are formatted with '%d' (exact up to 2^53-1; tostring would round).

local MAX_SAFE = 9007199254740991

local function I(n)
  return string.format('%d', n)
end

local function now_ms(offset)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(offset)
end

-- days since 1970-01-01 <-> proleptic Gregorian (y, m, d); H. Hinnant's algorithms
local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- window buckets: period "d" -> day number, "m" -> year*12 + month - 1; and when they end (ms).
-- The month of the last day asked is remembered (a script asks for the same day again and again).
local memo_day, memo_month, memo_month_end
local function bucket_of(period, ms)
  local day = math.floor(ms / 86400000)
  if period == 'd' then
    return day, (day + 1) * 86400000
  end
  if day ~= memo_day then
    local y, m = civil_from_days(day)
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    memo_day, memo_month, memo_month_end = day, y * 12 + m - 1, days_from_civil(ny, nm, 1) * 86400000
  end
  return memo_month, memo_month_end
end

-- current spend of a window hash for field f (0 when the stored bucket is not the current one)
local function window_spend(key, bucket, f)
  local got = redis.call('HMGET', key, '_b', f)
  if tonumber(got[1]) ~= bucket then return 0 end
  return tonumber(got[2]) or 0
end

-- add amount to field(s) of a window, starting a new bucket when the period rolled over
local function window_add(key, bucket, ends_ms, amount, f1, f2)
  local b = tonumber(redis.call('HGET', key, '_b'))
  if b ~= bucket then
    redis.call('DEL', key)
    redis.call('HSET', key, '_b', I(bucket))
    -- kept a little past its end so a late read near midnight still sees it
    redis.call('PEXPIREAT', key, ends_ms + 3600000)
  end
  redis.call('HINCRBY', key, f1, amount)
  if f2 then redis.call('HINCRBY', key, f2, amount) end
end

-- One ledger entry, stored as ONE stream field, 'r': the entry's row of the Postgres ledger in COPY
-- text (values tab-separated, COPY-escaped, '' for NULL), so the flusher only prefixes the stream's
-- own columns (see ducto_redis/ledger/copy_text.py, whose ROW_FIELDS must list LEDGER_ROW's order).
-- `fields` is { name, value, ... }; empty values are NULL; a name not in LEDGER_ROW goes to the
-- row's last column, `extra` (a JSON object); metadata that is not a JSON object is kept as {"raw": ...}.
-- Values are strings (integers through I(): table.concat would print a number with 14 digits);
-- tests/test_ledger_rows.py runs every script with a guard that fails on anything else.
local LEDGER_ROW = { ts = 1, id = 2, ak = 3, acct = 4, member = 5, kind = 6, amount = 7, bal = 8, held = 9,
  hold = 10, rid = 11, op = 12, model = 13, type = 14, idem = 15, exp = 16, cap = 17, reason = 18, meta = 19 }
local COPY_ESCAPES = { ['\\'] = '\\\\', ['\t'] = '\\t', ['\n'] = '\\n', ['\r'] = '\\r' }

local function ledger(stream, fields)
  local row = { '', '', 'u', '', '', '', '0', '', '', '', '', '', '', '', '', '', '', '', '', '' }
  local extra
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if v and v ~= '' then
      local c = LEDGER_ROW[fields[i]]
      if c then
        row[c] = v
      else
        extra = extra or {}
        extra[fields[i]] = v
      end
    end
  end
  local meta = row[19]
  if meta ~= '' and string.byte(meta, 1) ~= 123 then row[19] = cjson.encode({ raw = meta }) end
  if extra then row[20] = cjson.encode(extra) end
  -- plain finds (memchr): a pattern with a set costs ~30 ns per character in Lua
  local probe = table.concat(row)
  local find = string.find
  if find(probe, '\\', 1, true) or find(probe, '\t', 1, true) or find(probe, '\n', 1, true)
      or find(probe, '\r', 1, true) then
    for i = 1, 20 do row[i] = (string.gsub(row[i], '[\\\t\n\r]', COPY_ESCAPES)) end
  end
  return redis.call('XADD', stream, '*', 'r', table.concat(row, '\t'))
end

local function event(stream, maxlen, fields)
  local args = { stream, 'MAXLEN', '~', maxlen, '*' }
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if v ~= nil and v ~= '' then
      args[#args + 1] = fields[i]
      args[#args + 1] = v
    end
  end
  return redis.call('XADD', unpack(args))
end

-- idempotency: a remembered reply (with idempotent flag set) or nil
local function replay(idem_key, has_idem)
  if has_idem ~= '1' then return nil end
  local stored = redis.call('GET', idem_key)
  if not stored then return nil end
  local reply = cjson.decode(stored)
  reply[2] = '1'
  return reply
end

local function remember(idem_key, has_idem, ttl_s, reply)
  if has_idem == '1' then
    redis.call('SET', idem_key, cjson.encode(reply), 'EX', ttl_s)
  end
  return reply
end

-- return expired holds of an account; writes one 'expire' ledger entry per hold
-- acct: account hash, holds: hash, hexp: zset; returns the account's held after
local function sweep_holds_known(acct, holds, hexp, now, stream, akind, aid, held, bal)
  if held <= 0 then return held end  -- nothing held: no hold can be due
  local due = redis.call('ZRANGEBYSCORE', hexp, '-inf', now)
  if #due == 0 then return held end
  for _, rid in ipairs(due) do
    local h = redis.call('HGET', holds, rid)
    if h then
      local amount, _, op = string.match(h, '^(%d+)|(%d+)|(.*)$')
      amount = tonumber(amount)
      held = held - amount
      redis.call('HDEL', holds, rid)
      redis.call('HDEL', acct, 'qh|' .. rid)  -- a quantity estimate it held (quantity limits)
      ledger(stream, { 'id', 'exp:' .. rid, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', 'expire',
        'amount', '0', 'hold', I(amount), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op })
    end
    redis.call('ZREM', hexp, rid)
  end
  redis.call('HSET', acct, 'held', I(held))
  return held
end

local function sweep_holds(acct, holds, hexp, now, stream, akind, aid)
  local v = redis.call('HMGET', acct, 'held', 'bal')
  return sweep_holds_known(acct, holds, hexp, now, stream, akind, aid, tonumber(v[1]) or 0, tonumber(v[2]) or 0)
end

-- sum of holds that are past due but not swept yet (read-only scripts)
local function expired_hold_total(holds, hexp, now)
  local due = redis.call('ZRANGEBYSCORE', hexp, '-inf', now)
  local total = 0
  for _, rid in ipairs(due) do
    local h = redis.call('HGET', holds, rid)
    if h then total = total + tonumber(string.match(h, '^(%d+)|')) end
  end
  return total
end

-- Spend caps. caps hash fields: 'd' / 'm' (all models) and 'd|<model>' / 'm|<model>' -> 'limit|action'.
-- Returns the caps that apply to a debit of `model`: list of {period, model or '', limit, action}
local function applicable_caps(caps_key, model)
  local fields = { 'd', 'm' }
  if model ~= '' then
    fields[3] = 'd|' .. model
    fields[4] = 'm|' .. model
  end
  local vals = redis.call('HMGET', caps_key, unpack(fields))
  local out = {}
  for i = 1, #fields do
    local v = vals[i]
    if v then
      local limit, action = string.match(v, '^(%d+)|(%a+)$')
      out[#out + 1] = { string.sub(fields[i], 1, 1), i > 2 and model or '', tonumber(limit), action }
    end
  end
  return out
end

-- Evaluate caps for spending `amount` now. Returns deny (cap or nil), warns (list of caps crossed
-- by warn/notify), and per cap its current spend at index 5.
local function evaluate_caps(caps, wd, wm, now, amount)
  local deny, warns = nil, {}
  for _, c in ipairs(caps) do
    local key = c[1] == 'd' and wd or wm
    local bucket = bucket_of(c[1], now)
    local f = c[2] == '' and '*' or ('m|' .. c[2])
    c[5] = window_spend(key, bucket, f)
    if c[5] + amount > c[3] then
      if c[4] == 'deny' then
        if not deny then deny = c end
      else
        warns[#warns + 1] = c
      end
    end
  end
  return deny, warns
end

-- record spend of `amount` (model '' = none) in the day and month windows
local function record_spend(wd, wm, now, amount, model)
  local mf = model ~= '' and ('m|' .. model) or nil
  local db, dend = bucket_of('d', now)
  window_add(wd, db, dend, amount, '*', mf)
  local mb, mend = bucket_of('m', now)
  window_add(wm, mb, mend, amount, '*', mf)
end

local function cap_event(stream, maxlen, etype, now, akind, aid, c, amount, tx)
  event(stream, maxlen, { 'type', etype, 'ts', I(now), 'ak', akind, 'acct', aid,
    'period', c[1] == 'd' and 'daily' or 'monthly', 'model', c[2], 'limit', I(c[3]), 'action', c[4],
    'spend', I(c[5]), 'amount', I(amount), 'tx', tx })
end

-- Ledger backpressure: the shard's stream holds what the flusher has not stored yet (it trims
-- after committing). With a limit > 0 and policy "closed", debits are refused past the limit.
local function backlog_full(stream, limit, policy)
  limit = tonumber(limit)
  if limit <= 0 or policy ~= 'closed' then return false end
  return redis.call('XLEN', stream) >= limit
end

-- Request-rate limit (GCRA) kept in the account hash: 'rl' = "limit|period_ms|burst", 'tat' = the
-- theoretical arrival time (ms). Returns allowed, new tat (to store on success), retry-after ms,
-- remaining requests; nil when the account has no rate limit.
local function gcra_known(rl, stored_tat, now)
  if not rl then return nil end
  local limit, period, burst = string.match(rl, '^(%d+)|(%d+)|(%d+)$')
  local t = tonumber(period) / tonumber(limit)
  local window = tonumber(burst) * t
  local tat = math.max(tonumber(stored_tat) or now, now)
  local new_tat = tat + t
  if new_tat - now > window then
    return false, nil, math.ceil(new_tat - window - now), 0
  end
  return true, math.ceil(new_tat), 0, math.floor((window - (new_tat - now)) / t)
end

local function gcra(acct, now)
  local cfg = redis.call('HMGET', acct, 'rl', 'tat')
  return gcra_known(cfg[1], cfg[2], now)
end

-- ── Quantity limits (tokens per minute, optionally per model) ──────────
-- A limit on a quantity a request carries, kept in the account hash: field 'ql' lists the limits as
-- "name|model|limit|period_ms" joined by ';' (model '' = every model); field 'qt|name|model' is the
-- limit's theoretical arrival time (ms): GCRA where a request of n units counts n times, so `limit`
-- units fit in each `period`. A request's quantities come as "name=n;name=n" ('' = none). A hold
-- keeps its estimate in field 'qh|<reservation id>' ("model|name=n;...") so its settlement can
-- correct the count with the actual quantities (no refusal then: the work is done), its release
-- can give the estimate back, and its expiry forgets it (sweep_holds_known).
local function quantities_parse(s)
  local q = {}
  for name, n in string.gmatch(s, '([^;=]+)=(%d+)') do q[name] = tonumber(n) end
  return q
end

-- the limits of `ql` on the names of `q` that apply to `model`: list of {tat field, ms per unit, period ms, name}
local function quantity_limits(ql, q, model)
  local out = {}
  for spec in string.gmatch(ql, '[^;]+') do
    local name, m, limit, period = string.match(spec, '^(.-)|(.-)|(%d+)|(%d+)$')
    if name and q[name] and (m == '' or m == model) then
      out[#out + 1] = { 'qt|' .. name .. '|' .. m, tonumber(period) / tonumber(limit), tonumber(period), name }
    end
  end
  return out
end

-- Admit a request's quantities now. Returns ok, retry-after ms, and the fields to HSET on success
-- (nil when no limit applies). ql: the account's 'ql' field (nil: no limits).
local function quantity_admit(acct, ql, qs, model, now)
  if not ql or not qs or qs == '' then return true, 0, nil end
  local q = quantities_parse(qs)
  local lims = quantity_limits(ql, q, model)
  if #lims == 0 then return true, 0, nil end
  local fields = {}
  for i, l in ipairs(lims) do fields[i] = l[1] end
  local tats = redis.call('HMGET', acct, unpack(fields))
  local writes, retry = {}, 0
  for i, l in ipairs(lims) do
    local new_tat = math.max(tonumber(tats[i]) or now, now) + q[l[4]] * l[2]
    if new_tat - now > l[3] then
      retry = math.max(retry, math.ceil(new_tat - l[3] - now))
    else
      writes[#writes + 1] = l[1]
      writes[#writes + 1] = I(math.ceil(new_tat))
    end
  end
  if retry > 0 then return false, retry, nil end
  return true, 0, writes
end

-- Resolve a hold's estimate: settle with the actual quantities `qs` ('' = as estimated), or give it
-- all back (release: qs = nil). Does nothing for a hold without an estimate.
local function quantity_resolve(acct, ql, rid, qs)
  if not ql then return end
  local f = 'qh|' .. rid
  local held = redis.call('HGET', acct, f)
  if not held then return end
  redis.call('HDEL', acct, f)
  local model, est = string.match(held, '^(.-)|(.*)$')
  local e = quantities_parse(est)
  local actual = qs and qs ~= '' and quantities_parse(qs) or (qs and e or {})
  local lims = quantity_limits(ql, e, model)
  if #lims == 0 then return end
  local fields = {}
  for i, l in ipairs(lims) do fields[i] = l[1] end
  local tats = redis.call('HMGET', acct, unpack(fields))
  local writes = {}
  for i, l in ipairs(lims) do
    local delta = (actual[l[4]] or 0) - e[l[4]]
    if delta ~= 0 and tats[i] then
      writes[#writes + 1] = l[1]
      writes[#writes + 1] = I(math.ceil(tonumber(tats[i]) + delta * l[2]))
    end
  end
  if #writes > 0 then redis.call('HSET', acct, unpack(writes)) end
end

-- ── Expiring grants ─────────────────────────────────────────────────
-- A grant (add_credits with expires_at) is a part of the balance that leaves it at expiry if unspent.
-- The grants hash G holds grant id -> "expires_ms|remaining"; the account hash field 'gx' holds the
-- earliest expiry and is absent when the account has no grant, so an account without grants pays
-- nothing but one more HMGET field. Spending consumes the oldest-expiring grants first, then ordinary
-- credits. Holds do not consume grants (their settlement does), but they cover the oldest-expiring
-- credits first (the order a settlement spends them in): the covered part of an expired grant stays,
-- pinned and still due, until the holds resolve (a settlement spends it first); the rest leaves. An
-- expiry never takes the balance below what is held.

-- credit expiries made by this script call (lib.lua's locals are fresh in every call): with the
-- call's own unique id they make each expiry's ledger entry id unique
-- numbering of this call's grant expiries (restarted for each call id: a function library keeps it
-- between calls)
local expiry_call, expiry_seq = nil, 0

-- the grants of G as a list {id, expires ms, remaining}, oldest expiry first
local function grants_load(G)
  local raw = redis.call('HGETALL', G)
  local list = {}
  for i = 1, #raw, 2 do
    local e, r = string.match(raw[i + 1], '^(%d+)|(%d+)$')
    list[#list + 1] = { raw[i], tonumber(e), tonumber(r) }
  end
  table.sort(list, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
  return list
end

local function grants_put(G, g)
  if g[3] <= 0 then
    redis.call('HDEL', G, g[1])
  else
    redis.call('HSET', G, g[1], I(g[2]) .. '|' .. I(g[3]))
  end
end

-- the list without emptied grants; stores gx (earliest expiry) in the account hash, or removes it
local function grants_keep(acct, list)
  local out = {}
  for _, g in ipairs(list) do
    if g[3] > 0 then out[#out + 1] = g end
  end
  if #out > 0 then
    redis.call('HSET', acct, 'gx', I(out[1][2]))
  else
    redis.call('HDEL', acct, 'gx')
  end
  return out
end

-- Expire the due grants of a sorted list (each loses what the holds do not cover). Returns the
-- balance after and the expiries {grant id, amount, expires ms, entry id}. With write, updates G and
-- appends one ledger entry each (kind 'expire', reason 'credit_expired', field 'grant', id
-- "cexp:<call id>:<n>"); the caller stores the balance and calls grants_keep. call: the unique
-- id of this script call (its transaction id).
local function grants_expire(list, G, now, bal, held, write, stream, akind, aid, call)
  local out = {}
  local cover = math.max(held, 0)
  for _, g in ipairs(list) do
    if g[2] > now then break end
    local c = math.min(g[3], cover)
    cover = cover - c
    local e = math.min(g[3] - c, math.max(bal - held, 0))
    if e > 0 then
      local eid = ''
      if write then
        if expiry_call ~= call then expiry_call, expiry_seq = call, 0 end
        expiry_seq = expiry_seq + 1
        eid = 'cexp:' .. call .. ':' .. I(expiry_seq)
      end
      bal = bal - e
      g[3] = g[3] - e
      out[#out + 1] = { g[1], e, g[2], eid }
      if write then
        grants_put(G, g)
        ledger(stream, { 'id', eid, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', 'expire',
          'amount', I(-e), 'bal', I(bal), 'held', I(held), 'exp', I(g[2]), 'reason', 'credit_expired',
          'grant', g[1] })
      end
    end
  end
  return bal, out
end

-- Lazy expiry at the start of a mutation: gx is the account's 'gx' field (nil: no grants). Returns
-- the balance after (stored) and the sorted grant list (nil when the account has no grants).
local function grants_due(acct, G, gx, now, bal, held, stream, akind, aid, call)
  if not gx then return bal, nil end
  local list = grants_load(G)
  if tonumber(gx) > now then return bal, list end
  local before = bal
  bal = grants_expire(list, G, now, bal, held, true, stream, akind, aid, call)
  if bal ~= before then redis.call('HSET', acct, 'bal', I(bal)) end
  return bal, grants_keep(acct, list)
end

-- Spend `amount` from grants, oldest expiry first; a charge (settling false) skips expired grants
-- (their pinned rest belongs to holds). Returns the parts consumed "id:expires:amount;...".
local function grants_consume(list, G, amount, now, settling)
  local parts, left = {}, amount
  for _, g in ipairs(list) do
    if left <= 0 then break end
    if settling or g[2] > now then
      local take = math.min(g[3], left)
      if take > 0 then
        g[3] = g[3] - take
        left = left - take
        grants_put(G, g)
        parts[#parts + 1] = g[1] .. ':' .. I(g[2]) .. ':' .. I(take)
      end
    end
  end
  return table.concat(parts, ';')
end

-- One user debit (settle or charge): the body of debit.lua, shared with debit_many.lua.
-- K: the 11 keys and A: the 17 arguments of debit.lua, in its order. Returns debit.lua's reply.
-- X (optional): extra ledger fields {name, value, ...} appended to the debit's entry (plan_debit.lua).
-- now: the clock (ms) when the caller already read it (debit_many reads TIME once per call: the
-- decisions of one script call happen at one instant anyway); nil reads it here.
local function user_debit(K, A, X, now)
  local acct, holds, hexp, caps_key, wd, wm, idem, stream, events =
    K[1], K[2], K[3], K[4], K[5], K[6], K[7], K[8], K[9]
  local again = replay(idem, A[9])
  if again then return again end

  if backlog_full(stream, A[15], A[16]) then
    return { 'ledger_backlog_full', '0', '', A[5], '0', '0', '' }
  end
  now = now or now_ms(A[1])
  local tx, aid, rid, akind = A[2], A[3], A[4], A[14]
  local amount = tonumber(A[5])
  local op, model = A[6], A[7]
  local av = redis.call('HMGET', acct, 'bal', 'held', 'rl', 'tat', 'gx', 'ql')
  local bal = tonumber(av[1]) or 0
  local held = sweep_holds_known(acct, holds, hexp, now, stream, akind, aid, tonumber(av[2]) or 0, bal)
  local grants = nil  -- expiring grants: only for accounts that have some ('gx' set)
  if av[5] then bal, grants = grants_due(acct, K[10], av[5], now, bal, held, stream, akind, aid, tx) end

  local hold = 0
  if rid ~= '' then
    local h = redis.call('HGET', holds, rid)
    if not h then
      return { 'reservation_not_found', '0', '', I(amount), I(bal), I(held), '' }
    end
    local ha, _, hop = string.match(h, '^(%d+)|(%d+)|(.*)$')
    hold = tonumber(ha)
    if op == '' then op = hop end
  end

  -- request-rate limit: charges only (a settlement belongs to a request already admitted)
  local rl_ok, rl_tat, rl_retry, rl_left = nil, nil, 0, nil
  if rid == '' then
    rl_ok, rl_tat, rl_retry, rl_left = gcra_known(av[3], av[4], now)
    if rl_ok == false then
      return { 'rate_limited', '0', '', I(amount), I(bal), I(held), '', I(rl_retry), '0' }
    end
  end
  local rl_remaining = rl_left and I(rl_left) or ''
  -- quantity limits (tokens per minute...): a charge is checked with its quantities (A[18])
  local q_writes = nil
  if rid == '' and av[6] then
    local q_ok, q_retry
    q_ok, q_retry, q_writes = quantity_admit(acct, av[6], A[18], model, now)
    if not q_ok then
      return { 'rate_limited', '0', '', I(amount), I(bal), I(held), '', I(q_retry), rl_remaining }
    end
  end

  local caps = applicable_caps(caps_key, model)
  local deny, warns = evaluate_caps(caps, wd, wm, now, amount)
  if deny then
    cap_event(events, A[12], 'credits.cap_reached', now, akind, aid, deny, amount, tx)
    if rid == '' then
      return { 'spend_cap_exceeded', '0', '', I(amount), I(bal), I(held), 'deny' }
    end
    -- refusing a settlement releases the hold: the reserved credits stay the user's
    held = held - hold
    redis.call('HSET', acct, 'held', I(held))
    quantity_resolve(acct, av[6], rid, nil)
    redis.call('HDEL', holds, rid)
    redis.call('ZREM', hexp, rid)
    ledger(stream, { 'id', tx, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', 'release', 'amount', '0',
      'hold', I(hold), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'model', model,
      'idem', A[10], 'reason', 'spend_cap_exceeded', 'meta', A[8] })
    return remember(idem, A[9], A[11],
      { 'spend_cap_exceeded', '0', tx, I(amount), I(bal), I(held), 'deny' })
  end

  -- the hold covers up to its amount; anything beyond must come from the available balance
  local need = amount - hold
  local floor = rid == '' and tonumber(A[13]) or 0
  if need > 0 and bal - held - need < floor then
    return { 'insufficient_credits', '0', '', I(amount), I(bal), I(held), '' }
  end

  bal = bal - amount
  if rid ~= '' then
    held = held - hold
    redis.call('HDEL', holds, rid)
    redis.call('ZREM', hexp, rid)
    redis.call('HSET', acct, 'bal', I(bal), 'held', I(held))
  elseif rl_tat then
    redis.call('HSET', acct, 'bal', I(bal), 'tat', I(rl_tat))
  else
    redis.call('HSET', acct, 'bal', I(bal))
  end
  if amount > 0 then record_spend(wd, wm, now, amount, model) end
  if q_writes then redis.call('HSET', acct, unpack(q_writes)) end
  if rid ~= '' then quantity_resolve(acct, av[6], rid, A[18] or '') end

  local action = ''
  for _, c in ipairs(warns) do
    cap_event(events, A[12], c[4] == 'warn' and 'credits.cap_warning' or 'credits.cap_reached',
      now, akind, aid, c, amount, tx)
    if action == '' or c[4] == 'warn' then action = c[4] end
  end

  local used = ''
  if grants then used = grants_consume(grants, K[10], amount, now, rid ~= '') end

  local entry = { 'id', tx, 'ts', I(now), 'ak', akind, 'acct', aid, 'kind', rid ~= '' and 'settle' or 'debit',
    'amount', I(-amount), 'hold', rid ~= '' and I(hold) or '', 'bal', I(bal), 'held', I(held), 'rid', rid,
    'op', op, 'model', model, 'idem', A[10], 'cap', action, 'gc', used, 'meta', A[8] }
  if X then for i = 1, #X do entry[#entry + 1] = X[i] end end
  ledger(stream, entry)

  -- refund record of this debit (see refund.lua), kept for the refund window
  if amount > 0 and tonumber(A[17]) > 0 then
    redis.call('SET', K[11], I(amount) .. '|0|' .. used .. '|' .. aid, 'PX', A[17])
  end
  if grants then
    -- a settled hold may free the pinned rest of an expired grant: it expires now
    if rid ~= '' then bal = grants_expire(grants, K[10], now, bal, held, true, stream, akind, aid, tx) end
    redis.call('HSET', acct, 'bal', I(bal))
    grants_keep(acct, grants)
  end

  return remember(idem, A[9], A[11], { 'ok', '0', tx, I(amount), I(bal), I(held), action, '0', rl_remaining })
end

-- ── Teams ────────────────────────────────────────────────────────────
-- A team hold is JSON {a = amount, e = expires ms, m = member, o = operation} (numbers as strings).
-- Member records are JSON {role, cap (absent = none), period (total|daily|monthly)}.
-- Team key tables (TK) name: acct, holds, hexp, caps, wd, wm, idem, stream, events, members,
-- mspend, md, mm, mheld (see ducto_redis/keys.py).

-- A member's field in the team's day / month member windows (:md / :mm), whose bucket is field
-- '_b': the id itself, but '~' .. id for an id starting with '_' or '~' (injective; no member id
-- maps to '_b'). ducto_redis/keys.py member_window_field is the same mapping.
local function member_field(uid)
  local c = string.sub(uid, 1, 1)
  if c == '_' or c == '~' then return '~' .. uid end
  return uid
end

local function member_get(members, uid)
  local raw = redis.call('HGET', members, uid)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- the member's spend in their cap's period, plus what their open reservations hold
local function member_usage(TK, uid, period, now)
  local spent
  if period == 'daily' then
    spent = window_spend(TK.md, (bucket_of('d', now)), member_field(uid))
  elseif period == 'monthly' then
    spent = window_spend(TK.mm, (bucket_of('m', now)), member_field(uid))
  else
    spent = tonumber(redis.call('HGET', TK.mspend, uid)) or 0
  end
  return spent, tonumber(redis.call('HGET', TK.mheld, uid)) or 0
end

local function team_hold_decode(raw)
  local h = cjson.decode(raw)
  return tonumber(h.a), tonumber(h.e), h.m, h.o
end

-- return a team's expired holds (one 'expire' ledger entry each, naming the member); held after
local function sweep_team_holds(TK, now, tid, held, bal)
  if held <= 0 then return held end
  local due = redis.call('ZRANGEBYSCORE', TK.hexp, '-inf', now)
  if #due == 0 then return held end
  for _, rid in ipairs(due) do
    local raw = redis.call('HGET', TK.holds, rid)
    if raw then
      local amount, _, member, op = team_hold_decode(raw)
      held = held - amount
      redis.call('HDEL', TK.holds, rid)
      redis.call('HINCRBY', TK.mheld, member, -amount)
      ledger(TK.stream, { 'id', 'exp:' .. rid, 'ts', I(now), 'ak', 't', 'acct', tid, 'member', member,
        'kind', 'expire', 'amount', '0', 'hold', I(amount), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op })
    end
    redis.call('ZREM', TK.hexp, rid)
  end
  redis.call('HSET', TK.acct, 'held', I(held))
  return held
end

local function team_expired_total(TK, now)
  local total = 0
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', TK.hexp, '-inf', now)) do
    local raw = redis.call('HGET', TK.holds, rid)
    if raw then total = total + (team_hold_decode(raw)) end
  end
  return total
end

-- resolve a team hold (settled, released or refused): it is gone after
local function team_hold_drop(TK, rid, member, amount)
  redis.call('HDEL', TK.holds, rid)
  redis.call('ZREM', TK.hexp, rid)
  redis.call('HINCRBY', TK.mheld, member, -amount)
end

-- Team keys from KEYS in the order of pool_debit.lua / pool_reserve.lua
local function team_keys(K)
  return { acct = K[1], holds = K[2], hexp = K[3], caps = K[4], wd = K[5], wm = K[6], idem = K[7],
    stream = K[8], events = K[9], members = K[10], mspend = K[11], md = K[12], mm = K[13], mheld = K[14] }
end

-- One team debit (deduct_team or a team settlement): the body of pool_debit.lua, shared with
-- pool_debit_many.lua. K: pool_debit.lua's 14 keys, A: its 15 arguments. Returns its reply.
local function team_debit(K, A)
  local TK = team_keys(K)
  local again = replay(TK.idem, A[10])
  if again then return again end
  if backlog_full(TK.stream, A[14], A[15]) then
    return { 'ledger_backlog_full', '0', '', A[6], '0', '0', '' }
  end
  local now = now_ms(A[1])
  local tx, tid, uid, rid = A[2], A[3], A[4], A[5]
  local amount = tonumber(A[6])
  local op, model = A[7], A[8]

  local av = redis.call('HMGET', TK.acct, 'bal', 'held', 'created')
  if not av[3] then return { 'team_not_found', '0', '', I(amount), '0', '0', '' } end
  local bal = tonumber(av[1]) or 0
  local held = tonumber(av[2]) or 0
  local m = member_get(TK.members, uid)
  if not m then return { 'user_not_in_team', '0', '', I(amount), I(bal), I(held), '' } end
  held = sweep_team_holds(TK, now, tid, held, bal)

  local hold = 0
  if rid ~= '' then
    local raw = redis.call('HGET', TK.holds, rid)
    local hm, hop, hexp_ms
    if raw then hold, hexp_ms, hm, hop = team_hold_decode(raw) end
    if not raw or hm ~= uid then
      return { 'reservation_not_found', '0', '', I(amount), I(bal), I(held), '' }
    end
    if op == '' then op = hop end
  end

  local function refuse_for_cap(c)
    if c then cap_event(TK.events, A[13], 'credits.cap_reached', now, 't', tid, c, amount, tx) end
    if rid == '' then
      return { 'spend_cap_exceeded', '0', '', I(amount), I(bal), I(held), 'deny' }
    end
    held = held - hold
    redis.call('HSET', TK.acct, 'held', I(held))
    team_hold_drop(TK, rid, uid, hold)
    ledger(TK.stream, { 'id', tx, 'ts', I(now), 'ak', 't', 'acct', tid, 'member', uid, 'kind', 'release',
      'amount', '0', 'hold', I(hold), 'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'model', model,
      'idem', A[11], 'reason', 'spend_cap_exceeded', 'meta', A[9] })
    return remember(TK.idem, A[10], A[12], { 'spend_cap_exceeded', '0', tx, I(amount), I(bal), I(held), 'deny' })
  end

  -- the member's cap
  if m.cap ~= nil and m.cap ~= cjson.null then
    local spent, mheld = member_usage(TK, uid, m.period, now)
    if spent + (mheld - hold) + amount > tonumber(m.cap) then return refuse_for_cap(nil) end
  end
  -- the team's caps
  local deny, warns = evaluate_caps(applicable_caps(TK.caps, model), TK.wd, TK.wm, now, amount)
  if deny then return refuse_for_cap(deny) end
  -- the pool
  local need = amount - hold
  if need > 0 and bal - held - need < 0 then
    return { 'insufficient_team_balance', '0', '', I(amount), I(bal), I(held), '' }
  end

  bal = bal - amount
  if rid ~= '' then
    held = held - hold
    team_hold_drop(TK, rid, uid, hold)
  end
  redis.call('HSET', TK.acct, 'bal', I(bal), 'held', I(held))
  if amount > 0 then
    redis.call('HINCRBY', TK.mspend, uid, amount)
    local db, dend = bucket_of('d', now)
    window_add(TK.md, db, dend, amount, member_field(uid))
    local mb, mend = bucket_of('m', now)
    window_add(TK.mm, mb, mend, amount, member_field(uid))
    record_spend(TK.wd, TK.wm, now, amount, model)
  end
  local action = ''
  for _, c in ipairs(warns) do
    cap_event(TK.events, A[13], c[4] == 'warn' and 'credits.cap_warning' or 'credits.cap_reached',
      now, 't', tid, c, amount, tx)
    if action == '' or c[4] == 'warn' then action = c[4] end
  end
  ledger(TK.stream, { 'id', tx, 'ts', I(now), 'ak', 't', 'acct', tid, 'member', uid,
    'kind', rid ~= '' and 'settle' or 'debit', 'amount', I(-amount), 'hold', rid ~= '' and I(hold) or '',
    'bal', I(bal), 'held', I(held), 'rid', rid, 'op', op, 'model', model, 'idem', A[11], 'cap', action,
    'meta', A[9] })
  return remember(TK.idem, A[10], A[12], { 'ok', '0', tx, I(amount), I(bal), I(held), action })
end
