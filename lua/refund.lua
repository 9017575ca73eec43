-- refund.lua: give back all or part of a debit (a charge or a settlement, user or team), ONCE: as in
-- ducto 1.0, a transaction that has been refunded (in full or in part) answers already_refunded, so
-- a retried refund call written for ducto (which has no idempotency key) can never pay out twice;
-- racing refunds: one wins. The account keeps a marker r:<debit id> (the amount refunded). The
-- debit's details come from its ledger row (the stream, or the ledger database once flushed).
-- A user's credits return in the form they were spent: first the part that came from ordinary
-- credits, then the parts that came from expiring grants (latest-expiring first), each restored to
-- its grant with the grant's original expiry (a grant already past it expires at once). A team
-- refund returns the credits to the pool. A refund does not give back spend-cap room.
-- One ledger row of kind 'refund' (amount positive, extra.ref = the debit's id).
-- KEYS: account grants gindex ledger idem
-- ARGV: cid tx original amount requested parts reason frag has_idem config
--   amount: the debit's amount; requested: "" for the whole debit; parts: the debit's grant parts
--   ("id:expires:amount;..."); reason: COPY-escaped
-- REPLY (text): status idempotent tx amount balance kind who
--   kind: the account kind (u | t); who: JSON [account id, member]
--   status: ok | already_refunded | invalid_amount
local ctx = ctx_new(ARGV[10], KEYS[4], KEYS[4])
local function reply(status, idem, tx, amount, bal)
  return status .. '|' .. idem .. '|' .. tx .. '|' .. amount .. '|' .. bal .. '|' .. frag_value(ARGV[8], 2) .. '|' ..
    jencode({ frag_value(ARGV[8], 3), frag_value(ARGV[8], 4) })
end
local acct, G, gidx, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
if ARGV[9] == '1' then
  local again = idem_seen(ctx, idem)
  if again then return again end
end
local cid, tx, orig, frag = ARGV[1], ARGV[2], ARGV[3], ARGV[8]
local rf = 'r:' .. orig
local st = account(ctx, acct, { rf })
if ring_seen(st, cid) then
  return reply('ok', '1', tx, field(st, rf) or '0', bal_text(st))
end
if field(st, rf) then return reply('already_refunded', '0', '', '0', bal_text(st)) end
local a = ARGV[4] + 0
local x = ARGV[5] == '' and a or ARGV[5] + 0
if x > a then return reply('invalid_amount', '0', '', I(x), bal_text(st)) end
local ak, aid = frag_value(frag, 2), frag_value(frag, 3)
holds_sweep(ctx, st, ak, aid, ak == 't')
if ak == 'u' then grants_due(ctx, st, G, ak, aid, cid) end
if st.bal + x > MAX_SAFE then
  finish_writes(ctx)
  return reply('invalid_amount', '0', '', I(x), bal_text(st))
end

-- which grant parts this refund returns: units [0, x) of the debit, ordinary credits first,
-- then the grant parts in reverse order of consumption
local parts = {}
for gid, e, n in sgmatch(ARGV[6], '([^:;]+):(%d+):(%d+)') do
  parts[#parts + 1] = { gid, e + 0, n + 0 }
end
local pos = a
for _, p in B_ipairs(parts) do pos = pos - p[3] end
local back, back_s, earliest = {}, {}, nil
for i = #parts, 1, -1 do
  local p = parts[i]
  local lo, hi = pos, mmin(pos + p[3], x)
  if hi > lo then
    back[#back + 1] = { p[1], p[2], hi - lo }
    back_s[#back_s + 1] = p[1] .. ':' .. I(p[2]) .. ':' .. I(hi - lo)
  end
  pos = pos + p[3]
end

st_balance(st, ctx.c, st.bal + x, 0)
field_set(st, rf, I(x))
for _, g in B_ipairs(back) do
  local cur = rcall('HGET', G, g[1])
  local rem = cur and smatch(cur, '|(%d+)$') + 0 or 0
  rcall('HSET', G, g[1], I(g[2]) .. '|' .. I(rem + g[3]))
  if not earliest or g[2] < earliest then earliest = g[2] end
end
local e = { ref = orig }
if #back_s > 0 then e.gr = tconcat(back_s, ';') end
row(ctx, tx, 'refund', I(x), bal_text(st), held_text(st), '', '', '', ARGV[7], extra_json(e), frag)
if earliest then
  if st.gx == '' or earliest < st.gx + 0 then
    st.gx, st.wS = I(earliest), true
    rcall('ZADD', gidx, earliest, aid)
  end
  -- a part whose grant expiry has passed leaves again at once
  local list = grants_due(ctx, st, G, ak, aid, cid)
  if list then grants_keep(st, list) end
end
ring_add(st, cid, nil)
finish_writes(ctx)
local r = reply('ok', '0', tx, I(x), bal_text(st))
if ARGV[9] == '1' then rcall('SET', idem, r, 'EX', ctx.cfg.idem_ttl) end
return r
