-- lib/11_plans.lua: plans' free allowances (plan_debit.lua); the plan field's format is lib/02_state.lua's.

-- a plan's monthly free allowance from the allowance table JSON {"<plan id>": credits, ...}
-- (decoded once per distinct table: a pure function of the text)
local allowance_memo, allowance_count = {}, 0
local function plan_allowance(text, plan)
  local t = allowance_memo[text]
  if not t then
    t = jdecode(text)
    if allowance_count > 64 then allowance_memo, allowance_count = {}, 0 end
    allowance_memo[text], allowance_count = t, allowance_count + 1
  end
  return (t[plan] or 0) + 0
end
