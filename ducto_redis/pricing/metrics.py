"""Usage telemetry going into the pricing engine, and the cost breakdown coming out.

Names and fields are ducto 1.0's (``UsageMetrics``, ``ToolCall``, ``CostBreakdown`` with its exact
``total``). The money rule is ducto-redis's and lives where money moves: credits in the store are
whole numbers, so what is charged is :attr:`CostBreakdown.credits`, the exact cost rounded UP to a
whole credit (:func:`round_up_credits`); ducto 1.0 truncated with ``int()``, which made every call
under one credit free.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

CREDIT_ROUNDING_DIGITS = 9
"""Exact costs are rounded to this many decimals before rounding up, to absorb float noise."""

METRIC_VARIABLES: frozenset[str] = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "tool_calls",
        "search_queries",
        "search_results",
        "web_search_calls",
        "code_exec_calls",
    }
)
"""The variables every pricing formula may use (checked when a configuration is loaded)."""

Count = Annotated[int, Field(ge=0, le=2**53 - 1)]


def round_up_credits(value: float) -> int:
    """Whole credits to charge for an exact cost: rounded up, never negative.

    The value is first rounded to :data:`CREDIT_ROUNDING_DIGITS` decimals so float noise does not
    cost a credit (``0.1 * 3 * 10`` is ``3.0000000000000004`` → 3, not 4); then any fraction left
    costs a whole credit (0.4 → 1). Zero and negative values give 0.

    Raises:
        ValueError: ``value`` is NaN or infinite.
    """
    if not math.isfinite(value):
        raise ValueError(f"cost is not a finite number: {value!r}")
    rounded = round(value, CREDIT_ROUNDING_DIGITS)
    return math.ceil(rounded) if rounded > 0 else 0


class ToolCall(BaseModel):
    """A single tool invocation recorded during an agent step."""

    name: str


class UsageMetrics(BaseModel):
    """Raw usage counters of one priced event (one or more agent steps).

    Every counter defaults to 0 and must be a whole number in ``0..2**53-1``. ``model`` None (or the
    string ``"none"``) prices with the ``_default`` model formula, as in ducto 1.0. ``tool_calls``
    also accepts plain tool names (``["search", "search"]``).
    """

    model: str | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_tokens: Count = 0
    cache_write_tokens: Count = 0
    tool_calls: list[ToolCall] = Field(default_factory=list)
    search_queries: Count = 0
    search_results: Count = 0
    web_search_calls: Count = 0
    code_exec_calls: Count = 0
    fixed_job: str | None = None

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _names_to_tool_calls(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [ToolCall(name=v) if isinstance(v, str) else v for v in value]
        return value

    def tool_counts(self) -> dict[str, int]:
        """Number of calls per tool name, in the order the tools first appear."""
        counts: dict[str, int] = {}
        for call in self.tool_calls:
            counts[call.name] = counts.get(call.name, 0) + 1
        return counts

    def variables(self) -> dict[str, int]:
        """The formula variables (:data:`METRIC_VARIABLES`); ``tool_calls`` is the count of all calls."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "tool_calls": len(self.tool_calls),
            "search_queries": self.search_queries,
            "search_results": self.search_results,
            "web_search_calls": self.web_search_calls,
            "code_exec_calls": self.code_exec_calls,
        }


class CostBreakdown(BaseModel):
    """Credit cost of one usage event, per dimension: ducto's exact ``total``, and the whole
    ``credits`` charged for it.

    The parts are exact (not rounded) floats. ``cache_savings`` is signed: it is the value of the
    cache formula, normally negative (a discount), and is added to the other parts. ``total`` is
    always recomputed from the parts, as ducto 1.0 did: ``max(0, model + tool + search +
    cache_savings + fixed)``, whatever is passed for it (2.85 stays 2.85). :attr:`credits` is what
    money moves by — the store holds whole credits — ``round_up_credits(total)`` (2.85 costs 3).
    ``breakdown`` carries details, including the exact values before clamping.
    """

    model_config = ConfigDict(protected_namespaces=())

    model_credits: float = 0.0
    tool_credits: float = 0.0
    search_credits: float = 0.0
    cache_savings: float = 0.0
    fixed_credits: float = 0.0
    total: float = 0.0
    breakdown: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _compute_total(self) -> CostBreakdown:
        parts = self.model_credits + self.tool_credits + self.search_credits + self.cache_savings
        self.total = max(0.0, parts + self.fixed_credits)
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def credits(self) -> int:
        """The whole credits charged for this usage: :attr:`total` rounded up (the money rule)."""
        return round_up_credits(self.total)
