-- pool_debit.lua: spend from a team pool for a member (deduct_team), or settle a team reservation
-- (rid given). See lib/10_team.lua for the checks and their order.
-- KEYS: team ledger events [idem]
-- ARGV: cid amount member frag [config model rid]
--   member: the member's field in the team hash, "U|<member id>" (the client joins it: no string is
--   made for it per decision)
-- REPLY (text): status idempotent ref amount balance held cap retry remaining limit
--   status: ok | team_not_found | user_not_in_team | spend_cap_exceeded | insufficient_team_balance
--           | reservation_not_found | ledger_backlog_full
local ctx = ctx_new(ARGV[5], KEYS[2], KEYS[3], true)
return finish_one(ctx, team_debit(ctx, KEYS, ARGV), KEYS[4])
