"""Values on a nanoBragg-style command line, read as nanoBragg.c and nonBragg.c read them.

``braggsim simulate`` (:mod:`braggsim.nanobragg_flags`) and ``braggsim nonbragg``
(:mod:`braggsim.nonbragg_cli`) share these rules: numbers must be finite, integers are
C's ``atoi`` (``2.5`` is 2, with a note), and each error is a ValueError naming the flag and
the value.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "at_least",
    "is_number",
    "non_negative",
    "parse_integer",
    "parse_number",
    "parse_vector",
    "positive",
    "resolve_axis",
]

_ATOI = re.compile(r"\s*([+-]?\d+)")


def parse_number(name: str, text: str, *, finite: bool = True) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"flag {name} needs a number, got {text!r}") from None
    if finite and not math.isfinite(value):
        raise ValueError(f"flag {name} needs a finite number, got {text!r}")
    return value


def parse_integer(state, name: str, text: str) -> int:
    """C's atoi: the leading digits (``2.5`` is 2, noted in ``state.notes``); text with none
    is an error."""
    match = _ATOI.match(text)
    if match is None:
        raise ValueError(f"flag {name} needs an integer, got {text!r}")
    value = int(match.group(1))
    if match.end() != len(text):
        try:
            exact = float(text)
        except ValueError:
            exact = None
        if exact is None or not math.isfinite(exact):
            raise ValueError(f"flag {name} needs an integer, got {text!r}")
        if exact != value:
            state.notes.append(f"note: {name} {text} is read as {value}, as nanoBragg reads integers (atoi)")
    return value


def positive(name: str, value: float, unit: str = "") -> float:
    if not value > 0:
        raise ValueError(f"flag {name} must be > 0{' ' + unit if unit else ''}, got {value!r}")
    return value


def non_negative(name: str, value: float) -> float:
    if value < 0:
        raise ValueError(f"flag {name} must be >= 0, got {value!r}")
    return value


def at_least(name: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise ValueError(f"flag {name} must be >= {minimum}, got {value}")
    return value


def parse_vector(name: str, values) -> tuple:
    """Three numbers, not all zero."""
    vector = tuple(parse_number(name, x) for x in values)
    if not any(vector):
        raise ValueError(f"flag {name} must not be the zero vector")
    return vector


def is_number(text: str) -> bool:
    """Whether ``float`` reads ``text`` (a flag's value, not the next flag, say)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_axis(name: str, range_value, step, steps) -> tuple:
    """nanoBragg's (range, steps, step) rule for a divergence or dispersion axis; returns
    (range, steps, step or None when it is range / (steps - 1))."""
    if steps is None:
        if range_value is None:
            if step is None:
                return 0.0, 1, None
            return step, 2, step
        if step is None:
            return range_value, 2, range_value if range_value > 0 else None
        return range_value, max(1, math.ceil(range_value / step)), step
    if range_value is None:
        if step is None:
            raise ValueError(
                f"{name} steps need a range (nanoBragg.c would then spread them over a full radian or 100 %)"
            )
        return step, 2, step  # nanoBragg: "user doesn't care about range"
    if step is None:
        return range_value, max(steps, 2), None
    return range_value, steps, step
