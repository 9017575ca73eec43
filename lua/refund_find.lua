-- refund_find.lua (read-only): the ledger row of a debit still in its shard's stream, or a
-- remembered refund reply. A refund names only the debit's transaction id, which names its shard,
-- stream entry and row (ducto_redis/layout.py tx_id); the refund script then runs with the keys of
-- the account the row names. A debit no longer in the stream (flushed) is looked up in the ledger
-- database by the store.
-- KEYS: ledger idem
-- ARGV: entry row has_idem
-- REPLY (special):
--   one of: a remembered refund.lua reply (idempotent "1"), or "found\t<the row>", or "gone" (not in
--   the stream, and older than its first entry: flushed, look in the ledger database), or
--   "transaction_not_found" (never in this stream)
if ARGV[3] == '1' then
  local again = rcall('GET', KEYS[2])
  if again then return replayed(again) end
end
local got = rcall('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #got == 0 then
  local first = rcall('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  local ms, seq = smatch(ARGV[1], '^(%d+)-(%d+)$')
  if #first == 0 then return 'gone' end
  local fms, fseq = smatch(first[1][1], '^(%d+)-(%d+)$')
  if ms + 0 < fms + 0 or (ms + 0 == fms + 0 and seq + 0 < fseq + 0) then return 'gone' end
  return 'transaction_not_found'
end
local f = got[1][2]
if f[1] ~= 'q' then return 'transaction_not_found' end
local rows, n, s = f[2], ARGV[2] + 0, 1
for _ = 1, n do
  s = sfind(rows, '\n', s, true)
  if not s then return 'transaction_not_found' end
  s = s + 1
end
local e = sfind(rows, '\n', s, true)
return 'found\t' .. ssub(rows, s, e and e - 1 or -1)
