"""The pricing engine: every dimension with worked numbers, the money rule, and config validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ducto_redis.errors import ConfigError, ExpressionError
from ducto_redis.models import PlanDefinition, PricingConfigData
from ducto_redis.pricing import (
    CostBreakdown,
    PricingEngine,
    ToolCall,
    UnknownFixedJobError,
    UnknownModelError,
    UnknownPlanError,
    UsageMetrics,
    round_up_credits,
)

CONFIG: dict[str, Any] = {
    "version": 1,
    "models": {
        "gpt-4": "input_tokens * 0.01 + output_tokens * 0.03",
        "_default": "input_tokens * 0.001 + output_tokens * 0.003",
    },
    "tools": {"web": "ceil(tool_calls / 2) * 3", "_default": "tool_calls * 0.5"},
    "search": {"costs": "search_queries * 0.5 + search_results * 0.05 + web_search_calls"},
    "cache": {"discount": "-cache_read_tokens * 0.0045"},
    "fixed": {"report": 20},
    "min_balance": 7,
    "plans": {
        "free": {
            "id": "free",
            "name": "Free",
            "rate_overrides": {"_default": "input_tokens * 0.02 + output_tokens * 0.06"},
        },
        "pro": {"id": "pro-2024", "name": "Pro", "rate_overrides": {"gpt-4": "input_tokens * 0.005"}},
    },
}


def engine(**changes: Any) -> PricingEngine:
    return PricingEngine.from_dict({**CONFIG, **changes})


def tools(*names: str) -> list[ToolCall]:
    return [ToolCall(name=n) for n in names]


# ── Model formulas ────────────────────────────────────────────────────


def test_model_formula_prices_input_and_output_tokens() -> None:
    r = engine().calculate(UsageMetrics(model="gpt-4", input_tokens=1000, output_tokens=200))
    assert r.model_credits == pytest.approx(16.0)  # 1000*0.01 + 200*0.03
    assert r.total == 16
    assert r.breakdown["model_key"] == "gpt-4"


def test_unknown_model_uses_the_default_formula() -> None:
    r = engine().calculate(UsageMetrics(model="mystery", input_tokens=1000, output_tokens=2000))
    assert r.model_credits == pytest.approx(7.0)  # 1000*0.001 + 2000*0.003
    assert r.breakdown["model_key"] == "_default"


def test_model_none_or_the_string_none_uses_the_default_formula() -> None:
    e = engine()
    assert e.calculate(UsageMetrics(input_tokens=1000)).model_credits == pytest.approx(1.0)
    assert e.calculate(UsageMetrics(model="none", input_tokens=1000)).model_credits == pytest.approx(1.0)


def test_unknown_model_without_default_raises_config_error_that_is_also_a_value_error() -> None:
    e = PricingEngine.from_dict({"models": {"gpt-4": "input_tokens"}})
    with pytest.raises(UnknownModelError, match="mystery") as info:
        e.calculate(UsageMetrics(model="mystery"))
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, ValueError)


def test_model_formula_sees_cache_tokens_and_all_tool_calls() -> None:
    e = PricingEngine.from_dict({"models": {"_default": "cache_write_tokens * 0.01 + tool_calls * 100"}})
    r = e.calculate(UsageMetrics(cache_write_tokens=300, tool_calls=tools("a", "b", "a")))
    assert r.model_credits == pytest.approx(303.0)


# ── Tools: per-tool counts (ducto 1.0 passed the global count) ────────


def test_each_tool_formula_sees_only_its_own_call_count() -> None:
    # 3 "web" calls + 4 others: web sees tool_calls=3 -> ceil(3/2)*3 = 6 (ducto 1.0 used 7 -> 12)
    r = engine().calculate(
        UsageMetrics(model="gpt-4", tool_calls=tools("web", "web", "x", "web", "x", "y", "z"))
    )
    assert r.breakdown["tools"]["web"] == {"calls": 3, "formula": "web", "credits": 6, "exact": 6}
    assert r.tool_credits == pytest.approx(6 + 2 * 0.5 + 0.5 + 0.5)
    assert r.total == 8


def test_default_tool_formula_is_applied_per_unlisted_tool_with_that_tools_count() -> None:
    e = engine(tools={"_default": "ceil(tool_calls / 2)"})
    r = e.calculate(UsageMetrics(model="gpt-4", tool_calls=tools("a", "b", "a", "c")))
    # a: ceil(2/2)=1, b: ceil(1/2)=1, c: ceil(1/2)=1 -> 3 (one _default over all 4 calls would be 2)
    assert r.tool_credits == 3
    assert {n: t["calls"] for n, t in r.breakdown["tools"].items()} == {"a": 2, "b": 1, "c": 1}


def test_tools_are_free_when_no_tool_formula_is_configured() -> None:
    e = PricingEngine.from_dict({"models": {"_default": "input_tokens * 0"}})
    assert e.calculate(UsageMetrics(tool_calls=tools("a", "b"))).tool_credits == 0


def test_tool_calls_accept_plain_names() -> None:
    r = engine().calculate(UsageMetrics(model="gpt-4", tool_calls=["web", "web"]))
    assert r.tool_credits == 3


# ── Search, cache, fixed jobs ─────────────────────────────────────────


def test_search_costs_formula_prices_queries_results_and_web_search_calls() -> None:
    m = UsageMetrics(model="gpt-4", search_queries=4, search_results=30, web_search_calls=2)
    r = engine().calculate(m)
    assert r.search_credits == pytest.approx(5.5)  # 4*0.5 + 30*0.05 + 2
    assert (r.total, r.credits) == pytest.approx((5.5, 6))


def test_cache_discount_is_a_negative_part_that_lowers_the_total() -> None:
    m = UsageMetrics(model="gpt-4", input_tokens=1000, cache_read_tokens=1000)
    r = engine().calculate(m)
    assert r.model_credits == pytest.approx(10.0)
    assert r.cache_savings == pytest.approx(-4.5)
    assert (r.total, r.credits) == pytest.approx((5.5, 6))  # 10 - 4.5 = 5.5, charged rounded up


def test_cache_savings_cannot_make_the_total_negative() -> None:
    r = engine().calculate(UsageMetrics(model="gpt-4", input_tokens=100, cache_read_tokens=100_000))
    assert r.cache_savings == pytest.approx(-450.0)
    assert r.total == 0


def test_fixed_job_adds_its_fixed_price() -> None:
    r = engine().calculate(UsageMetrics(model="gpt-4", input_tokens=100, fixed_job="report"))
    assert r.fixed_credits == 20.0
    assert r.total == 21  # 100*0.01 + 20


def test_unknown_fixed_job_raises_instead_of_being_free() -> None:
    with pytest.raises(UnknownFixedJobError, match="nightly"):
        engine().calculate(UsageMetrics(model="gpt-4", fixed_job="nightly"))


def test_get_fixed_cost_returns_the_price_or_none() -> None:
    assert engine().get_fixed_cost("report") == 20
    assert engine().get_fixed_cost("nightly") is None


def test_all_dimensions_add_up_in_one_breakdown() -> None:
    m = UsageMetrics(
        model="gpt-4",
        input_tokens=1000,
        output_tokens=200,
        tool_calls=tools("web", "web", "x"),
        search_queries=2,
        search_results=10,
        cache_read_tokens=1000,
        fixed_job="report",
    )
    r = engine().calculate(m)
    # 16 model + (3 + 0.5) tools + 1.5 search - 4.5 cache + 20 fixed = 36.5 -> 37
    assert (r.model_credits, r.tool_credits, r.search_credits) == pytest.approx((16, 3.5, 1.5))
    assert (r.cache_savings, r.fixed_credits) == pytest.approx((-4.5, 20))
    assert r.breakdown["exact"]["total"] == pytest.approx(36.5)
    assert (r.total, r.credits) == pytest.approx((36.5, 37))
    assert r.breakdown["tool_count"] == 3


# ── Money rule: whole credits, rounded up; negative parts clamped ─────


def test_a_fraction_of_a_credit_costs_one_credit() -> None:
    e = PricingEngine.from_dict({"models": {"_default": "input_tokens * 0.001"}})
    r = e.calculate(UsageMetrics(input_tokens=400))
    assert r.model_credits == pytest.approx(0.4)  # the part keeps the exact value
    assert r.total == pytest.approx(0.4)  # ducto's exact total
    assert r.credits == 1  # what is charged: ducto 1.0's int() made it 0


def test_zero_usage_costs_zero() -> None:
    assert engine().calculate(UsageMetrics(model="gpt-4")).total == 0


def test_float_noise_does_not_cost_an_extra_credit() -> None:
    e = PricingEngine.from_dict({"models": {"_default": "input_tokens * 0.1 * 3 * 10"}})
    r = e.calculate(UsageMetrics(input_tokens=1))
    assert r.model_credits != 3  # 3.0000000000000004 in binary floats
    assert r.credits == 3


def test_negative_model_tool_and_search_parts_are_clamped_at_zero() -> None:
    e = PricingEngine.from_dict(
        {
            "models": {"_default": "input_tokens * 0.01 - 100"},
            "tools": {"refund": "tool_calls * -5", "_default": "tool_calls * 1"},
            "search": {"costs": "-search_queries"},
        }
    )
    r = e.calculate(UsageMetrics(input_tokens=100, tool_calls=tools("refund", "x", "x"), search_queries=3))
    assert (r.model_credits, r.search_credits) == (0, 0)
    assert r.tool_credits == 2  # the negative tool is clamped alone; it cannot cancel "x"
    assert r.breakdown["exact"]["model"] == pytest.approx(-99.0)
    assert r.breakdown["exact"]["tools"] == pytest.approx(-3.0)
    assert r.breakdown["tools"]["refund"]["exact"] == -5
    assert r.total == 2


@pytest.mark.parametrize(
    ("exact", "credits"),
    [(0.0, 0), (-3.2, 0), (0.4, 1), (1.0, 1), (1.000000001, 2), (1.0000000001, 1), (2.5, 3)],
)
def test_round_up_credits_rounds_up_after_absorbing_float_noise(exact: float, credits: int) -> None:
    assert round_up_credits(exact) == credits


def test_round_up_credits_refuses_nan() -> None:
    with pytest.raises(ValueError):
        round_up_credits(float("nan"))


def test_cost_breakdown_recomputes_the_exact_total_from_its_parts_and_charges_it_rounded_up() -> None:
    b = CostBreakdown(model_credits=1.2, tool_credits=0.5, cache_savings=-0.3, total=99)
    assert b.total == pytest.approx(1.4)  # ducto's exact total, whatever was passed
    assert b.credits == 2 and isinstance(b.credits, int)
    assert b.model_dump()["credits"] == 2  # serialized beside the total


def test_the_breakdown_total_is_ductos_exact_cost_and_credits_are_what_is_charged() -> None:
    e = PricingEngine.from_dict({"models": {"_default": "input_tokens * 0.01 + output_tokens * 0.03"}})
    r = e.calculate(UsageMetrics(input_tokens=100, output_tokens=50))  # 1 + 1.5
    assert (r.total, r.credits) == (2.5, 3)
    assert CostBreakdown(model_credits=-2).total == 0.0  # clamped at 0, as ducto


# ── Plans ─────────────────────────────────────────────────────────────


def test_plan_default_override_replaces_the_model_price() -> None:
    m = UsageMetrics(model="gpt-4", input_tokens=1000, output_tokens=100)
    r = engine().calculate(m, plan="free")
    assert r.model_credits == pytest.approx(26.0)  # 1000*0.02 + 100*0.06
    assert r.breakdown["rate_source"] == "plans['free'].rate_overrides"
    assert r.breakdown["plan"] == "free"


def test_plan_override_for_one_model_leaves_other_models_on_the_config() -> None:
    e = engine()
    assert e.calculate(UsageMetrics(model="gpt-4", input_tokens=1000), plan="pro").model_credits == 5
    assert e.calculate(UsageMetrics(model="other", input_tokens=1000), plan="pro").model_credits == 1


def test_plan_can_be_named_by_id_or_passed_as_a_definition() -> None:
    e = engine()
    assert e.calculate(UsageMetrics(model="gpt-4", input_tokens=1000), plan="pro-2024").model_credits == 5
    custom = PlanDefinition(id="c", name="C", rate_overrides={"_default": "input_tokens * 0.1"})
    assert e.calculate(UsageMetrics(model="gpt-4", input_tokens=1000), plan=custom).model_credits == 100


def test_unknown_plan_raises() -> None:
    with pytest.raises(UnknownPlanError, match="gold"):
        engine().calculate(UsageMetrics(model="gpt-4"), plan="gold")


def test_plan_definition_with_a_bad_formula_raises_config_error() -> None:
    bad = PlanDefinition(id="b", name="B", rate_overrides={"_default": "input_tokens ** 2"})
    with pytest.raises(ConfigError, match=r"\*\*"):
        engine().calculate(UsageMetrics(model="gpt-4"), plan=bad)


def test_calculate_batch_prices_each_event_in_order() -> None:
    ms = [UsageMetrics(model="gpt-4", input_tokens=n) for n in (100, 1000, 40)]
    assert [r.credits for r in engine().calculate_batch(ms)] == [1, 10, 1]
    assert [r.credits for r in engine().calculate_batch(ms, plan="free")] == [2, 20, 1]


# ── Introspection ─────────────────────────────────────────────────────


def test_min_balance_has_model_and_resolve_model() -> None:
    e = engine()
    assert e.min_balance == 7
    assert e.has_model("gpt-4") and not e.has_model("gpt-4-turbo")
    assert e.resolve_model("gpt-4-turbo") == "gpt-4"
    assert e.resolve_model("claude") == "_default"
    assert PricingEngine.from_dict({"models": {"a": "input_tokens"}}).resolve_model("b") is None


def test_pricing_schema_is_a_copy_of_the_config() -> None:
    e = engine()
    schema = e.pricing_schema()
    assert isinstance(schema, PricingConfigData)
    schema.models["gpt-4"] = "input_tokens * 1000"
    assert e.calculate(UsageMetrics(model="gpt-4", input_tokens=100)).total == 1


def test_engine_built_from_config_data_is_not_affected_by_later_changes() -> None:
    data = PricingConfigData.model_validate(CONFIG)
    e = PricingEngine(data)
    data.models["gpt-4"] = "input_tokens * 1000"
    assert e.calculate(UsageMetrics(model="gpt-4", input_tokens=100)).total == 1


# ── Configuration validation ──────────────────────────────────────────


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "missing required section: models"),
        ({"models": {}}, "at least one formula"),
        ({"models": {"a": 5}}, "models.a"),
        ({"models": {"a": "input_tokens ** 2"}}, r"models\['a'\].*\*\* operator"),
        ({"models": {"a": "input_tokenz"}}, r"models\['a'\].*unknown name.*input_tokenz"),
        ({"models": {"a": "1"}, "tools": {"t": "().__class__"}}, r"tools\['t'\].*attribute"),
        ({"models": {"a": "1"}, "search": {"costs": "os.system(1)"}}, r"search\['costs'\]"),
        ({"models": {"a": "1"}, "search": {"per_query": "search_queries"}}, "accepts only"),
        ({"models": {"a": "1"}, "cache": {"discount": "'x'"}}, r"cache\['discount'\].*string"),
        ({"models": {"a": "1"}, "cache": {"bonus": "1"}}, "accepts only"),
        ({"models": {"a": "1"}, "fixed": {"j": -1}}, r"fixed\.j: .*greater than or equal to 0"),
        ({"models": {"a": "1"}, "min_balance": -1}, "min_balance"),
        ({"models": {"a": "1"}, "version": 3}, "version"),
        (
            {"models": {"a": "1"}, "plans": {"p": {"id": "p", "name": "P", "rate_overrides": {"a": "x[0]"}}}},
            r"plans\['p'\].rate_overrides\['a'\].*subscripts",
        ),
    ],
)
def test_invalid_config_raises_config_error_naming_the_problem(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PricingEngine.from_dict(config)


def test_from_dict_refuses_a_non_dict() -> None:
    with pytest.raises(ConfigError, match="must be a dict"):
        PricingEngine.from_dict([])  # type: ignore[arg-type]


def test_constructor_refuses_a_non_config() -> None:
    with pytest.raises(ConfigError, match="PricingConfigData"):
        PricingEngine({"models": {"a": "1"}})  # type: ignore[arg-type]


def test_constructor_validates_formulas_too() -> None:
    with pytest.raises(ConfigError, match="lambda"):
        PricingEngine(PricingConfigData(models={"a": "lambda: 1"}))


def test_formula_failing_at_runtime_raises_expression_error_naming_the_formula() -> None:
    e = PricingEngine.from_dict({"models": {"_default": "input_tokens / output_tokens"}})
    with pytest.raises(ExpressionError, match=r"models\['_default'\]: division by zero"):
        e.calculate(UsageMetrics(input_tokens=5))


def test_usage_metrics_refuse_negative_counts() -> None:
    with pytest.raises(ValidationError):
        UsageMetrics(model="gpt-4", input_tokens=-1)
