"""Pricing configuration: ducto 1.0's ``ducto.config`` (``PricingConfig``, ``load_config_from_dict``,
``ConfigError``), plus reading a pricing file, and THE rule every pricing config is checked by.

:func:`check_config` is the one place a configuration's formulas and sections are judged: the
:class:`PricingConfig` model runs it, :class:`~ducto_redis.pricing.PricingEngine` runs it when built,
and the store runs it (through the engine) before publishing a version. Messages are ducto's
(``missing required section: models``, ``invalid expression in models['gpt-4']: disallowed node
type: Lambda ...``), with ducto-redis's stricter checks added (every variable must be a usage
counter, ``search`` holds only ``costs`` and ``cache`` only ``discount``, prices within 0..2**53-1,
no NUL or lone surrogate in any text).

As in ducto 1.0, :func:`load_config_from_dict` raises :class:`ConfigError` for the structure and the
formulas, and pydantic's ``ValidationError`` for a field of the wrong type (a negative fixed price);
``PricingEngine.from_dict`` turns both into :class:`ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from .errors import ConfigError, ExpressionError, InvalidInputError
from .models import PlanDefinition, PricingConfigData
from .pricing.expr import validate_expression
from .pricing.metrics import METRIC_VARIABLES
from .settings import DEFAULT_MIN_BALANCE
from .validation import MAX_AMOUNT, check_json

__all__ = [
    "ConfigError",
    "PricingConfig",
    "check_config",
    "load_config_from_dict",
    "load_pricing_file",
    "read_pricing_file",
]

SEARCH_KEYS = frozenset({"costs"})
CACHE_KEYS = frozenset({"discount"})
Price = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]


def _check_formula(where: str, formula: Any) -> None:
    if not isinstance(formula, str):
        raise ConfigError(f"{where}: a formula must be a string, not {type(formula).__name__}")
    try:
        validate_expression(formula, METRIC_VARIABLES)
    except ExpressionError as e:
        raise ConfigError(f"invalid expression in {where}: {e}") from e


def check_plan(key: str, plan: PlanDefinition) -> None:
    """Check a plan's ``rate_overrides`` formulas (:class:`ConfigError` naming the one refused)."""
    for model, formula in (plan.rate_overrides or {}).items():
        _check_formula(f"plans[{key!r}].rate_overrides[{model!r}]", formula)


def check_config(config: PricingConfigData) -> None:
    """Judge a configuration: at least one model formula, every formula safe and over the usage
    counters only, known ``search``/``cache`` keys, prices and ``min_balance`` in range (0..2**53-1), plan
    names distinct, every text storable (no NUL, no lone surrogate). Raises :class:`ConfigError` naming
    the first problem."""
    if not config.models:
        raise ConfigError("models must be a non-empty dict (at least one formula: a model name or '_default')")
    for section, formulas in (("models", config.models), ("tools", config.tools)):
        for key, formula in formulas.items():
            _check_formula(f"{section}[{key!r}]", formula)
    for section, formulas, keys in (("search", config.search, SEARCH_KEYS), ("cache", config.cache, CACHE_KEYS)):
        for key, formula in formulas.items():
            if key not in keys:
                raise ConfigError(f"{section}[{key!r}]: unknown key; {section} accepts only {sorted(keys)}")
            _check_formula(f"{section}[{key!r}]", formula)
    for job, price in config.fixed.items():
        if not 0 <= price <= MAX_AMOUNT:
            raise ConfigError(f"fixed[{job!r}]: price must be within 0..2**53-1, got {price}")
    if not 0 <= config.min_balance <= MAX_AMOUNT:
        raise ConfigError(f"min_balance must be within 0..2**53-1, got {config.min_balance}")
    names = [plan.name for plan in (config.plans or {}).values()]
    if len(names) != len(set(names)):
        raise ConfigError("duplicate plan names in pricing config")
    for key, plan in (config.plans or {}).items():
        check_plan(key, plan)
    try:  # a published config is stored in the ledger as it is: its text must be storable
        check_json(config, "config", max_depth=16)
    except InvalidInputError as exc:
        raise ConfigError(str(exc)) from exc


class PricingConfig(PricingConfigData):
    """A pricing configuration whose structure and every formula were checked (ducto's ``PricingConfig``).

    The same fields as :class:`~ducto_redis.PricingConfigData` (it is one, so a store publishes it
    as is); building it runs :func:`check_config`. Fixed prices and ``min_balance`` must be
    non-negative (pydantic's ``ValidationError`` otherwise, as in ducto).
    """

    fixed: dict[str, Price] = Field(default_factory=dict)
    min_balance: int = Field(default=DEFAULT_MIN_BALANCE, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _structure(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        if "models" not in data:
            raise ConfigError("missing required section: models")
        if not isinstance(data["models"], Mapping) or not data["models"]:
            raise ConfigError("models must be a non-empty dict (at least one formula: a model name or '_default')")
        return data

    @model_validator(mode="after")
    def _formulas(self) -> PricingConfig:
        check_config(self)
        return self


def load_config_from_dict(data: Mapping[str, Any]) -> PricingConfig:
    """A validated :class:`PricingConfig` from a dict (as ducto's ``load_config_from_dict``).

    Raises:
        ConfigError: a section is missing or empty, or a formula is refused.
        pydantic.ValidationError: a field has the wrong type or range.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"pricing config must be a dict, not {type(data).__name__}")
    return PricingConfig.model_validate(dict(data))


def read_pricing_file(path: str | Path) -> dict[str, Any]:
    """The raw pricing config held by a JSON file, or a YAML file (``.yaml``/``.yml``, needs PyYAML).

    This is what ducto's CLI read (``ducto.__main__._load_pricing_file``); nothing is validated but
    that the file holds a mapping. Raises :class:`ConfigError` saying what is wrong with the file.
    """
    from .config_files import load_mapping

    return load_mapping(path, "pricing file", " (models, tools, ...)")


def load_pricing_file(path: str | Path) -> PricingConfig:
    """A validated :class:`PricingConfig` from a JSON or YAML file (:func:`read_pricing_file`, then
    :func:`load_config_from_dict`)."""
    return load_config_from_dict(read_pricing_file(path))
