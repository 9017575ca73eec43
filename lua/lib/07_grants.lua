-- lib/07_grants.lua: expiring grants.
-- A grant (add_credits with expires_at) is a part of the balance that leaves it at expiry if unspent.
-- The grants hash G holds grant id -> "expires_ms|remaining"; the account's state field gx holds the
-- earliest expiry ('' when the account has no grant), so an account without grants pays nothing.
-- Spending consumes the oldest-expiring grants first, then ordinary credits. Holds do not consume
-- grants (their settlement does), but they cover the oldest-expiring credits first (the order a
-- settlement spends them in): the covered part of an expired grant stays, pinned and still due,
-- until the holds resolve; the rest leaves. An expiry never takes the balance below what is held.

-- numbering of a call's grant expiries (entry ids "cexp:<call id>:<n>", unique per call id)
local expiry_call, expiry_seq = nil, 0

-- the grants of G as a list {id, expires ms, remaining}, oldest expiry first
local function grants_load(G)
  local raw = rcall('HGETALL', G)
  local list = {}
  for i = 1, #raw, 2 do
    local e, r = smatch(raw[i + 1], '^(%d+)|(%d+)$')
    list[#list + 1] = { raw[i], e + 0, r + 0 }
  end
  tsort(list, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
  return list
end

local function grants_put(G, g)
  if g[3] <= 0 then
    rcall('HDEL', G, g[1])
  else
    rcall('HSET', G, g[1], I(g[2]) .. '|' .. I(g[3]))
  end
end

-- the list without emptied grants; the account's gx follows its earliest expiry
local function grants_keep(st, list)
  local out = {}
  for _, g in B_ipairs(list) do
    if g[3] > 0 then out[#out + 1] = g end
  end
  local gx = #out > 0 and I(out[1][2]) or ''
  if gx ~= st.gx then st.gx, st.wS = gx, true end
  return out
end

-- Expire the due grants of a sorted list (each loses what the holds do not cover). Returns the
-- balance after and the expiries {grant id, amount, expires ms, entry id}. With write: updates G,
-- the account's balance (not spend) and appends one 'expire' row each (reason 'credit_expired',
-- extra.grant). call: the unique id of this decision.
local function grants_expire(ctx, st, list, G, write, ak, aid, call)
  local out = {}
  local bal, held = st.bal, st.held
  local cover = mmax(held, 0)
  local now = ctx.c.now
  for _, g in B_ipairs(list) do
    if g[2] > now then break end
    local c = mmin(g[3], cover)
    cover = cover - c
    local e = mmin(g[3] - c, mmax(bal - held, 0))
    if e > 0 then
      local eid = ''
      bal = bal - e
      g[3] = g[3] - e
      if write then
        if expiry_call ~= call then expiry_call, expiry_seq = call, 0 end
        expiry_seq = expiry_seq + 1
        eid = 'cexp:' .. call .. ':' .. I(expiry_seq)
        grants_put(G, g)
        st_balance(st, ctx.c, bal, 0)
        row(ctx, eid, 'expire', I(-e), bal_text(st), held_text(st), '', I(g[2]), '', 'credit_expired',
          extra_json({ grant = g[1] }), frag_of('', ak, aid))
      end
      out[#out + 1] = { g[1], e, g[2], eid }
    end
  end
  return bal, out
end

-- Lazy expiry at the start of a mutation. Returns the sorted grant list (nil without grants).
local function grants_due(ctx, st, G, ak, aid, call)
  if st.gx == '' then return nil end
  local list = grants_load(G)
  if st.gx + 0 > ctx.c.now then return list end
  grants_expire(ctx, st, list, G, true, ak, aid, call)
  return grants_keep(st, list)
end

-- Spend `amount` from grants, oldest expiry first; a charge (settling false) skips expired grants
-- (their pinned rest belongs to holds). Returns the parts consumed "id:expires:amount;...".
local function grants_consume(list, G, amount, now, settling)
  local parts, left = {}, amount
  for _, g in B_ipairs(list) do
    if left <= 0 then break end
    if settling or g[2] > now then
      local take = mmin(g[3], left)
      if take > 0 then
        g[3] = g[3] - take
        left = left - take
        grants_put(G, g)
        parts[#parts + 1] = g[1] .. ':' .. I(g[2]) .. ':' .. I(take)
      end
    end
  end
  return tconcat(parts, ';')
end
