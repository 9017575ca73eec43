"""Pricing: formulas per model, tool, search, cache and fixed job, turned into whole-credit costs.

Pure Python (no Redis). ``PricingEngine.from_dict(config).calculate(UsageMetrics(...))`` gives a
:class:`CostBreakdown` whose ``total`` is the exact cost and ``credits`` the whole credits charged
for it (rounded up).
"""

from __future__ import annotations

from ducto_redis.pricing.engine import (
    PricingEngine,
    UnknownFixedJobError,
    UnknownModelError,
    UnknownPlanError,
)
from ducto_redis.pricing.expr import (
    ALLOWED_FUNCTIONS,
    MAX_EXPRESSION_LENGTH,
    MAX_MAGNITUDE,
    evaluate_expression,
    validate_expression,
)
from ducto_redis.pricing.metrics import (
    METRIC_VARIABLES,
    CostBreakdown,
    ToolCall,
    UsageMetrics,
    round_up_credits,
)

__all__ = [
    "ALLOWED_FUNCTIONS",
    "MAX_EXPRESSION_LENGTH",
    "MAX_MAGNITUDE",
    "METRIC_VARIABLES",
    "CostBreakdown",
    "PricingEngine",
    "ToolCall",
    "UnknownFixedJobError",
    "UnknownModelError",
    "UnknownPlanError",
    "UsageMetrics",
    "evaluate_expression",
    "round_up_credits",
    "validate_expression",
]
