# The code of ../shared/seeds/06-teams.txt, unchanged but for its import/setup lines
# (`start_postgres_store()` becomes the store under test; `cleanup(pgdata)` is dropped; the
# indentation the text export lost is restored).
from datetime import datetime, timedelta
from ducto_redis import MemoryStore
from ducto_redis import PricingEngine
from ducto_redis import UsageMetrics, ToolCall
from ducto_redis import (
PricingConfigData, PlanDefinition,
CreditMetadata,
)

store = MemoryStore()
import uuid
print("✔ PostgresStore ready.")
# Create a team entity with its own independent credit balance.
# The team "Engineering" gets 100 000 credits deposited into its
# team pool. This balance is separate from any individual user
# balance and can only be accessed through team-specific methods.
team = store.create_team(name="Engineering", initial_balance=100_000)
print(f" Team created: name='{team.name}', id={team.team_id}, initial_balance=100000")
# Generate three unique user IDs that will serve as team members.
members = [str(uuid.uuid4()) for _ in range(3)]

# Each user must have a record in the user_credits table before
# they can join a team. Here we add them with a zero-balance
# adjustment: the user record exists but holds no personal credits.
for uid in members:
    store.add_credits(uid, 0, type="adjustment")
    # Now that the user exists, add them to the Engineering team.
    store.add_team_member(team.team_id, uid, role="member")
    print(f" Member added: {uid[:8]}… to team {team.team_id[:8]}…")

# Inspect the team balance to confirm the pool is intact and all
# three members are registered.
bal = store.get_team_balance(team.team_id)
print(f" Team balance: {bal.balance} credits across {bal.member_count} members")
# Deduct 5 000 credits from the team pool on behalf of members[0].
# The deduction is charged against the team balance, not against
# the individual user's personal balance (which is 0).
res = store.deduct_team(team.team_id, members[0], 5_000)
print(f" Deducted 5 000 for {members[0][:8]}…: team_balance_after={res.team_balance_after}, error={res.error}")

# Verify the team balance decreased from 100 000 to 95 000.
bal2 = store.get_team_balance(team.team_id)
assert bal2.balance == 95_000
# Attempt to deduct 999 999 credits, far more than the 95 000
# remaining in the team pool. The store should reject this.
res2 = store.deduct_team(team.team_id, members[1], 999_999)
print(f" Attempt to deduct 999 999: error='{res2.error}', team_balance_after={res2.team_balance_after}")
print(f" (team balance is 95 000 — insufficient to cover the request)")
assert res2.error == "insufficient_team_balance"
# Create a new user and add them to the team with a per-member
# spend cap of 3 000 credits. This limits how much this specific
# user can draw from the shared pool, regardless of how many
# credits remain in the team balance.
capped_user = str(uuid.uuid4())
store.add_credits(capped_user, 0, type="adjustment")
store.add_team_member(team.team_id, capped_user, role="member", spend_cap=3_000)
print(f" Member added: {capped_user[:8]}… with spend_cap=3 000")

# Deduct exactly 3 000 — this is within the cap, so it succeeds.
# The team pool covers the cost, and the user's personal cap
# tracker records this spend.
res3 = store.deduct_team(team.team_id, capped_user, 3_000)
print(f" Deducted 3 000 (within cap): team_balance_after={res3.team_balance_after}")

# Attempt to deduct 1 more credit. Even though the team pool has
# plenty remaining, this user has exhausted their personal cap
# of 3 000. The transaction is rejected.
res4 = store.deduct_team(team.team_id, capped_user, 1)
print(f" Attempt to deduct 1 (exceeds cap): error='{res4.error}'")
assert res4.error == "spend_cap_exceeded"
print(" Verification passed: per-member spend cap correctly enforced")
