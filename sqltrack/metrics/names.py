"""Metric names and value kinds: what may become a metric column, and of which type.

Metrics are columns of the ``metrics`` table. A name with no column yet gets
one, typed from its first value: bool, int, float, str or datetime. Names become
SQL identifiers, so each is checked before any SQL is built: letters, digits and
underscores, not starting with a digit, at most 63 characters, and not one of
``run_id``, ``step``, ``progress``.
"""

from __future__ import annotations

import numbers
import re
from datetime import datetime
from typing import Any

from ..checks import INT64_MAX, INT64_MIN, check_text, resolve_time, shown
from ..errors import MetricTypeError

MAX_NAME_LENGTH = 63
RESERVED_NAMES = frozenset({"run_id", "step", "progress"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: The kind of a value of these exact types (the common case, found without isinstance).
KIND_OF_TYPE: dict[type, str] = {float: "float", int: "int", bool: "bool", str: "str"}
#: Which existing column kinds accept a value of a given kind.
FITS = {
    "bool": ("bool",),
    "int": ("int", "float"),
    "float": ("float",),
    "str": ("str",),
    "datetime": ("datetime",),
}


def check_metric_name(name: Any) -> str:
    """Return ``name`` if it is a safe metric column name, else raise ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"metric name {name!r} is not a str")
    if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"metric name {name!r} is not a plain identifier: use letters, digits and "
            f"underscores, not starting with a digit, at most {MAX_NAME_LENGTH} characters"
        )
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"metric name {name!r} is reserved (run_id, step, progress)")
    return name


def metric_kind(name: str, value: Any) -> tuple[Any, str | None]:
    """The value to store and its kind (None for a NULL value).

    Refused, naming the metric, the value and its type: ints outside 64 bits
    (ValueError), numbers too large for a float (ValueError), numpy datetime64 and
    timedelta64 (their ``item()`` is a bare int of nanoseconds, or a naive time), and
    anything not one bool, int, float, str or datetime (MetricTypeError). ``-0.0``
    becomes ``0.0`` (SQLite's REAL has no negative zero; the same on every engine).
    """
    kind = KIND_OF_TYPE.get(type(value))
    if kind is not None:
        if kind == "str":
            check_text(value, f"value of metric {name!r}")
        elif kind == "int":
            _check_int64(name, value)
        elif kind == "float" and value == 0.0:
            value = 0.0
        return value, kind
    if value is None:
        return None, None
    if isinstance(value, datetime):
        resolve_time(value, f"value of metric {name!r}")
        return value, "datetime"
    if isinstance(value, str):
        return check_text(str(value), f"value of metric {name!r}"), "str"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value), "bool"
    if getattr(getattr(value, "dtype", None), "kind", None) in ("m", "M"):
        raise MetricTypeError(
            f"metric {name!r}: cannot store {_shape_text(value)} of type "
            f"{type(value).__name__} (numpy time); log a duration as float seconds "
            "(value / numpy.timedelta64(1, 's')) and a time as an aware datetime"
        )
    if isinstance(value, numbers.Integral):
        return _check_int64(name, int(value)), "int"
    if isinstance(value, numbers.Real):
        try:
            return float(value) + 0.0, "float"
        except OverflowError:
            raise ValueError(
                f"metric {name!r}: value {shown(value)} of type {type(value).__name__} is too "
                "large for a float (at most about 1.8e308)"
            ) from None
    item = getattr(value, "item", None)  # one-element numpy arrays and torch tensors
    if callable(item):
        try:
            scalar = item()
        except Exception:  # noqa: BLE001 - torch: RuntimeError, numpy: ValueError
            raise MetricTypeError(
                f"metric {name!r}: a metric value is one scalar, not {_shape_text(value)} "
                f"of type {type(value).__name__}; log one name per element, or reduce it "
                "(.mean(), .sum())"
            ) from None
        if scalar is not value:
            return metric_kind(name, scalar)
    raise MetricTypeError(
        f"metric {name!r}: cannot store {_shape_text(value)} of type {type(value).__name__}; "
        "use one bool, int, float, str or datetime"
    )


def _check_int64(name: str, value: int) -> int:
    """``value`` when it fits a 64-bit column, else a ValueError naming metric and value."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(
            f"metric {name!r}: value {shown(value)} does not fit a 64-bit integer "
            f"(from {INT64_MIN} to {INT64_MAX}); log float(value) to store it as a float"
        )
    return value


def _shape_text(value: Any) -> str:
    """A short description of a value that is not a scalar (no import of numpy or torch)."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        try:
            if tuple(shape):
                return f"a value of shape {tuple(shape)}"
        except TypeError:
            pass
    if isinstance(value, (list, tuple, set, dict)):
        return f"a {type(value).__name__} of {len(value)} elements ({shown(value, 60)})"
    return shown(value)
