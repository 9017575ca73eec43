-- lib/08_debit.lua: what a user debit (lib/09_user.lua) and a team debit (lib/10_team.lua) share:
-- their reply, the warn/notify caps a debit passed, a settlement refused by a deny cap, and the
-- end of a call.
--
-- A decision's reply is text: "status|idempotent|<entry>/<row>|amount|balance|held|cap|retry|remaining|limit"
-- (debit.lua's REPLY; <entry>/<row> names the decision's ledger row, '' when it wrote none;
-- "remaining|limit" the request-rate limit's, "|" when none was checked), made by decision_text
-- alone. A decision that wrote a row answers, until the call's entry id is known, a table
-- { status, row, amount, balance, held, cap, rate, idempotent, more } that finish_one() / finish()
-- turn into that text (rate: "remaining|limit" or "|"; more: what a script appends to the reply,
-- plan_debit.lua's allowance fields, or nil); one whose row was written first (debit_clock) knows
-- its entry already and answers the text at once.

-- The reply text; ref = entry .. suffix ('' .. '' when the decision wrote no row). The hot paths
-- spell the same concatenation out where they make it (reply_text, debit_made, and user_debit's
-- batched text after the entry id, which finish() completes): a Lua call costs
-- ~1 300 instructions there (measured), and every reply any test gets is read by the one parser
-- (ducto_redis/core.py).
local function decision_text(status, idem, entry, suffix, amount, bal, held, cap, retry, rate)
  return status .. '|' .. idem .. '|' .. entry .. suffix .. '|' .. amount .. '|' .. bal .. '|' .. held .. '|' .. cap ..
    '|' .. retry .. '|' .. rate
end

-- rate: the rate limit's "remaining|limit", or nil
local function refusal(status, amount, st, cap, retry, rate)
  return decision_text(status, '0', '', '', amount, bal_text(st), held_text(st), cap or '', retry or '0', rate or '|')
end

-- the reply to a call id this account has seen (a re-sent call): nothing changes
local function seen_reply(st, seen, amount)
  return decision_text('ok', '1', seen, '', amount, bal_text(st), held_text(st), '', '0', '|')
end

-- The cap action a debit's row and reply record for the warn/notify caps it passed: 'warn' if any
-- warn cap, else 'notify'.
local function cap_action(warns)
  local action = ''
  for _, cap in B_ipairs(warns) do
    if action == '' or cap[4] == 'warn' then action = cap[4] end
  end
  return action
end

-- One event per warn/notify cap a debit passed, naming its row n (ak, aid: the account).
local function cap_warnings(ctx, warns, ak, aid, amount, n)
  for _, cap in B_ipairs(warns) do
    cap_event(ctx, cap[4] == 'warn' and 'credits.cap_warning' or 'credits.cap_reached', ak, aid, cap, amount, n)
  end
end

-- A settlement refused for a cap releases its hold (field hf, `hold` credits): the reserved credits
-- stay the account's. One 'release' row; the cap_reached event of the deny cap `cap` (nil when a
-- team member's own cap refused it); the call id remembered. Returns the pending reply (remembered
-- for the idempotency key `idem`, if any). The caller has already taken the hold off what a team
-- member holds, or given back a user hold's quantity estimate.
local function settle_refused(ctx, st, hf, hold, frag, cid, amount_s, amount, ak, cap, idem)
  st_held(st, st.held - hold)
  field_del(st, hf)
  local n = row(ctx, '', 'release', '0', bal_text(st), held_text(st), I(hold), '', '', 'spend_cap_exceeded', '',
    frag)
  if cap then cap_event(ctx, 'credits.cap_reached', ak, frag_value(frag, 3), cap, amount, n) end
  ring_add(st, cid, n)
  local r = { 'spend_cap_exceeded', n, amount_s, bal_text(st), held_text(st), 'deny', '|', '0' }
  if idem then idem_put(ctx, idem, r) end
  return r
end

-- A lean call (debit.lua / pool_debit.lua given only the account and the ledger: ctx.events nil,
-- and no grants hash) decides what needs nothing more. The one rule of what needs more: an account
-- with expiring grants (gx: grants_due reads and writes the grants hash) and a cap passed, deny or
-- warn/notify (its event goes to the events stream; a refused settlement's too). Such a decision
-- returns KEYS_SHORT at once: finish_one() sends it as the error reply, before finish_writes(), so
-- nothing the call did is written (its rows, a holds sweep, the ring live in ctx until then; a row
-- debit_clock wrote first is deleted, as a refused decision's is); the client sends the same call
-- again with every KEY (ducto_redis/connect.py _plan).
local KEYS_SHORT = { err = "DUCTO_KEYS the decision needs its account's full keys" }
local function keys_short(ctx, st, deny, warns)
  return not ctx.events and (st.gx ~= '' or deny ~= nil or warns ~= nil)
end

-- The clock of a single debit (debit.lua, pool_debit.lua: ctx.c false until here), read once the
-- account is loaded. Its time is Redis' either way: from TIME, or from the call's own ledger entry.
-- A plain debit (`frag` given: no hold to settle, no model, no plan; no holds or grants due to look
-- at, no warn/notify cap: nothing in its row depends on the time) that will most likely be made —
-- judged on the last call's clock (CLOCK between calls): its balance covers it (`room` >= 0: what
-- stays available beyond its floor), its caps and its member's cap (`m`, a team's) pass — writes its
-- row first, with no time (a row's empty ts is its entry's time: ducto_redis/ledger/copy_text.py),
-- and takes the time from the entry's id instead of a TIME call (~8 600 instructions, a tenth of a
-- debit). The checks then run on that clock as on any other (the caps, judged already, only if
-- the day or the month changed meanwhile: ctx.caps_ok); a decision made claims the row (ctx.claimed:
-- row 0 of the entry, the balance text ctx.pre_bals; lib/09_user.lua, lib/10_team.lua), and
-- finish_writes deletes the entry (XDEL) when it is refused after all.
local PRE_CLOCK = { sec = '', msx = '' }
local function debit_clock(ctx, st, frag, amount_s, amount, room, m)
  local cfg, last = ctx.cfg, CLOCK
  if frag and room >= 0 and st.timeless and last.now and cfg.offset == 0
    and not (m and m.cap and member_spent(m, last) + m.held + amount > m.cap)
    and not ((st.dL or st.mL) and caps_check(st, nil, '', amount, last)) then
    local day, month = last.day, last.month
    ctx.c = PRE_CLOCK
    local bals = sformat('%d', st.bal - amount)  -- (I(), without its call)
    row(ctx, '', 'debit', amount_s, bals, st.helds_of == st.held and st.helds or held_text(st), '', '', '', '', '',
      frag, amount > 0 and '-' or nil)
    local entry = rcall('XADD', ctx.ledger, '*', 'q', ctx.rows[1])  -- ctx_xadd's, of this one row
    local ms = ssub(entry, 1, sfind(entry, '-', 4, true) - 1)  -- "<ms>-<seq>": Redis' clock, offset 0
    local c = clock_at(ms + 0, ms, '')
    -- the caps as judged above stand if the day and the month are still the last call's
    ctx.pre, ctx.pre_bals, ctx.nrows, ctx.c, ctx.caps_ok = entry, bals, 0, c, c.day == day and c.month == month
    return c
  end
  local c = clock(cfg)
  ctx.c = c
  return c
end

-- A debit made on the row it wrote first (ctx.pre, debit_clock: no hold, grants, model, plan or
-- warn/notify cap, so none of a debit's other end applies): it claims that row (row 0 of the entry,
-- its balance text ctx.pre_bals), remembers its call id, and answers its reply — the text at once
-- (its entry is known: decision_text's concatenation, spelled out), or, with an idempotency key
-- (`idem`) to remember it, the pending table reply_text finishes. rate: "remaining|limit" or "|".
local function debit_made(ctx, st, cid, amount_s, idem, rate)
  local bals, helds = ctx.pre_bals, st.helds_of == st.held and st.helds or held_text(st)
  ctx.claimed, st.bals = true, bals
  if st.rc then ring_add(st, cid, 0) else st.rc, st.rr = cid, 0 end
  if not idem then return 'ok|0|' .. ctx.pre .. '/0|' .. amount_s .. '|' .. bals .. '|' .. helds .. '||0|' .. rate end
  local r = { 'ok', 0, amount_s, bals, helds, '', rate, '0' }
  idem_put(ctx, idem, r)
  return r
end

-- The clock of a batch (debit_many.lua). Its time is Redis' either way: from TIME, or from the
-- call's own ledger entry. A charge depends on the time only through the day and the month when its
-- account has no holds or grants due to look at and no request-rate or quantity limit (st.day_only):
-- its caps, its spend windows. So a batch (offset 0, a last call's clock known: ctx_new) decides on
-- the day and the month of the last call's clock (SPEC: rows with no time, a row's empty ts being its
-- entry's: ducto_redis/ledger/copy_text.py), writes its entry, and takes the time from the entry's
-- id instead of a TIME call (~8 600 instructions a call); if that is another day or month, the entry
-- goes (XDEL) and the call starts over on it (finish_writes: false; ctx_new given the clock). A call
-- that wrote no row reads TIME only if its decisions judged the day (a cap: ctx.dated), and a
-- charge on an account that needs the time itself reads TIME there (many_clock_now): the rows and
-- events so far get its time, or the call starts over if its day or month is not the one judged.

-- the events (and with `rows`, the rows) made so far on SPEC get clock c's time
local function many_dated(ctx, c, rows)
  local ts = c.sec .. c.msx
  if rows then
    rows = ctx.rows
    for i = 1, ctx.nrows do rows[i] = '\t' .. ts .. ssub(rows[i], 2) end  -- (every such row's id is empty)
  end
  for _, e in B_ipairs(ctx.pending) do e[1][4] = ts end  -- (cap_event's ts)
end

-- SPEC left for TIME, read now: its clock (ctx.again when its day or month is not SPEC's)
local function many_clock_now(ctx)
  local c = clock(ctx.cfg)
  ctx.c = c
  if c.day ~= SPEC.day or c.month ~= SPEC.month then
    ctx.again = true
  else
    many_dated(ctx, c, true)
  end
  return c
end

-- a batch decided on SPEC, its entry written (or nil: no row): does it stand on Redis' clock?
local function many_stands(ctx, entry)
  local c
  if entry then
    local ms = ssub(entry, 1, sfind(entry, '-', 4, true) - 1)  -- "<ms>-<seq>": Redis' clock, offset 0
    c = clock_at(ms + 0, ms, '')
  elseif ctx.dated then  -- no row, but a cap judged (refused: its event's ts; or passed, then refused
    c = clock(ctx.cfg)  -- for the balance: another day's spend might have refused it for the cap)
  else
    return true  -- nothing it did depended on the time
  end
  if c.day ~= SPEC.day or c.month ~= SPEC.month then
    if entry then rcall('XDEL', ctx.ledger, entry) end
    return false
  end
  ctx.c = c
  if ctx.pending[1] then many_dated(ctx, c, false) end
  return true
end

-- Finishing a call: write the entry, the accounts and the events (the entry's id, or nil; false:
-- a batch, `many`, to start over: many_clock_now, many_stands)...
local function finish_writes(ctx, many)
  if many and ctx.again then return false end
  local entry = ctx.pre
  if entry and not ctx.claimed then  -- written first, then refused: the entry goes
    rcall('XDEL', ctx.ledger, entry)
    entry = false
  end
  if not entry then entry = ctx_xadd(ctx) end
  if many and ctx.c == SPEC and not many_stands(ctx, entry) then return false end
  if #ctx.order > 0 then accounts_store(ctx, entry) end
  if #ctx.pending > 0 then events_write(ctx, entry) end
  return entry
end

-- ...then each reply as text, its idempotency key (or nil) remembering it
local function reply_text(ctx, r, entry, key)
  local n = r[2]
  if n == nil then return r end  -- a text (a string has no [2])
  -- decision_text's concatenation, spelled out: a call per decision costs a batch ~1 300 instructions each
  local text = r[1] .. '|' .. r[8] .. '|' .. entry .. (ROW_SUFFIX[n] or row_suffix(n)) .. '|' .. r[3] .. '|' ..
    r[4] .. '|' .. r[5] .. '|' .. r[6] .. '|0|' .. r[7] .. (r[9] or '')
  if key and r[8] == '0' and ctx.idem and ctx.idem[key] == r then
    rcall('SET', key, text, 'EX', ctx.cfg.idem_ttl)
    ctx.idem[key] = replayed(text)
  end
  return text
end

-- Finish a call of one decision: its reply as text.
local function finish_one(ctx, r, key)
  if r == KEYS_SHORT then  -- a lean call refused: nothing written (a row written first goes, as
    if ctx.pre then rcall('XDEL', ctx.ledger, ctx.pre) end  -- finish_writes deletes a refused one's)
    return r
  end
  local entry = finish_writes(ctx)
  if r[2] == nil then return r end  -- a text already (a string has no [2]): reply_text's first case
  return reply_text(ctx, r, entry, key)
end

-- The tables a call of many decisions (debit_many.lua, pool_debit_many.lua) fills, made once and
-- refilled by every such call (a call runs alone; a table made per call is garbage the collector
-- sweeps, grown by rehashing): one decision's KEYS and ARGV as the single script has them (the
-- debit keeps neither), per decision its reply and mark (finish), and the pieces of the call's
-- reply. Entries past the call's count are stale: every use is bounded by it.
local MANY_K, MANY_A, MANY_REPLIES, MANY_MARKS, MANY_OUT = {}, {}, {}, {}, {}

-- Finish a call of `n` decisions: its reply, each decision's text on a line; nil: start over
-- (many_stands). marks: per decision, true when its reply is the text after its entry id (a made
-- decision of a batch, lib/09_user.lua), else its idempotency key or false. A made decision's line
-- is joined from two pieces by the one concatenation of the reply, not made as a string of its own
-- first (each string Lua makes is hashed, interned and collected).
local function finish(ctx, replies, marks, n)
  local entry = finish_writes(ctx, true)
  if entry == false then return nil end
  local out, j, made = MANY_OUT, 0, nil
  for i = 1, n do
    local m = marks[i]
    if m == true then
      if not made then made = 'ok|0|' .. entry end
      out[j + 1], out[j + 2], out[j + 3] = made, replies[i], '\n'
      j = j + 3
    else
      out[j + 1], out[j + 2] = reply_text(ctx, replies[i], entry, m), '\n'
      j = j + 2
    end
  end
  return tconcat(out, '', 1, j - 1)
end
