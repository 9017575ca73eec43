"""Safe evaluator for pricing formulas, built on Python's ``ast`` with a strict allowlist.

A formula is parsed once, checked node by node, and compiled into plain Python closures (cached per
formula string), so nothing is ever passed to ``eval``/``compile``. Allowed:

* numbers, and names of the variables given at evaluation time;
* ``+ - * / // %``, unary ``-``/``+``, ``not``, comparisons (``== != < <= > >=``, chains too),
  ``and``/``or`` (short-circuit), ``a if cond else b``;
* calls to ``ceil floor min max round if tier clamp percentile`` only — ``if(cond, a, b)`` is lazy,
  so ``if(x > 0, y / x, 0)`` is safe when ``x`` is 0.

Refused, each with :class:`~ducto_redis.errors.ExpressionError` (syntax ducto 1.0 also refused says
``disallowed node type: <Node>``, as ducto's did; a missing variable ``undefined variable: 'x'``):
``**`` (ducto 1.0 let ``9**9**9`` hang the process), ``in``/``not in`` (ducto compared the decimal
text of numbers: ``20 in 2`` was true), attribute access, subscripts, strings and other non-numeric
literals, lambdas, comprehensions, unknown names or functions, keyword or starred arguments, formulas over
:data:`MAX_EXPRESSION_LENGTH` characters, :data:`MAX_NODES` syntax nodes or :data:`MAX_DEPTH` levels
of nesting, any value (constant, variable or intermediate result) that is not finite or whose
magnitude exceeds :data:`MAX_MAGNITUDE`, and division or modulo by zero (ducto 1.0 returned ``inf``,
which its own manager could not charge: ``int(inf)`` raised ``OverflowError``).
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TypeAlias

from ducto_redis.errors import ExpressionError

Number: TypeAlias = int | float
Variables: TypeAlias = Mapping[str, Number]
_Fn: TypeAlias = Callable[[Variables], Number]

MAX_EXPRESSION_LENGTH = 2000
"""Longest formula accepted, in characters."""
MAX_NODES = 500
"""Most syntax-tree nodes a formula may have."""
MAX_DEPTH = 100
"""Deepest nesting of sub-expressions a formula may have."""
MAX_MAGNITUDE = 2**53
"""Largest absolute value any constant, variable, intermediate or final result may take."""
MAX_ROUND_DIGITS = 15
"""``round(x, n)`` accepts ``-MAX_ROUND_DIGITS <= n <= MAX_ROUND_DIGITS``."""

ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    {"ceil", "floor", "min", "max", "round", "if", "tier", "clamp", "percentile"}
)
"""The only functions a formula may call."""

_IF_ALIAS = "_ducto_if"  # ``if`` is a keyword: ``if(`` calls are rewritten to this name before parsing
_ARITY: dict[str, tuple[int, int | None]] = {
    "ceil": (1, 1),
    "floor": (1, 1),
    "round": (1, 2),
    "min": (1, None),
    "max": (1, None),
    "if": (3, 3),
    "tier": (3, None),
    "clamp": (3, 3),
    "percentile": (2, None),
}
_KEYWORDS_BEFORE_OPERAND = frozenset({"and", "or", "not", "if", "else", "in", "is"})
_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.NamedExpr: "assignment expressions are not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.JoinedStr: "string literals are not allowed",
}


# ── Public API ────────────────────────────────────────────────────────


def validate_expression(expr: str, allowed_names: set[str] | frozenset[str] | None = None) -> None:
    """Check that ``expr`` is a safe, well-formed formula, without evaluating it.

    Args:
        expr: The formula.
        allowed_names: When given, every variable the formula uses must be in this set.

    Raises:
        ExpressionError: The formula is refused; the message says why.
    """
    _, names = _compile(expr)
    if allowed_names is not None:
        unknown = sorted(names - set(allowed_names))
        if unknown:
            raise ExpressionError(
                f"unknown name(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed_names))}"
            )


def expression_names(expr: str) -> frozenset[str]:
    """Return the variable names a (valid) formula uses. Raises ExpressionError if it is refused."""
    return _compile(expr)[1]


def evaluate_expression(expr: str, variables: Variables) -> float:
    """Evaluate a formula with the given variable values.

    The formula is parsed and checked once per distinct string (cached), then run as compiled
    closures. Every variable the formula names must be present in ``variables``, even if the branch
    using it is not taken.

    Args:
        expr: The formula.
        variables: Variable name → number (``int`` or ``float``; ``bool`` counts as 0/1).

    Returns:
        The result as a float.

    Raises:
        ExpressionError: The formula is refused, names a missing variable, divides by zero, or a
            value leaves the allowed range.
    """
    fn, names = _compile(expr)
    if not names <= variables.keys():
        missing = sorted(names - variables.keys())
        raise ExpressionError(f"undefined variable: {', '.join(map(repr, missing))} in formula {expr!r}")
    return float(fn(variables))


# ── Parsing ───────────────────────────────────────────────────────────


def _compile(expr: str) -> tuple[_Fn, frozenset[str]]:
    if not isinstance(expr, str):
        raise ExpressionError(f"a formula must be a string, not {type(expr).__name__}")
    return _compile_cached(expr)


@lru_cache(maxsize=4096)
def _compile_cached(expr: str) -> tuple[_Fn, frozenset[str]]:
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"formula is {len(expr)} characters long; the limit is {MAX_EXPRESSION_LENGTH}")
    if not expr.isascii():
        raise ExpressionError("formula contains non-ASCII characters")
    text = " ".join(expr.split())  # one line: newlines/tabs are plain whitespace in a formula
    if not text:
        raise ExpressionError("formula is empty")
    source = _rewrite_if_calls(text)
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise ExpressionError(f"syntax error in formula {expr!r}: {e}") from e
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise ExpressionError(f"formula has {count} syntax nodes; the limit is {MAX_NODES}")
    names: set[str] = set()
    fn = _Compiler(names).compile(tree.body, 1)
    return fn, frozenset(names)


def _rewrite_if_calls(text: str) -> str:
    """Rename ``if(`` calls to an identifier so Python can parse them; leave ternary ``if`` alone.

    An ``if`` is a call when it is followed by ``(`` and does not follow an operand (a number, a name
    that is not a keyword, or ``)``) — after an operand it is the ternary ``a if cond else b``.
    """
    if "if" not in text:
        return text
    try:
        tokens = [
            t
            for t in tokenize.generate_tokens(io.StringIO(text).readline)
            if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT)
        ]
    except (tokenize.TokenError, SyntaxError) as e:
        raise ExpressionError(f"syntax error in formula {text!r}: {e}") from e
    starts: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME or tok.string != "if":
            continue
        if i + 1 >= len(tokens) or tokens[i + 1].string != "(":
            continue
        prev = tokens[i - 1] if i else None
        after_operand = prev is not None and (
            prev.type in (tokenize.NUMBER, tokenize.STRING)
            or prev.string == ")"
            or (prev.type == tokenize.NAME and prev.string not in _KEYWORDS_BEFORE_OPERAND)
        )
        if not after_operand:
            starts.append(tok.start[1])
    for col in reversed(starts):
        text = text[:col] + _IF_ALIAS + text[col + 2 :]
    return text


# ── Checked arithmetic ────────────────────────────────────────────────


def _checked(value: Number, what: str = "result") -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(f"{what} is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise ExpressionError(f"{what} {value!r} exceeds the allowed magnitude 2**53")
    return value


def _div(a: Number, b: Number) -> Number:
    if b == 0:
        raise ExpressionError("division by zero")
    return a / b


def _floordiv(a: Number, b: Number) -> Number:
    if b == 0:
        raise ExpressionError("division by zero")
    return a // b


def _mod(a: Number, b: Number) -> Number:
    if b == 0:
        raise ExpressionError("modulo by zero")
    return a % b


_BINOPS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: _div,
    ast.FloorDiv: _floordiv,
    ast.Mod: _mod,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Number, Number], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}


# ── The allowed functions (eager ones; ``if`` is compiled lazily) ─────


def _round(args: list[Number]) -> Number:
    if len(args) == 1:
        return round(args[0])
    digits = args[1]
    if digits != int(digits) or abs(digits) > MAX_ROUND_DIGITS:
        raise ExpressionError(f"round() digits must be a whole number within ±{MAX_ROUND_DIGITS}")
    return round(args[0], int(digits))


def _tier(args: list[Number]) -> Number:
    """``tier(v, t1, r1, t2, r2, ..., default)``: ``r`` of the first ``t`` with ``v < t``, else default.

    As in ducto 1.0, with an odd number of arguments the last rate doubles as the default.
    """
    value = args[0]
    for i in range(1, len(args) - 1, 2):
        if value < args[i]:
            return args[i + 1]
    return args[-1]


def _clamp(args: list[Number]) -> Number:
    """``clamp(x, lo, hi)`` = ``max(lo, min(x, hi))``."""
    return max(args[1], min(args[0], args[2]))


def _percentile(args: list[Number]) -> Number:
    """``percentile(p, v1, v2, ...)``: the p-th percentile (0..100) of the values, linear interpolation."""
    p = args[0]
    if not 0 <= p <= 100:
        raise ExpressionError(f"percentile() p must be within 0..100, got {p!r}")
    values = sorted(args[1:])
    rank = p / 100 * (len(values) - 1)
    lower = int(rank)
    upper = min(lower + 1, len(values) - 1)
    frac = rank - lower
    return values[lower] * (1 - frac) + values[upper] * frac


_EAGER: dict[str, Callable[[list[Number]], Number]] = {
    "ceil": lambda a: math.ceil(a[0]),
    "floor": lambda a: math.floor(a[0]),
    "round": _round,
    "min": min,
    "max": max,
    "tier": _tier,
    "clamp": _clamp,
    "percentile": _percentile,
}


# ── Compiler: checked AST → closures ──────────────────────────────────


class _Compiler:
    """Turns an allowlisted expression tree into closures; refuses everything else."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def compile(self, node: ast.expr, depth: int) -> _Fn:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"formula nests deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.BinOp):
            return self._binop(node, d)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, d)
        if isinstance(node, ast.Compare):
            return self._compare(node, d)
        if isinstance(node, ast.BoolOp):
            return self._boolop(node, d)
        if isinstance(node, ast.IfExp):
            return self._if(
                self.compile(node.test, d), self.compile(node.body, d), self.compile(node.orelse, d)
            )
        if isinstance(node, ast.Call):
            return self._call(node, d)
        reason = _REFUSED_NODES.get(type(node), "not allowed in a formula")
        raise ExpressionError(f"disallowed node type: {type(node).__name__}: {reason}")

    @staticmethod
    def _constant(node: ast.Constant) -> _Fn:
        value = node.value
        if isinstance(value, str):
            raise ExpressionError("string literals are not allowed")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExpressionError(f"only numeric literals are allowed, not {value!r}")
        checked = _checked(value, "constant")
        return lambda _vs: checked

    def _name(self, name: str) -> _Fn:
        self.names.add(name)

        def load(vs: Variables) -> Number:
            value = vs[name]
            if not isinstance(value, (int, float)):
                raise ExpressionError(f"variable {name!r} is not a number: {value!r}")
            return _checked(value, f"variable {name!r}")

        return load

    def _binop(self, node: ast.BinOp, d: int) -> _Fn:
        if isinstance(node.op, ast.Pow):
            raise ExpressionError("the ** operator is not allowed (unbounded exponentiation)")
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        left, right = self.compile(node.left, d), self.compile(node.right, d)
        return lambda vs: _checked(op(left(vs), right(vs)))

    def _unary(self, node: ast.UnaryOp, d: int) -> _Fn:
        operand = self.compile(node.operand, d)
        if isinstance(node.op, ast.USub):
            return lambda vs: -operand(vs)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            return lambda vs: int(not operand(vs))
        raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")

    def _compare(self, node: ast.Compare, d: int) -> _Fn:
        ops: list[Callable[[Number, Number], bool]] = []
        for op in node.ops:
            fn = _CMPOPS.get(type(op))
            if isinstance(op, (ast.In, ast.NotIn)):
                raise ExpressionError(
                    "'in' and 'not in' are not allowed: ducto 1.0 compared the numbers' decimal text "
                    "('20 in 2' was true), which prices nothing; compare with == < > instead"
                )
            if fn is None:
                raise ExpressionError(f"comparison {type(op).__name__} is not allowed")
            ops.append(fn)
        first = self.compile(node.left, d)
        rest = [self.compile(c, d) for c in node.comparators]

        def compare(vs: Variables) -> Number:
            left = first(vs)
            for op, right_fn in zip(ops, rest, strict=True):
                right = right_fn(vs)
                if not op(left, right):
                    return 0
                left = right
            return 1

        return compare

    def _boolop(self, node: ast.BoolOp, d: int) -> _Fn:
        parts = [self.compile(v, d) for v in node.values]
        is_and = isinstance(node.op, ast.And)

        def boolop(vs: Variables) -> Number:
            value: Number = 0
            for part in parts:
                value = part(vs)
                if bool(value) != is_and:  # and: stop at the first falsy; or: at the first truthy
                    return value
            return value

        return boolop

    @staticmethod
    def _if(test: _Fn, then: _Fn, other: _Fn) -> _Fn:
        return lambda vs: then(vs) if test(vs) else other(vs)

    def _call(self, node: ast.Call, d: int) -> _Fn:
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(
                "only the allowed functions may be called: " + ", ".join(sorted(ALLOWED_FUNCTIONS))
            )
        name = "if" if node.func.id == _IF_ALIAS else node.func.id
        if name not in ALLOWED_FUNCTIONS:
            raise ExpressionError(
                f"unknown function {name!r}; allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))}"
            )
        if node.keywords:
            raise ExpressionError(f"{name}() takes no keyword arguments")
        lo, hi = _ARITY[name]
        n = len(node.args)
        if n < lo or (hi is not None and n > hi):
            expected = str(lo) if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise ExpressionError(f"{name}() takes {expected} argument(s), got {n}")
        args = [self.compile(a, d) for a in node.args]
        if name == "if":
            return self._if(args[0], args[1], args[2])
        impl = _EAGER[name]
        return lambda vs: _checked(impl([a(vs) for a in args]))
