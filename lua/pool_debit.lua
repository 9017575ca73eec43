-- pool_debit.lua: spend from a team pool for a member (deduct_team), or settle a team reservation
-- (rid given). See lib/10_team.lua for the checks and their order.
-- KEYS: team ledger [events idem]
--   lean (team ledger only): a decision that would need the events stream (a team cap passed: its
--   event) refuses with the error "DUCTO_KEYS ..." before anything is written; the client sends the
--   call again with them all (lib/08_debit.lua keys_short). idem: the idempotency key, or the
--   never-written "<team>:i" (ducto_redis/keys.py no_idempotency_key)
-- ARGV: cid amount member frag [config model rid]
--   member: the member's field in the team hash, "U|<member id>" (the client joins it: no string is
--   made for it per decision)
-- REPLY (text): status idempotent ref amount balance held cap retry remaining limit
--   status: ok | team_not_found | user_not_in_team | spend_cap_exceeded | insufficient_team_balance
--           | reservation_not_found | ledger_backlog_full
local ctx = ctx_new(ARGV[5], KEYS[2], KEYS[3], true)
return finish_one(ctx, team_debit(ctx, KEYS, ARGV), KEYS[4])
