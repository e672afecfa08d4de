"""Checks of configuration values: finite numbers in a range, integers, sizes, choices and keyword names.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (wrong value) with a message that names
the argument, and returns the value in its plain Python form. Configs call them before anything is built.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

# Keywords that were renamed: one name for one thing across the envs, ``from_preset`` and the CLI.
RENAMED_KEYWORDS = {"random_init": "random_weights", "seed": "model_seed"}

F = TypeVar("F", bound=Callable[..., Any])


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool) within ``[low, high]`` (``low_open``/``high_open``: exclusive ends)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must lie in {span}, got {value}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, not a float) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """One of ``choices`` (compared with ``==``, so a string never matches by accident of type)."""
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_size(name: str, value: Any) -> tuple[int, int]:
    """A frame size: a positive int (square) or a pair ``(H, W)`` of positive ints -> ``(H, W)``."""
    if isinstance(value, (str, bytes)) or not (isinstance(value, numbers.Integral) or _is_pair(value)):
        raise TypeError(f"{name} must be an int or a pair (H, W) of ints, got {type(value).__name__} {value!r}")
    h, w = (value, value) if isinstance(value, numbers.Integral) else value
    return check_int(f"{name} height", h, 1), check_int(f"{name} width", w, 1)


def _is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def check_keywords(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    """TypeError when ``given`` holds names outside ``known``, pointing renamed ones to their new names."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    hints = [f"{old!r} is now called {RENAMED_KEYWORDS[old]!r}" for old in unknown if old in RENAMED_KEYWORDS]
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise TypeError(f"{where}: unknown argument{'s' if len(unknown) > 1 else ''} {unknown}{hint}; known: {known}")


def reject_renamed_keywords(function: F) -> F:
    """Make ``function`` raise a TypeError naming the new keyword when called with an old one (no silent alias)."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        old = [k for k in kwargs if k in RENAMED_KEYWORDS]
        if old:
            renames = "; ".join(f"{k!r} is now called {RENAMED_KEYWORDS[k]!r}" for k in old)
            raise TypeError(f"{function.__name__}(): {renames}")
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
