"""The pricing engine: a validated configuration of formulas turned into credit costs.

Same API as ducto 1.0's ``PricingEngine`` (``from_dict``, ``calculate``, ``calculate_batch``,
``pricing_schema``, ``min_balance``, ``has_model``, ``resolve_model``, ``get_fixed_cost``), with
these deliberate differences:

* every formula (models, tools, search, cache, plan rate overrides) is checked when the engine is
  built, including the variable names it uses; a bad one raises :class:`ConfigError` naming it;
* a tool's formula sees ``tool_calls`` = the number of calls to THAT tool (ducto 1.0 passed the
  count of all tool calls to every listed tool), and ``_default`` is applied once per unlisted tool
  name with that tool's count;
* ``total`` is ducto's exact cost; what is charged is ``credits``, the total rounded up to whole
  credits (:func:`~ducto_redis.pricing.metrics.round_up_credits`); model, tool and search parts
  are clamped at 0 (a formula can never pay credits back, per tool too); only the cache part, a
  discount, may be negative;
* the ``search`` section may only hold ``costs`` and ``cache`` only ``discount`` — the only keys
  ducto 1.0 ever evaluated — instead of silently ignoring other keys;
* an unknown ``fixed_job`` raises :class:`UnknownFixedJobError` (ducto 1.0 charged 0 for it);
* ``calculate(..., plan=...)`` applies a plan's ``rate_overrides`` (an extension; without ``plan``
  the result is ducto's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ducto_redis import config as pricing_config  # a module: config imports this package's expr
from ducto_redis.errors import ConfigError, ExpressionError
from ducto_redis.models import PlanDefinition, PricingConfigData
from ducto_redis.pricing.expr import evaluate_expression
from ducto_redis.pricing.metrics import CostBreakdown, UsageMetrics

DEFAULT_KEY = "_default"
"""Key of the fallback formula in ``models``, ``tools`` and a plan's ``rate_overrides``."""
DEFAULT_TOOL_FORMULA = "tool_calls * 0"


class UnknownModelError(ConfigError, ValueError):
    """No formula prices this model: it is not in the config and there is no ``_default``."""


class UnknownFixedJobError(ConfigError, ValueError):
    """``UsageMetrics.fixed_job`` names a job that is not in the config's ``fixed`` prices."""


class UnknownPlanError(ConfigError, ValueError):
    """``calculate(plan=...)`` names a plan that is not in the config's ``plans``."""


def _evaluate(where: str, formula: str, variables: Mapping[str, int | float]) -> float:
    try:
        return evaluate_expression(formula, variables)
    except ExpressionError as e:
        raise ExpressionError(f"{where}: {e}") from e


class PricingEngine:
    """Credit calculation engine over a validated :class:`PricingConfigData`.

    Usage::

        engine = PricingEngine.from_dict({
            "models": {"_default": "input_tokens * 0.001 + output_tokens * 0.003"},
        })
        engine.calculate(UsageMetrics(model="gpt-4", input_tokens=1000, output_tokens=2000)).credits  # 7

    Model lookup (:meth:`calculate`): the model's exact key, else ``_default``; a model of None or
    ``"none"`` uses ``_default``; with neither, :class:`UnknownModelError` (a :class:`ConfigError`
    and, as ducto 1.0 raised, a ``ValueError``). No prefix matching here — see :meth:`resolve_model`.

    Raises:
        ConfigError: from the constructor, when the configuration or any formula is invalid.
    """

    def __init__(self, config: PricingConfigData) -> None:
        if not isinstance(config, PricingConfigData):
            raise ConfigError(f"config must be a PricingConfigData, not {type(config).__name__}")
        pricing_config.check_config(config)
        self._config = config.model_copy(deep=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PricingEngine:
        """Build an engine from a configuration dict (as stored or published).

        Raises:
            ConfigError: The structure is invalid (message lists each field and problem) or a
                formula is refused.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"pricing config must be a dict, not {type(data).__name__}")
        try:
            config = pricing_config.PricingConfig.model_validate(dict(data))
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in e.errors()
            )
            raise ConfigError(f"invalid pricing config: {problems}") from e
        return cls(config)

    # ── Calculation ───────────────────────────────────────────────────

    def calculate(self, metrics: UsageMetrics, *, plan: str | PlanDefinition | None = None) -> CostBreakdown:
        """Price one usage event.

        Args:
            metrics: The usage counters.
            plan: Optional plan (key or id in the config's ``plans``, or a :class:`PlanDefinition`)
                whose ``rate_overrides`` price the model first: the plan's exact model key, then
                the plan's ``_default``, then the config's model lookup.

        Returns:
            The breakdown: the exact ``total``, and ``credits`` (whole credits, rounded up) to charge.

        Raises:
            UnknownModelError: No formula prices ``metrics.model``.
            UnknownFixedJobError: ``metrics.fixed_job`` is not a configured fixed job.
            UnknownPlanError: ``plan`` names no configured plan.
            ConfigError: A :class:`PlanDefinition` passed as ``plan`` has an invalid formula.
            ExpressionError: A formula failed for these numbers (e.g. division by zero).
        """
        plan_def = self._resolve_plan(plan)
        variables: dict[str, int | float] = dict(metrics.variables())

        model_key, source, formula = self._model_formula(metrics.model, plan_def)
        model_raw = _evaluate(f"{source}[{model_key!r}]", formula, variables)

        tools: dict[str, dict[str, Any]] = {}
        tools_raw = tool_credits = 0.0
        for name, count in metrics.tool_counts().items():
            key = name if name in self._config.tools else DEFAULT_KEY
            tool_formula = self._config.tools.get(key, DEFAULT_TOOL_FORMULA)
            raw = _evaluate(
                f"tools[{key!r}] for tool {name!r}", tool_formula, {**variables, "tool_calls": count}
            )
            tools[name] = {"calls": count, "formula": key, "credits": max(0.0, raw), "exact": raw}
            tools_raw += raw
            tool_credits += max(0.0, raw)

        search_raw = cache_raw = 0.0
        if "costs" in self._config.search:
            search_raw = _evaluate("search['costs']", self._config.search["costs"], variables)
        if "discount" in self._config.cache:
            cache_raw = _evaluate("cache['discount']", self._config.cache["discount"], variables)
        fixed = float(self._fixed_price(metrics.fixed_job))

        result = CostBreakdown(
            model_credits=max(0.0, model_raw),
            tool_credits=tool_credits,
            search_credits=max(0.0, search_raw),
            cache_savings=cache_raw,
            fixed_credits=fixed,
        )
        result.breakdown = {
            "model": metrics.model,
            "input_tokens": metrics.input_tokens,
            "output_tokens": metrics.output_tokens,
            "tool_count": len(metrics.tool_calls),
            "model_key": model_key,
            "rate_source": source,
            "plan": plan_def.id if plan_def is not None else None,
            "fixed_job": metrics.fixed_job,
            "tools": tools,
            "exact": {
                "model": model_raw,
                "tools": tools_raw,
                "search": search_raw,
                "cache": cache_raw,
                "fixed": fixed,
                "total": result.total,
            },
        }
        return result

    def calculate_batch(
        self, metrics_list: list[UsageMetrics], *, plan: str | PlanDefinition | None = None
    ) -> list[CostBreakdown]:
        """Price several usage events; one :class:`CostBreakdown` per input, in order."""
        return [self.calculate(m, plan=plan) for m in metrics_list]

    # ── Introspection (ducto 1.0's public surface) ────────────────────

    def pricing_schema(self) -> PricingConfigData:
        """A copy of the pricing configuration this engine uses."""
        return self._config.model_copy(deep=True)

    @property
    def min_balance(self) -> int:
        """Minimum balance users must keep (the last N credits cannot be spent)."""
        return self._config.min_balance

    def has_model(self, model_name: str) -> bool:
        """Whether ``model_name`` is a key of ``models`` (exact match; ``_default`` not implied)."""
        return model_name in self._config.models

    def resolve_model(self, model_version: str) -> str | None:
        """The ``models`` key that prices a model version string, as ducto 1.0 resolved it.

        Exact match, else the first key (in config order, not ``_default``) that is a prefix of
        ``model_version`` (``"claude-sonnet-4-20250514"`` → ``"claude-sonnet-4"``), else
        ``_default`` if configured, else None. :meth:`calculate` itself uses exact match only.
        """
        models = self._config.models
        if model_version in models:
            return model_version
        for key in models:
            if key != DEFAULT_KEY and model_version.startswith(key):
                return key
        return DEFAULT_KEY if DEFAULT_KEY in models else None

    def get_fixed_cost(self, job_name: str) -> int | None:
        """The fixed credit price of a named job, or None when it is not configured."""
        price = self._config.fixed.get(job_name)
        return int(price) if price is not None else None

    def get_plan(self, plan_id: str) -> PlanDefinition | None:
        """The configured plan with this key (or, failing that, this ``id``), or None."""
        plans = self._config.plans or {}
        if plan_id in plans:
            return plans[plan_id]
        return next((p for p in plans.values() if p.id == plan_id), None)

    # ── Internals ─────────────────────────────────────────────────────

    def _resolve_plan(self, plan: str | PlanDefinition | None) -> PlanDefinition | None:
        if plan is None:
            return None
        if isinstance(plan, PlanDefinition):
            pricing_config.check_plan(plan.id, plan)
            return plan
        found = self.get_plan(plan)
        if found is None:
            known = ", ".join(sorted(self._config.plans or {})) or "none configured"
            raise UnknownPlanError(f"unknown plan {plan!r} (plans: {known})")
        return found

    def _model_formula(self, model: str | None, plan: PlanDefinition | None) -> tuple[str, str, str]:
        """(key, source, formula) pricing ``model``; source is ``models`` or ``plans[...]``."""
        key = DEFAULT_KEY if model is None or model == "none" else model
        tables: list[tuple[str, Mapping[str, str]]] = []
        if plan is not None and plan.rate_overrides:
            tables.append((f"plans[{plan.id!r}].rate_overrides", plan.rate_overrides))
        tables.append(("models", self._config.models))
        for source, table in tables:
            for candidate in (key, DEFAULT_KEY):
                if candidate in table:
                    return candidate, source, table[candidate]
        raise UnknownModelError(f"no model match for {model!r} and no _default in config")

    def _fixed_price(self, job: str | None) -> int:
        if not job:
            return 0
        price = self._config.fixed.get(job)
        if price is None:
            known = ", ".join(sorted(self._config.fixed)) or "none configured"
            raise UnknownFixedJobError(f"unknown fixed job {job!r} (fixed jobs: {known})")
        return price
