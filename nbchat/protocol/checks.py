"""Small field checkers shared by the request rules: each raises one `ValidationError` naming
the field, the value and what is allowed."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ValidationError

__all__ = [
    "fail", "is_int", "is_number", "number", "integer", "boolean", "string", "as_dict",
    "key_name", "unknown", "keys", "enum",
]  # fmt: skip


def fail(field: str, value: Any, allowed: str) -> ValidationError:
    return ValidationError(field, value, allowed)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    # Booleans are ints in Python but never numbers on the wire; NaN/inf are not JSON.
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def number(field: str, v: Any, lo: float, hi: float) -> None:
    if not is_number(v) or not lo <= v <= hi:
        raise fail(field, v, f"a number from {lo} to {hi} inclusive")


def integer(field: str, v: Any, lo: int, hi: int | None = None) -> None:
    if not is_int(v) or v < lo or (hi is not None and v > hi):
        rng = f"from {lo} to {hi} inclusive" if hi is not None else f">= {lo}"
        raise fail(field, v, f"an integer {rng}")


def boolean(field: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise fail(field, v, "true or false")


def string(field: str, v: Any, *, empty: bool = True) -> None:
    if not isinstance(v, str) or (not empty and not v):
        raise fail(field, v, "a string" if empty else "a non-empty string")


def as_dict(field: str, v: Any, what: str = "an object") -> dict[str, Any]:
    if not isinstance(v, dict):
        raise fail(field, v, what)
    return v


def key_name(key: Any) -> str:
    return key if isinstance(key, str) and key.isprintable() and key else repr(key)


def unknown(field: str, value: Any, allowed: tuple[str, ...], where: str) -> ValidationError:
    listed = ", ".join(allowed)
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    import difflib  # lazy: only needed to phrase an error

    name = field.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValidationError(
        field,
        value,
        f"one of the fields {listed}",
        message=f"unknown field {field} (value {shown}) in {where}{hint}; allowed fields: {listed}",
    )


def keys(field: str, obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            raise unknown(f"{field}.{key_name(key)}", obj[key], allowed, field)


def enum(
    field: str, v: Any, allowed: tuple[str, ...], *, upper: bool = False, any_case: bool = False
) -> str:
    if isinstance(v, str):
        key = v.upper() if upper else v
        if any_case and key in allowed:
            return key
        if v in allowed:
            return v
    suffix = " (any case)" if any_case else ""
    raise fail(field, v, "one of " + ", ".join(allowed) + suffix)
