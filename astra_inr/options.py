"""Declarative, validated options shared by the INR config and the command line.

An option is a dataclass field made with :func:`option`: it carries its public
name (ASTRA CamelCase for INR options, snake_case on the command line), a
one-line doc and a *kind* that says how values are converted and checked.
:func:`coerce_all` runs in ``__post_init__``; a bad value raises
``ValueError`` naming the option, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Iterable

__all__ = ["option", "coerce", "coerce_all", "unknown_names_error", "NONE_STRINGS"]

NONE_STRINGS = ("none", "")


def option(default: Any, name: str, doc: str, kind: str, choices: tuple = ()) -> Any:
    """A dataclass field with its public name, doc, kind and allowed choices."""
    return dataclasses.field(default=default, metadata={"name": name, "doc": doc, "kind": kind,
                                                        "choices": choices})


def coerce_all(obj: Any) -> None:
    """Convert and check every option field of a dataclass instance in place."""
    for f in dataclasses.fields(obj):
        if "kind" in f.metadata:
            m = f.metadata
            object.__setattr__(obj, f.name, coerce(m["name"], m["kind"], m["choices"],
                                                   getattr(obj, f.name)))


def unknown_names_error(unknown: Iterable[str], valid: Iterable[str], what: str) -> ValueError:
    """``ValueError`` for unknown option names, with "did you mean" hints and the valid names."""
    valid = sorted(valid)
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, valid, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ValueError(f"unknown {what} {', '.join(hints)}; valid options are: {', '.join(valid)}")


# Kinds that are a number in a range: (int or float, the test, what the error expects).
# "auto|KIND" also accepts the string 'auto' (the caller resolves it from the data), and
# "auto|heldout|KIND" each word before the kind.
_RANGES: dict[str, tuple[type, Any, str]] = {
    "nonneg_int": (int, lambda x: x >= 0, "an integer >= 0"),
    "positive_int": (int, lambda x: x >= 1, "an integer >= 1"),
    "nonneg": (float, lambda x: x >= 0, "a number >= 0"),
    "positive": (float, lambda x: x > 0, "a number > 0"),
    "unit_interval": (float, lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    "fraction": (float, lambda x: 0 < x <= 1, "a number in (0, 1]"),
}


def coerce(name: str, kind: str, choices: tuple, value: Any) -> Any:
    """Convert and check one option value; ``ValueError`` names the option and the expectation."""

    def bad(expected: str) -> ValueError:
        return ValueError(f"option {name}={value!r} is invalid: expected {expected}")

    def as_float(v: Any) -> float:
        if isinstance(v, bool):
            raise bad("a number")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(x):
            raise bad("a finite number")
        return x

    def as_int(v: Any) -> int:
        x = as_float(v)
        if x != int(x):
            raise bad("an integer")
        return int(x)

    is_none = value is None or (isinstance(value, str) and value.strip().lower() in NONE_STRINGS)
    if kind == "int":
        return as_int(value)
    *words, base = kind.split("|")
    if words and isinstance(value, str) and value.strip().lower() in words:
        return value.strip().lower()
    if base in _RANGES:
        convert, ok, expected = _RANGES[base]
        try:
            x = as_int(value) if convert is int else as_float(value)
        except ValueError:
            if not words:
                raise
            x = None
        if x is None or not ok(x):
            raise bad(expected + "".join(f" or {w!r}" for w in words))
        return x
    if kind == "optional_int":
        if is_none:
            return None
        x = as_int(value)
        if x < 0:
            raise bad("an integer >= 0 or None")
        return x
    if kind == "optional_float":
        return None if is_none else as_float(value)
    if kind == "float_list":
        items = value.replace(";", " ").split() if isinstance(value, str) else value
        try:
            xs = tuple(as_float(v) for v in items)
        except TypeError:
            raise bad("a list of numbers") from None
        if not xs or any(x <= 0 for x in xs):
            raise bad("a non-empty list of numbers > 0")
        return xs
    if kind == "bool":
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise bad("a boolean")
        if value in (0, 1):
            return bool(value)
        raise bad("a boolean")
    if kind == "choice":
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise bad("one of " + " ".join(repr(c) for c in choices))
    if kind == "optional_str":
        return None if is_none else str(value)
    if kind == "optional_choice":
        if is_none:
            return None
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise bad("None or one of " + " ".join(repr(c) for c in choices))
    raise AssertionError(f"unhandled option kind {kind}")
