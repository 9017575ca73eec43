#!lua name=floor
-- bench/floor_debit_many.lua: the least a batched debit can do with ducto-redis' layout (one hash
-- per account: balance 'b' and the ring of recent call ids 'r'; one ledger entry per call), for
-- bench/instructions.py's floor_* cases. Not the store's: no caps, holds, grants, idempotency keys,
-- models, backlog or replay reply; only what every batched charge on its own account does at least.
-- KEYS: ledger; per decision: account.  ARGV: per decision: call id, amount, fragment.
-- REPLY: per decision "ok|0|<entry>/<row>|amount|balance" or "insufficient_credits", by newlines.
local function floor_many(KEYS, ARGV)
  local n = #KEYS - 1
  local accts, order, rows, out, nrows = {}, {}, {}, {}, 0
  for i = 1, n do
    local key, a = KEYS[i + 1], 3 * i - 2
    local cid, amount_s = ARGV[a], ARGV[a + 1]
    local st = accts[key]
    if not st then
      local v = redis.call('HMGET', key, 'b', 'r')
      st = { key = key, bal = (v[1] or '0') + 0, ring = v[2] or '', cids = {} }
      accts[key], order[#order + 1] = st, st
    end
    local amount = amount_s + 0
    local seen = st.ring ~= '' and string.find(st.ring, cid, 1, true)  -- (a re-sent call: its cost only)
    if st.bal < amount then
      out[i] = 'insufficient_credits'
    else
      st.bal = st.bal - amount
      st.bals = string.format('%d', st.bal)
      rows[nrows + 1] = '\t\tdebit\t-' .. amount_s .. '\t' .. st.bals .. '\t0\t\t\t\t\t' .. ARGV[a + 2]
      st.cids[#st.cids + 1], st.cids[#st.cids + 2] = cid, nrows
      out[i] = nrows
      nrows = nrows + 1
    end
  end
  local entry = ''
  if nrows > 0 then entry = redis.call('XADD', KEYS[1], '*', 'q', table.concat(rows, '\n', 1, nrows)) end
  for j = 1, #order do
    local st = order[j]
    local ring = st.ring
    for k = 1, #st.cids, 2 do ring = st.cids[k] .. '=' .. entry .. '/' .. st.cids[k + 1] .. ';' .. ring end
    if #ring > 260 then ring = string.sub(ring, 1, 130) end
    redis.call('HSET', st.key, 'b', st.bals or string.format('%d', st.bal), 'r', ring)
  end
  for i = 1, n do
    local r = out[i]
    if r ~= 'insufficient_credits' then
      out[i] = 'ok|0|' .. entry .. '/' .. r .. '|' .. ARGV[3 * i - 1] .. '|' .. accts[KEYS[i + 1]].bals
    end
  end
  return table.concat(out, '\n')
end
redis.register_function('floor_many', floor_many)
