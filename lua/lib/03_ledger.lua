-- lib/03_ledger.lua: ledger rows (COPY text), the call context that collects them, the events and
-- idempotency replies a call leaves.
-- A row is one line of COPY text in ducto_redis/layout.py ROW_COLUMNS order: the script's columns
-- (id ts kind amount bal held hold exp cap reason extra) then the client's fragment (op ak acct
-- member rid model type idem meta), which arrives escaped and led by its tab. A script call
-- appends all its rows as ONE stream entry (field 'q', rows joined by "\n"); a row with an empty id
-- is named by its place in the stream (layout.tx_id).

local COPY_ESCAPES = { ['\\'] = '\\\\', ['\t'] = '\\t', ['\n'] = '\\n', ['\r'] = '\\r' }

-- a value as COPY text (only values Lua itself puts into rows: stored text, member ids)
local function esc(v)
  if sfind(v, '[\\\t\n\r]') then return (sgsub(v, '[\\\t\n\r]', COPY_ESCAPES)) end
  return v
end

-- the raw value of column n of a client fragment (ducto_redis/layout.py CLIENT_COLUMNS order,
-- 1-based; the fragment starts with its tab); for the rare paths that need the text itself
local function frag_value(frag, n)
  local s = 2
  for _ = 2, n do s = sfind(frag, '\t', s, true) + 1 end
  local e = sfind(frag, '\t', s, true)
  local v = ssub(frag, s, e and e - 1 or -1)
  if sfind(v, '\\', 1, true) then
    v = sgsub(v, '\\(.)', { t = '\t', n = '\n', r = '\r', ['\\'] = '\\' })
  end
  return v
end

-- A script call's context: configuration, clock, streams, the accounts it loaded and its rows.
-- One table, reused by every call (a script call runs alone) and reset at its start. `lazy`:
--   nil: the clock is read now (TIME);
--   true: not yet (ctx.c false): a single debit reads it once it knows how (lib/08_debit.lua
--     debit_clock), and may write its row first (ctx.pre: that entry's id; ctx.claimed: the decision
--     made is that row, else the call deletes the entry as it ends; ctx.caps_ok: its caps passed on
--     this day and month);
--   'many': a batch (debit_many.lua; ctx.many): decided on SPEC when the last call's clock is known
--     and the clock offset is 0 (its time then comes from its entry: lib/08_debit.lua many_stands;
--     ctx.dated: a cap was judged on SPEC's day), else on TIME;
--   a clock: that one (a batch started over on Redis' clock: ctx.again, many_stands).
-- (made with every field it gets, so it never grows: a table grown past its size is rehashed, and one
-- whose field is set to nil, ctx.full, may be again and again)
local CTX = { cfg = false, c = false, ledger = false, events = false, full = false, nrows = 0, rows = {}, order = {},
  accounts = {}, idem = false, pending = {}, pre = false, pre_bals = false, claimed = false, caps_ok = false,
  again = false, many = false, dated = false }
local function ctx_new(cfgtext, ledger, events, lazy)
  local ctx = CTX
  local cfg = configs[cfgtext or ''] or config(cfgtext)
  local c, many = false, false
  if lazy == true then  -- (c false)
  elseif not lazy then
    c = clock(cfg)
  elseif lazy == 'many' then
    local last = CLOCK
    if last.now and cfg.offset == 0 then
      SPEC.day, SPEC.month, c, ctx.dated = last.day, last.month, SPEC, false
    else
      c = clock(cfg)
    end
    many = true
  else
    c = lazy
  end
  ctx.cfg, ctx.c, ctx.ledger, ctx.events, ctx.full, ctx.nrows, ctx.idem, ctx.again, ctx.many = cfg, c, ledger,
    events, nil, 0, false, false, many
  if ctx.pre then ctx.pre, ctx.claimed, ctx.caps_ok = false, false, false end
  local order = ctx.order
  if order[1] then
    local accounts = ctx.accounts
    for i = #order, 1, -1 do
      accounts[order[i].key] = nil
      order[i] = nil
    end
  end
  local pending = ctx.pending
  if pending[1] then
    for i = #pending, 1, -1 do pending[i] = nil end
  end
  return ctx
end

-- remember a decision's pending reply under its idempotency key for the rest of the call (a
-- decision of the same key later in the call replays it); ctx.idem is made on first use
local function idem_put(ctx, key, r)
  local t = ctx.idem
  if not t then
    t = {}
    ctx.idem = t
  end
  t[key] = r
end

-- append a row (script columns as text; frag = the client's part); returns its index in the entry.
-- The call's rows are rows[1..nrows] (the table is reused: what lies beyond nrows is stale).
-- sign: '-' before the amount (a debit's: no '-' .. amount string is made for it), or nil.
local function row(ctx, id, kind, amount, bal, held, hold, exp, cap, reason, extra, frag, sign)
  local rows = ctx.rows
  local n = ctx.nrows
  ctx.nrows = n + 1
  local c = ctx.c
  rows[n + 1] = id .. '\t' .. c.sec .. c.msx .. '\t' .. kind .. '\t' .. (sign or '') .. amount .. '\t' .. bal .. '\t' .. held .. '\t' ..
    hold .. '\t' .. exp .. '\t' .. cap .. '\t' .. reason .. '\t' .. extra .. frag
  return n
end

-- a client fragment built here from raw values (rows the client did not describe: expiries, ...)
local function frag_of(op, ak, acct, member, rid)
  return '\t' .. esc(op) .. '\t' .. ak .. '\t' .. esc(acct) .. '\t' .. esc(member or '') .. '\t' .. (rid or '') ..
    '\t\t\t\t'
end

-- extra (a JSON object) as COPY text
local function extra_json(t)
  return esc(jencode(t))
end

-- write the call's rows as one stream entry; its id (or nil when there were none)
local function ctx_xadd(ctx)
  local n = ctx.nrows
  if n == 0 then return nil end
  local rows = ctx.rows
  return rcall('XADD', ctx.ledger, '*', 'q', n == 1 and rows[1] or tconcat(rows, '\n', 1, n))
end

-- "/<row>" of row n of the call's entry: a reference "<entry>/<row>" is the entry's id followed by
-- it, joined into the text that carries it (remembered: the same few rows again and again)
local ROW_SUFFIX = { [0] = '/0' }
local function row_suffix(n)
  local s = ROW_SUFFIX[n]
  if not s then
    s = '/' .. N(n)
    if n < 4096 then ROW_SUFFIX[n] = s end
  end
  return s
end

-- "<entry>/<row>" of row n of the call's entry
local function ref_of(entry, n)
  return entry .. (ROW_SUFFIX[n] or row_suffix(n))
end

-- Ledger backpressure: the shard's stream holds what the flusher has not stored yet (it trims after
-- committing). With a limit > 0 and policy "closed", holds and debits are refused past the limit.
local function backlog_full(ctx)
  local full = ctx.full
  if full == nil then
    full = ctx.cfg.closed and ctx.cfg.backlog > 0 and rcall('XLEN', ctx.ledger) >= ctx.cfg.backlog
    ctx.full = full
  end
  return full
end

local function event(ctx, fields)
  local args = { ctx.events, 'MAXLEN', '~', ctx.cfg.maxlen, '*' }
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if v ~= nil and v ~= '' then
      args[#args + 1] = fields[i]
      args[#args + 1] = v
    end
  end
  return rcall('XADD', B_unpack(args))
end

-- Idempotency keys remember the decision's reply (a string "status|0|..."); a replay answers it
-- with the idempotent flag set.
local function replayed(stored)
  local status, rest = smatch(stored, '^([^|]*)|%d|(.*)$')
  return status .. '|1|' .. rest
end

-- The idempotency key a debit was given, or nil: a call sending every KEY without one (a widened
-- debit.lua / pool_debit.lua call) gives the never-written "<account>:i" (ducto_redis/keys.py
-- no_idempotency_key), told by its length. (The "many" scripts send a decision's key only if it has one.)
local function idem_given(account, key)
  if #key == #account + 2 then return nil end
  return key
end

local function idem_seen(ctx, key)
  local t = ctx.idem
  local r = t and t[key]
  if B_type(r) == 'table' then  -- decided earlier in this call: the same row, flagged as a replay
    return { r[1], r[2], r[3], r[4], r[5], r[6], r[7], '1', r[9] }
  end
  if r then return r end
  r = rcall('GET', key)
  if r then return replayed(r) end
  return nil
end
