"""Every rule for what a caller may pass in, in one place: one rule per kind of input.

Everything here runs before a call is built, so a refused input writes nothing, and whatever
passes can be stored by PostgreSQL (the ledger) as it is. Each refusal is an
:class:`~ducto_redis.errors.InvalidInputError` (a ``ValueError``) whose ``field`` names the input
(``metadata.notes[2]``, ``requests[3].amount``, ``cap_type``).

- amount (credits, limits, caps, allowances): an ``int`` (``bool`` refused; an ``int`` subclass
  counts as its integer value, whatever its ``str``), within the method's range, at most 2**53-1;
- duration (``ttl_seconds``): whole seconds from 1 to 30 days (the bound of ``hold_ttl_seconds``);
- id (user, team, reservation, transaction): a non-empty ``str`` of at most 1 024 bytes in UTF-8
  (a team id and a member id are indexed together in PostgreSQL, whose index rows hold 2 704 bytes);
- label (type, operation, model, role, name, plan id, reason): a non-empty ``str``, at most 256
  characters;
- idempotency key: ``None`` or a non-empty ``str`` of at most 1 024 characters;
- metadata: ``CreditMetadata``, a ``dict`` or ``None``: JSON of at most 8 192 bytes, nested at
  most 8 levels, string keys, finite numbers, integers within 64 bits;
- choice (``cap_type``, ``action``, ``cap_period``): one of the names listed;
- period of a rate or quantity limit: a number of seconds from 0.001 to 366 days; a quantity's
  name: 1-64 of ``A-Z a-z 0-9 _ . -``, at most 16 quantities per call, each an amount from 0;
- every text, metadata keys and values included: no NUL character and no lone surrogate
  (PostgreSQL stores neither);
- ledger schema name: ``[a-z_][a-z0-9_]{0,62}`` (it is written into SQL).

Out of range is bad input like a wrong type: every method raises for it, single calls and batches
alike. ``invalid_amount`` as a result is kept for an amount that is fine on its own but not for the
state it meets (a refund above what is left of the debit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import InvalidInputError

MAX_AMOUNT = 2**53 - 1
MAX_ID_BYTES = 1024
MAX_LABEL_LENGTH = 256
MAX_IDEMPOTENCY_KEY_LENGTH = 1024
MAX_METADATA_BYTES = 8192
MAX_METADATA_DEPTH = 8
MAX_JSON_INT = 2**63 - 1
MAX_TTL_SECONDS = 30 * 86400
SCHEMA_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"

_SCHEMA_NAME = re.compile(SCHEMA_NAME_PATTERN)


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (a NUL or a lone surrogate), or None. Fast for what
    passes: a NUL is a ``memchr``, an ASCII string has no surrogate, any other is encoded once."""
    if "\x00" in text:
        return "must not contain a NUL character (\\x00): PostgreSQL cannot store it"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"must not contain a lone surrogate (U+{ord(text[exc.start]):04X}): it is not valid Unicode text"
    return None


def check_text(value: object, field: str, *, max_chars: int, allow_empty: bool = False, bytes_: bool = False) -> str:
    """A ``str`` (a subclass counts as its text) of at most ``max_chars`` characters (``bytes_``:
    bytes in UTF-8), storable by PostgreSQL."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise InvalidInputError(field, f"must be a string, got {type(value).__name__}")
        value = str.__str__(value)
    if not value and not allow_empty:
        raise InvalidInputError(field, "must not be empty")
    if len(value) > max_chars or (bytes_ and not value.isascii() and len(value.encode("utf-8", "replace")) > max_chars):
        unit = "bytes in UTF-8" if bytes_ else "characters"
        size = len(value.encode("utf-8", "replace")) if bytes_ else len(value)
        raise InvalidInputError(field, f"must be at most {max_chars} {unit}, got {size}")
    problem = text_problem(value)
    if problem:
        raise InvalidInputError(field, problem)
    return value


def check_id(value: object, field: str) -> str:
    """A non-empty id of at most 1 024 bytes in UTF-8, storable by PostgreSQL."""
    # the hot path's common case in one expression (an ASCII str: as many bytes as characters, no
    # surrogate): what check_text accepts unchanged; anything else is judged by check_text itself
    if type(value) is str and value and len(value) <= MAX_ID_BYTES and value.isascii() and "\x00" not in value:
        return value
    return check_text(value, field, max_chars=MAX_ID_BYTES, bytes_=True)


def check_label(value: object, field: str, *, allow_empty: bool = False) -> str:
    """A short label (type, operation, model, role, name, plan id, reason) of at most 256 characters."""
    if type(value) is str and value and len(value) <= MAX_LABEL_LENGTH and value.isascii() and "\x00" not in value:
        return value  # as check_id: the common case, which check_text accepts unchanged
    return check_text(value, field, max_chars=MAX_LABEL_LENGTH, allow_empty=allow_empty)


def check_idempotency_key(value: object, field: str = "idempotency_key") -> str | None:
    """None, or a non-empty key of at most 1 024 characters."""
    if value is None:
        return None
    return check_text(value, field, max_chars=MAX_IDEMPOTENCY_KEY_LENGTH)


def check_int(value: object, field: str, unit: str = "credits") -> int:
    """An int that is not a bool (an int subclass counts as its integer value, whatever its ``str``)."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        got = "NaN" if isinstance(value, float) and math.isnan(value) else type(value).__name__
        raise InvalidInputError(field, f"must be an integer number of {unit}, got {got}")
    return int.__int__(value)


def amount_in_range(value: int, minimum: int, maximum: int = MAX_AMOUNT) -> bool:
    """Whether an amount lies within ``minimum`` … ``maximum`` (2**53−1: Lua doubles stay exact)."""
    return minimum <= value <= maximum


def check_amount(value: object, field: str, minimum: int, maximum: int = MAX_AMOUNT, unit: str = "credits") -> int:
    """An int amount in range, else :class:`InvalidInputError` naming ``field``."""
    if type(value) is int and minimum <= value <= maximum:  # the common case, as check_int accepts it
        return value
    n = check_int(value, field, unit)
    if not minimum <= n <= maximum:
        top = "2**53-1" if maximum == MAX_AMOUNT else str(maximum)
        raise InvalidInputError(field, f"must be between {minimum} and {top}, got {n}")
    return n


def check_ttl_seconds(value: object, field: str = "ttl_seconds") -> int:
    """A hold's lifetime: whole seconds from 1 to 30 days (the bound of ``hold_ttl_seconds``)."""
    return check_amount(value, field, 1, MAX_TTL_SECONDS, unit="seconds")


def period_ms(period_seconds: object, field: str = "period_seconds") -> int:
    """A limit's period in whole milliseconds, from seconds (a number from 0.001 s to 366 days)."""
    if isinstance(period_seconds, bool) or not isinstance(period_seconds, (int, float)) or not (
        0.001 <= period_seconds <= 366 * 86400
    ):
        raise InvalidInputError(field, "must be a number of seconds from 0.001 to 366 days")
    return round(period_seconds * 1000)


_QUANTITY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_quantity_name(value: object, field: str = "quantity") -> str:
    """A quantity's name (``tokens``, ``images``...): 1-64 letters, digits, ``_``, ``.`` or ``-``."""
    if not isinstance(value, str) or not _QUANTITY_NAME.fullmatch(value):
        raise InvalidInputError(field, "must be 1-64 letters, digits, '_', '.' or '-'")
    return str.__str__(value)


def check_choice(value: object, field: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (exactly), else an error listing them."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise InvalidInputError(field, f"must be one of {', '.join(options)}, got {value!r}")
    return str.__str__(value)


def check_schema_name(value: object, field: str = "ledger_schema") -> str:
    """A PostgreSQL schema name the ledger's SQL can carry unquoted."""
    if not isinstance(value, str) or not _SCHEMA_NAME.fullmatch(value):
        raise InvalidInputError(field, f"must match {SCHEMA_NAME_PATTERN} (lowercase letters, digits, _): {value!r}")
    return str.__str__(value)


def _scalar_problem(v: object) -> str | None:
    """Why a scalar JSON value cannot be stored (None: it can, or it is not a plain scalar)."""
    t = type(v)
    if t is str:
        return text_problem(v)  # type: ignore[arg-type]
    if t is int:
        return None if -MAX_JSON_INT <= v <= MAX_JSON_INT else "integers must fit in 64 bits"  # type: ignore[operator]
    if t is float:
        return None if math.isfinite(v) else f"must be a finite number, got {v}"  # type: ignore[arg-type]
    return None


_SCALARS = (str, int, float, bool, type(None))
_NOTHING: dict[str, Any] = {}


def _raise_if(problem: str | None, where: str, key: str) -> None:
    if problem:
        raise InvalidInputError(f"{where}.{key[:64]}", problem)


def check_json(value: object, field: str, *, max_depth: int = MAX_METADATA_DEPTH) -> None:
    """Refuse JSON-bound data PostgreSQL's ``jsonb`` would refuse or that is unreasonably deep:
    text with NUL or lone surrogates (keys too), non-string keys, NaN and infinities, integers past
    64 bits, nesting past ``max_depth``. Other objects (datetimes, ...) are left to pydantic's JSON.
    On the hot path for every call with metadata: plain scalars are checked in place, and a path is
    built only for a container or an error."""
    stack: list[tuple[object, str, int]] = [(value, field, 0)]
    while stack:
        v, where, depth = stack.pop()
        if type(v) in _SCALARS:
            problem = _scalar_problem(v)
            if problem:
                raise InvalidInputError(where, problem)
            continue
        if isinstance(v, (list, tuple)):
            if depth >= max_depth:
                raise InvalidInputError(where, f"nests deeper than {max_depth} levels")
            for i, x in enumerate(v):
                stack.append((x, f"{where}[{i}]", depth + 1))
            continue
        if isinstance(v, BaseModel):  # declared fields are named by the model: only extras' keys are checked
            named: Any = v.__dict__
            extra = v.__pydantic_extra__
            items: Any = named.items() if not extra else [*named.items(), *extra.items()]
        elif isinstance(v, Mapping):
            named, items = _NOTHING, v.items()
        elif isinstance(v, str):  # a subclass: its text (and likewise below)
            stack.append((str.__str__(v), where, depth))
            continue
        elif isinstance(v, int) and not isinstance(v, bool):
            stack.append((int.__int__(v), where, depth))
            continue
        elif isinstance(v, float):
            stack.append((float.__float__(v), where, depth))
            continue
        else:
            continue  # datetimes, UUIDs, ...: pydantic writes them as JSON strings
        if depth >= max_depth:
            raise InvalidInputError(where, f"nests deeper than {max_depth} levels")
        for k, x in items:
            if k not in named:
                if type(k) is not str:
                    if not isinstance(k, str):
                        raise InvalidInputError(where, f"keys must be strings, got {type(k).__name__}")
                    k = str.__str__(k)
                problem = text_problem(k)
                if problem:
                    raise InvalidInputError(where, f"key {k!r} {problem}")
            if x is None:
                continue
            t = type(x)  # scalars checked in place (ASCII text: two C calls); containers pushed
            if t is str:
                if "\x00" in x or not x.isascii():
                    _raise_if(text_problem(x), where, k)
            elif t is int:
                if not -MAX_JSON_INT <= x <= MAX_JSON_INT:
                    _raise_if("integers must fit in 64 bits", where, k)
            elif t is float:
                if not math.isfinite(x):
                    _raise_if(f"must be a finite number, got {x}", where, k)
            elif t is not bool:
                stack.append((x, f"{where}.{k[:64]}", depth + 1))


def check_json_size(text: str, field: str, limit: int = MAX_METADATA_BYTES) -> str:
    """``text`` (JSON) if it is at most ``limit`` bytes in UTF-8."""
    n = len(text) if text.isascii() else len(text.encode("utf-8"))
    if n > limit:
        raise InvalidInputError(field, f"must be at most {limit} bytes as JSON, got {n}")
    return text


def field_of(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(field, message) of pydantic's first error, the field as ``prefix.a.b[2]``."""
    err = exc.errors()[0]
    path = prefix
    for part in err.get("loc", ()):
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
    return path or "value", str(err.get("msg", "is invalid"))


def invalid_input(exc: ValidationError, prefix: str = "") -> InvalidInputError:
    """pydantic's refusal as one :class:`InvalidInputError` naming the field."""
    field, message = field_of(exc, prefix)
    return InvalidInputError(field, message)
