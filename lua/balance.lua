-- balance.lua (read-only): an account's balance, held amount (expired holds excluded) and lifetime.
-- Expired grants are left out of the balance as the next mutation would expire them.
-- KEYS: account grants
-- ARGV: config
-- REPLY (table): status idempotent balance held life exists
--   status: ok; idempotent: 0; life: lifetime purchased; exists: "1" | "0"
local ctx = { c = clock(config(ARGV[1])), rows = {} }
local v = rcall('HMGET', KEYS[1], 'b', 'S', 'life', 'created')
local st = st_new(KEYS[1], v[1] or nil, v[2] or nil, nil)
local held = st.held - (holds_expired(st, ctx.c.now, false))
local bal = st.bal
if st.gx ~= '' and st.gx + 0 <= ctx.c.now then
  st.held = held
  bal = grants_expire(ctx, st, grants_load(KEYS[2]), KEYS[2], false)
end
return { 'ok', '0', I(bal), I(held), v[3] or '0', v[4] and '1' or '0' }
