-- sweep_credits.lua: expire the due grants of some accounts of one shard (sweep_expired_credits).
-- Each expired grant remainder leaves the balance with one ledger row (kind 'expire', reason
-- 'credit_expired'); never below what is held (lib/07_grants.lua). The account's place in the
-- grant index moves to its next expiry (or it leaves the index). A dry run writes nothing.
-- KEYS: gindex ledger; per account: account grants
-- ARGV: dry call config; per account: user
--   call: this call's unique id (names the expiry entries); user: the user id (raw)
-- REPLY (table): status idempotent count amount; per expiry: user grant amount expires entry
--   count, amount: of the expiries; user, grant: ids; expires: ms; entry: the expiry's entry id
local ctx = ctx_new(ARGV[3], KEYS[2], KEYS[2])
local gidx = KEYS[1]
local dry = ARGV[1] == '1'
local count, total, out = 0, 0, {}
for i = 0, (#KEYS - 2) / 2 - 1 do
  local acct, G = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local uid = ARGV[4 + i]
  local st = account(ctx, acct, {})
  if st.gx == '' then
    if not dry then rcall('ZREM', gidx, uid) end
  else
    if dry then
      st.held = st.held - (holds_expired(st, ctx.c.now, false))
    else
      holds_sweep(ctx, st, 'u', uid, false)
    end
    local list = grants_load(G)
    local _, expired = grants_expire(ctx, st, list, G, not dry, 'u', uid, ARGV[2])
    for _, e in B_ipairs(expired) do
      count, total = count + 1, total + e[2]
      out[#out + 1] = uid
      out[#out + 1] = e[1]
      out[#out + 1] = I(e[2])
      out[#out + 1] = I(e[3])
      out[#out + 1] = e[4]
    end
    if not dry then
      list = grants_keep(st, list)
      if #list > 0 then rcall('ZADD', gidx, list[1][2], uid) else rcall('ZREM', gidx, uid) end
    end
  end
end
if not dry then finish_writes(ctx) end
local reply = { 'ok', '0', I(count), I(total) }
for _, x in B_ipairs(out) do reply[#reply + 1] = x end
return reply
