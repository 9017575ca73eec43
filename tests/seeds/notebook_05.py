# The code of ../shared/seeds/05-spend-caps.txt, unchanged but for its import/setup lines
# (the indentation the text export lost is restored). The test runs it with `store` replaced
# by each backend's constructor.
import uuid
from datetime import datetime, timedelta
from ducto_redis import MemoryStore
from ducto_redis import PricingEngine
from ducto_redis import UsageMetrics, ToolCall
from ducto_redis import (
PricingConfigData, PlanDefinition,
CreditMetadata, SpendCap,
)
store = MemoryStore()
store.setup()
print("✔ MemoryStore ready.")
# Create a new user for this spend cap demonstration
user = str(uuid.uuid4())
# Seed the user with a generous starting balance of 50,000 credits
store.add_credits(user, 50_000, type="seed")
print(f" Initial balance: {store.get_balance(user).balance}")
# Define a daily deny-cap: maximum 5,000 credits consumed per day, hard block
cap = SpendCap(user_id=user, cap_type="daily", limit=5_000, action="deny")
# Register the cap with the store
store.set_spend_cap(cap)
print(f" Cap registered: type=daily, limit={cap.limit}, action={cap.action}")
# Reserve 3,000 credits — this is well under the 5,000 daily cap
res = store.reserve_credits(user, 3_000, operation_type="inference")
# Deduct the reserved credits — this should succeed since 3,000 is less than 5,000
ded = store.deduct_credits(user, res.reservation_id, 3_000)
print(f" Deduction succeeded: balance after = {ded.balance_after}")
# Check the user's current spend against their configured cap
check = store.check_spend_cap(user)
print(f" Cap status: capped={check.capped}, current spend={check.current_spend}")
# Attempt a second deduction of 3,000 credits — this would exceed the remaining cap
res2 = store.reserve_credits(user, 3_000, operation_type="inference")
# Try to deduct — the store will reject this because 3,000 already spent + 3,000 new > 5,000 cap
ded2 = store.deduct_credits(user, res2.reservation_id, 3_000)
# Check the result: with a deny cap, the error field contains a descriptive message
if ded2.error:
    print(f" Deduction denied: {ded2.error}")
else:
    print(f" Deduction allowed: balance after = {ded2.balance_after}")
print(f" Explanation: daily cap = 5,000, already spent 3,000 today")
# Create a second user for the warn cap demonstration
user2 = str(uuid.uuid4())
# Seed the user with 50,000 credits, same as the first user
store.add_credits(user2, 50_000, type="seed")
# Set a very low daily cap of 500 credits with the warn action (not deny)
store.set_spend_cap(SpendCap(user_id=user2, cap_type="daily", limit=500, action="warn"))
# Attempt to deduct 1,000 credits — exceeds the 500-credit warn cap
res3 = store.reserve_credits(user2, 1_000, operation_type="inference")
ded3 = store.deduct_credits(user2, res3.reservation_id, 1_000)
# Check cap status — the action field confirms "warn" and current spend exceeds the limit
check2 = store.check_spend_cap(user2)
print(f" Current spend: {check2.current_spend} Cap limit: {check2.cap_limit} Action: {check2.action}")
print(f" Key insight: warn action allows the deduction but flags the overage")
