-- refund_find.lua (read-only): which account a refundable debit belongs to, or a remembered reply.
-- A refund names only the transaction; its shard is encoded in the id (ducto_redis/core.py
-- tx_id_in_shard), its record (written by the debit) names the user, and the refund script then
-- runs with that user's keys.
-- KEYS[1] the debit's refund record   KEYS[2] refund idempotency key
-- ARGV[1] clock offset ms   ARGV[2] has idempotency key ("1"/"0")
-- Reply: a remembered refund.lua reply (idempotent "1"), or { "ok", "0", user id } or
--        { "transaction_not_found", "0", "" }
local again = replay(KEYS[2], ARGV[2])
if again then return again end
local rec = redis.call('GET', KEYS[1])
if not rec then return { 'transaction_not_found', '0', '' } end
local uid = string.match(rec, '^%d+|%d+|[^|]*|(.*)$')
return { 'ok', '0', uid }
