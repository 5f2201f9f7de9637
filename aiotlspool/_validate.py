"""Checks for numeric options, shared by the pool's and the cache's settings.

Wrong types raise TypeError and wrong values ValueError, both naming the option; bool (an int
subclass) is never a number here: a limit of ``True`` is a bug in the caller, not 1.
"""

from __future__ import annotations

import math


def count(name: str, value: object, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def seconds(name: str, value: object) -> float:
    """``value`` as a number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def seconds_or_zero(name: str, value: object) -> float:
    """``value`` as a number of seconds >= 0 (0: off)."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return seconds(name, value)


def optional_seconds(name: str, value: object) -> float | None:
    """``value`` as a number of seconds > 0, or None (no limit)."""
    return None if value is None else seconds(name, value)
