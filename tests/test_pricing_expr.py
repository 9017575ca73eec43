"""The safe formula evaluator: what it computes, and everything it refuses (with ExpressionError)."""

from __future__ import annotations

import ast
import uuid
from typing import Any

import pytest

from ducto_redis.errors import ExpressionError
from ducto_redis.pricing.expr import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_MAGNITUDE,
    evaluate_expression,
    expression_names,
    validate_expression,
)

V = {"x": 5, "y": 2, "zero": 0}


def ev(expr: str, **extra: float) -> float:
    return evaluate_expression(expr, {**V, **extra})


# ── What is computed ──────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("x + y", 7),
        ("x - y", 3),
        ("x * y", 10),
        ("x / y", 2.5),
        ("x // y", 2),
        ("x % y", 1),
        ("-x + +y", -3),
        ("x * 0.001 + y * 0.003", 0.011),
        ("(x + y) * 2", 14),
    ],
)
def test_arithmetic_operators_compute_like_python(expr: str, expected: float) -> None:
    assert ev(expr) == pytest.approx(expected)


def test_result_is_a_float() -> None:
    result = ev("x + y")
    assert isinstance(result, float)
    assert result == 7.0


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("x > y", 1),
        ("x < y", 0),
        ("x >= 5", 1),
        ("x <= 4", 0),
        ("x == 5", 1),
        ("x != 5", 0),
        ("1 < y < x", 1),
        ("1 < x < y", 0),
    ],
)
def test_comparisons_give_one_or_zero(expr: str, expected: float) -> None:
    assert ev(expr) == expected


def test_and_or_not_follow_python_truthiness() -> None:
    assert ev("x > 1 and y > 1") == 1
    assert ev("x > 1 and y > 3") == 0
    assert ev("zero or y") == 2
    assert ev("not zero") == 1
    assert ev("not x") == 0


def test_and_or_short_circuit_so_the_unevaluated_side_cannot_fail() -> None:
    assert ev("zero and x / zero") == 0
    assert ev("x or x / zero") == 5


def test_ternary_picks_a_branch_and_skips_the_other() -> None:
    assert ev("x * 2 if x > 3 else y") == 10
    assert ev("x * 2 if x > 9 else y") == 2
    assert ev("1 if zero else x / y") == 2.5
    assert ev("x / zero if zero else 7") == 7


def test_ceil_rounds_up() -> None:
    assert ev("ceil(x / y)") == 3


def test_floor_rounds_down() -> None:
    assert ev("floor(x / y)") == 2


def test_round_rounds_half_to_even_and_takes_digits() -> None:
    assert ev("round(2.5)") == 2
    assert ev("round(3.5)") == 4
    assert ev("round(1.23456, 2)") == pytest.approx(1.23)
    assert ev("round(1234, -2)") == 1200


def test_min_and_max_take_any_number_of_arguments() -> None:
    assert ev("min(x, y, 3)") == 2
    assert ev("max(x, y, 3)") == 5
    assert ev("max(x)") == 5


def test_if_function_returns_then_or_else() -> None:
    assert ev("if(x > 3, 10, 20)") == 10
    assert ev("if(x > 9, 10, 20)") == 20


def test_if_function_is_lazy_so_guarded_division_by_zero_is_safe() -> None:
    assert ev("if(zero > 0, x / zero, 0)") == 0


def test_if_function_nests_and_mixes_with_the_ternary() -> None:
    assert ev("if(x > 3, if(y > 3, 1, 2), 3)") == 2
    assert ev("1 if (x > 3) else if(y, 7, 8)") == 1
    assert ev("x if(y) else 0") == 5  # `if(` after an operand is the ternary, not the function
    assert ev("if (zero, 1, 2) + 1") == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 1.0), (10, 0.5), (99, 0.5), (100, 0.25), (10_000, 0.25)],
)
def test_tier_returns_the_rate_of_the_first_threshold_above_the_value(value: int, expected: float) -> None:
    assert evaluate_expression("tier(v, 10, 1.0, 100, 0.5, 0.25)", {"v": value}) == expected


def test_tier_with_an_odd_argument_count_uses_the_last_rate_as_default_like_ducto() -> None:
    assert evaluate_expression("tier(v, 10, 1, 100, 2)", {"v": 5}) == 1
    assert evaluate_expression("tier(v, 10, 1, 100, 2)", {"v": 500}) == 2


def test_tiered_price_per_token_in_a_formula() -> None:
    assert evaluate_expression("t * tier(t, 1000, 0.01, 0.005)", {"t": 2000}) == pytest.approx(10)


def test_clamp_bounds_a_value_between_lo_and_hi() -> None:
    assert ev("clamp(x, 0, 3)") == 3
    assert ev("clamp(x, 6, 9)") == 6
    assert ev("clamp(x, 0, 9)") == 5


def test_percentile_interpolates_linearly_between_sorted_values() -> None:
    assert ev("percentile(50, 4, 1, 3, 2)") == 2.5
    assert ev("percentile(0, 4, 1, 3, 2)") == 1
    assert ev("percentile(100, 4, 1, 3, 2)") == 4
    assert ev("percentile(25, 10, 20, 30)") == 15
    assert ev("percentile(90, x)") == 5


def test_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ExpressionError, match=r"0\.\.100"):
        ev("percentile(101, 1, 2)")


def test_newlines_and_tabs_are_whitespace() -> None:
    assert ev("x\n\t+ y") == 7


def test_a_formula_without_variables_is_allowed() -> None:
    assert evaluate_expression("3", {}) == 3


def test_bool_variables_count_as_one_and_zero() -> None:
    assert evaluate_expression("f * 10", {"f": True}) == 10


def test_expression_names_lists_the_variables_used() -> None:
    assert expression_names("ceil(x / y) + if(zero, x, 1)") == {"x", "y", "zero"}


def test_validate_expression_with_allowed_names_refuses_others() -> None:
    validate_expression("x + y", {"x", "y"})
    with pytest.raises(ExpressionError, match=r"unknown name.*z"):
        validate_expression("x + z", {"x", "y"})


def test_validate_expression_without_allowed_names_checks_only_safety() -> None:
    validate_expression("anything_goes * 2")
    with pytest.raises(ExpressionError):
        validate_expression("2 ** 2")


def parsed_trees(monkeypatch: pytest.MonkeyPatch) -> list[ast.AST]:
    """Every syntax tree the evaluator parses from now on (a formula is parsed before it is compiled)."""
    trees: list[ast.AST] = []
    real_parse = ast.parse

    def parse(*args: Any, **kwargs: Any) -> ast.AST:
        tree: ast.AST = real_parse(*args, **kwargs)
        trees.append(tree)
        return tree

    monkeypatch.setattr(ast, "parse", parse)  # the evaluator calls ast.parse
    return trees


def test_repeated_evaluation_is_fast_because_formulas_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # a formula this process has not seen yet, so its first evaluation is the one that compiles it
    unseen = uuid.uuid4().int % 2**53
    formula = f"input_tokens * 0.001 + output_tokens * 0.003 + ceil(input_tokens / 1000) + 0 * {unseen}"
    trees = parsed_trees(monkeypatch)
    for i in range(5000):
        assert evaluate_expression(formula, {"input_tokens": i, "output_tokens": 2 * i}) == pytest.approx(
            i * 0.001 + 2 * i * 0.003 + -(-i // 1000))
    assert len(trees) == 1  # 5 000 evaluations, one parse and compile: the rest run the compiled closures


# ── Refusals ──────────────────────────────────────────────────────────


def refused(expr: str, match: str, variables: dict[str, float] | None = None) -> None:
    with pytest.raises(ExpressionError, match=match):
        evaluate_expression(expr, V if variables is None else variables)


def test_attribute_access_is_refused() -> None:
    refused("().__class__", "attribute access")
    refused("x.real", "attribute access")


def test_dunder_import_call_is_refused_as_unknown_function() -> None:
    refused("__import__('os')", "unknown function '__import__'")


def test_power_operator_is_refused_before_anything_is_computed() -> None:
    refused("2**1000", r"\*\* operator")
    refused("x ** 2", r"\*\* operator")


def test_nested_power_is_refused_without_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before anything is computed: the parser folds no constant (the tree it hands over still
    holds both ``**``), and the refusal comes from checking that tree, before any evaluation starts."""
    trees = parsed_trees(monkeypatch)
    refused("9**9**9", r"\*\* operator")
    with pytest.raises(ExpressionError, match=r"\*\* operator"):
        validate_expression("9**9**9")  # checks the formula without evaluating it
    assert len(trees) == 2
    for tree in trees:
        powers = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)]
        assert len(powers) == 2 and not any(isinstance(n, ast.Constant) and n.value != 9 for n in ast.walk(tree))


def test_unknown_variable_is_refused() -> None:
    refused("x + nope", "undefined variable: 'nope'")


def test_unknown_variable_is_refused_even_in_a_branch_not_taken() -> None:
    refused("if(1, x, nope)", "undefined variable: 'nope'")


def test_unknown_function_is_refused() -> None:
    refused("sqrt(x)", "unknown function 'sqrt'")
    refused("eval(x)", "unknown function 'eval'")


def test_calling_something_that_is_not_a_plain_function_name_is_refused() -> None:
    refused("min(x)(y)", "only the allowed functions")
    refused("(x + y)(1)", "only the allowed functions")


def test_lambda_is_refused() -> None:
    refused("(lambda: 1)()", "only the allowed functions|lambda")
    refused("lambda: 1", "disallowed node type: Lambda: lambda is not allowed")


def test_string_literal_is_refused() -> None:
    refused("'abc'", "string literals")
    refused("f'{x}'", "string literals")


def test_non_numeric_literals_are_refused() -> None:
    refused("None", "only numeric literals")
    refused("True", "only numeric literals")
    refused("1j", "only numeric literals")


def test_subscript_is_refused() -> None:
    refused("x[0]", "subscripts")


def test_containers_and_comprehensions_are_refused() -> None:
    refused("[x]", "disallowed node type: List")
    refused("max(v for v in (1, 2))", "comprehensions")


def test_walrus_is_refused() -> None:
    refused("(z := 1)", "assignment expressions")


def test_keyword_and_starred_arguments_are_refused() -> None:
    refused("min(x, key=y)", "keyword arguments")
    refused("min(*x)", "starred")


def test_bitwise_operators_and_in_are_refused() -> None:
    refused("1 << 60", "LShift is not allowed")
    refused("x & y", "BitAnd is not allowed")
    refused("x in y", "'in' and 'not in' are not allowed")
    refused("x not in y", "'in' and 'not in' are not allowed")


def test_wrong_argument_counts_are_refused() -> None:
    refused("ceil(x, y)", r"ceil\(\) takes 1 argument")
    refused("if(x, y)", r"if\(\) takes 3 argument")
    refused("clamp(x, y)", r"clamp\(\) takes 3 argument")
    refused("tier(x, y)", r"tier\(\) takes at least 3")
    refused("percentile(x)", r"percentile\(\) takes at least 2")
    refused("max()", r"max\(\) takes at least 1")
    refused("round(x, 1, 2)", r"round\(\) takes 1 to 2")


def test_round_with_huge_digits_is_refused() -> None:
    refused("round(x, -1000000)", "digits")
    refused("round(x, 0.5)", "digits")


def test_too_long_formula_is_refused() -> None:
    long_formula = "x + " * (MAX_EXPRESSION_LENGTH // 4) + "x"
    refused(long_formula, "characters long")


def test_too_many_nodes_is_refused() -> None:
    refused("-" * 600 + "x", "syntax nodes")


def test_too_deep_nesting_is_refused() -> None:
    refused("+".join(["x"] * (MAX_DEPTH + 5)), "nests deeper")


def test_division_by_zero_is_refused() -> None:
    refused("x / zero", "division by zero")
    refused("x // 0", "division by zero")
    refused("x % zero", "modulo by zero")
    refused("x / 0.0", "division by zero")


def test_huge_constants_are_refused() -> None:
    refused("1e400", "not a finite number")
    refused(str(MAX_MAGNITUDE + 1), "exceeds the allowed magnitude")


def test_results_over_2_pow_53_are_refused() -> None:
    refused("x * 99999999999 * 99999999", "exceeds the allowed magnitude")
    refused("x", "exceeds the allowed magnitude", {"x": 2.0**60})


def test_non_finite_or_non_numeric_variables_are_refused() -> None:
    refused("x + 1", "not a finite number", {"x": float("nan")})
    refused("x + 1", "not a finite number", {"x": float("inf")})
    refused("x + 1", "not a number", {"x": "5"})  # type: ignore[dict-item]


def test_syntax_errors_are_refused() -> None:
    refused("x +", "syntax error")
    refused("(x", "syntax error")
    refused("x = 1", "syntax error")
    refused("import os", "syntax error")


def test_empty_and_non_ascii_formulas_are_refused() -> None:
    refused("   ", "empty")
    refused("ｘ + 1", "non-ASCII")


def test_non_string_formula_is_refused() -> None:
    with pytest.raises(ExpressionError, match="must be a string"):
        evaluate_expression(5, V)  # type: ignore[arg-type]
