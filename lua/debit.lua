-- debit.lua: spend credits, checking rate limit, spend caps and balance in the same step. Two modes:
--   charge (rid = ""): the gateway's one-round-trip debit with no hold;
--   settle a reservation (rid given): the hold is gone after; spending less than the hold returns
--   the rest, more succeeds only if the available balance covers the difference.
-- A deny cap that would be exceeded refuses the debit (and releases the hold when settling);
-- warn/notify caps let it pass and append an event. See lib/09_user.lua.
-- KEYS: account grants ledger events [idem]
-- ARGV: cid amount frag [config model floor rid quantities]
--   quantities: "name=n;..." (a charge's, checked against the account's quantity limits; a settlement's
--   actual ones, correcting its hold's estimate) or ""
-- REPLY (text): status idempotent ref amount balance held cap retry remaining limit
--   remaining, limit: the request-rate limit's (requests left at once; requests per period), '' when
--   none was checked (a settlement, an account without one)
--   status: ok | insufficient_credits | spend_cap_exceeded | rate_limited | reservation_not_found
--           | ledger_backlog_full
local ctx = ctx_new(ARGV[4], KEYS[3], KEYS[4], true)
return finish_one(ctx, user_debit(ctx, KEYS, ARGV), KEYS[5])
