"""Checks and conversions of user values shared by experiments and runs."""

from __future__ import annotations

import json
import math
import operator
import reprlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, overload

#: Run statuses: Slurm's 24 job states, as in sqltrack 0.1.x (enum ``runstatus``);
#: the database enforces the same list.
STATUSES = (
    "BOOT_FAIL",
    "CANCELLED",
    "CONFIGURING",
    "COMPLETED",
    "COMPLETING",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PENDING",
    "PREEMPTED",
    "RESV_DEL_HOLD",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "REQUEUED",
    "RESIZING",
    "REVOKED",
    "RUNNING",
    "SIGNALING",
    "SPECIAL_EXIT",
    "STAGE_OUT",
    "STOPPED",
    "SUSPENDED",
    "TIMEOUT",
)
Auto = Literal["auto"]
#: Longest text (UTF-8 bytes) in a uniquely indexed column (experiment names, link kinds):
#: PostgreSQL's btree holds at most about 2700 bytes per entry.
MAX_INDEXED_BYTES = 2000
#: Deepest nesting of dicts and lists in a JSON column (the top-level dict is level 1):
#: deeper values are refused, so every reader (the web page, json.loads) can take them.
MAX_JSON_DEPTH = 100
#: The range of a 64-bit integer column (ids, steps, int metrics: BIGINT / INTEGER).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def check_status(status: Any) -> str:
    """Return ``status`` when it is one of STATUSES, else raise ValueError naming it."""
    if not isinstance(status, str) or status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}: use one of {', '.join(STATUSES)}")
    return status


def resolve_time(dt: Auto | datetime | None, what: str = "timestamp") -> datetime | None:
    """``'auto'`` -> now (UTC), an aware datetime -> itself, None -> None."""
    if dt is None:
        return None
    if isinstance(dt, str) and dt == "auto":
        return datetime.now(timezone.utc)
    if not isinstance(dt, datetime):
        raise TypeError(f"{what} must be 'auto', a timezone-aware datetime or None, not {dt!r}")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ValueError(f"{what} {dt!r} has no timezone; pass an aware datetime")
    return dt


def check_int(value: Any, what: str) -> int:
    """An int that fits a 64-bit column (ids, steps); TypeError or ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{what} must be an int, not {shown(value)}") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(
            f"{what} {shown(value)} does not fit a 64-bit integer "
            f"(from {INT64_MIN} to {INT64_MAX})"
        )
    return int(value)


def check_float(value: Any, what: str) -> float:
    """A float that is not NaN; ``-0.0`` becomes ``0.0`` (SQLite's REAL and PostgreSQL's
    jsonb have no negative zero: the same on every engine)."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, not {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, not {shown(value)}") from None
    except OverflowError:
        raise ValueError(
            f"{what} {shown(value)} is too large for a float (at most about 1.8e308)"
        ) from None
    if math.isnan(result):
        raise ValueError(f"{what} must not be NaN")
    return result + 0.0  # -0.0 + 0.0 is 0.0


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters (an int too long for repr: its size)."""
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"<an int of {value.bit_length()} bits>"
    except RecursionError:  # nested too deeply for repr: reprlib stops at a few levels
        text = reprlib.repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@overload
def check_text(
    value: Any, what: str, *, allow_none: Literal[False] = False, max_bytes: int | None = None
) -> str: ...
@overload
def check_text(
    value: Any, what: str, *, allow_none: bool, max_bytes: int | None = None
) -> str | None: ...
def check_text(
    value: Any, what: str, *, allow_none: bool = False, max_bytes: int | None = None
) -> str | None:
    """A str that every engine stores exactly (no NUL, no lone surrogates, at most
    ``max_bytes`` bytes in UTF-8 when given)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {value!r}")
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} contains a NUL character, which cannot be stored")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid Unicode (lone surrogate)") from None
    if max_bytes is not None and size > max_bytes:
        raise ValueError(
            f"{what} {value[:60]!r}... is {size} bytes long (UTF-8); at most {max_bytes} "
            "fit in the database index"
        )
    return value


def dump_json_object(value: Any, what: str) -> str:
    """Serialize a dict for a JSON column; refuse what JSON (and JSONB) cannot hold exactly.

    Keys become their JSON text (``1`` -> ``"1"``, ``True`` -> ``"true"``, ``None`` ->
    ``"null"``), so two keys with the same text (``1`` and ``"1"``) are refused: one
    value would be lost. Floats come back as floats on every engine (those of 1e16 and
    more are written with all their digits and ``.0``: PostgreSQL's ``jsonb`` would
    print ``1e+16`` as an integer); ``-0.0`` is stored as ``0.0`` (``jsonb`` has no
    negative zero). Values nested deeper than MAX_JSON_DEPTH, NaN, infinities, text
    that no engine stores exactly, and values of other types are a ValueError naming
    the value, where it is and its type.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, not {shown(value)}")
    out: list[str] = []
    _encode_object(value, what, what, 1, out)
    return "".join(out)


def _encode(value: Any, what: str, where: str, depth: int, out: list[str]) -> None:
    """Append the JSON text of ``value`` (at ``where`` inside column ``what``) to ``out``."""
    if isinstance(value, str):
        check_text(value, f"{what} value at {where}")
        out.append(json.dumps(value, ensure_ascii=False))
    elif value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(_int_text(value, what, where))
    elif isinstance(value, float):
        out.append(_float_text(value, what, where))
    elif isinstance(value, Mapping):
        _encode_object(value, what, where, depth + 1, out)
    elif isinstance(value, (list, tuple)):
        _check_depth(value, what, where, depth + 1)
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(", ")
            _encode(item, what, f"{where}[{index}]", depth + 1, out)
        out.append("]")
    else:
        raise ValueError(
            f"{what} cannot be stored as JSON: {where} = {shown(value)} is of type "
            f"{type(value).__name__}; use str, int, float, bool, None, dict or list"
        )


def _encode_object(
    value: Mapping[Any, Any], what: str, where: str, depth: int, out: list[str]
) -> None:
    _check_depth(value, what, where, depth)
    seen: dict[str, Any] = {}
    out.append("{")
    for key, item in value.items():
        text = _key_text(key, what, where)
        if text in seen:
            raise ValueError(
                f"{what} cannot be stored as JSON: the keys {seen[text]!r} and {key!r} of "
                f"{where} are both {text!r} in JSON (keys are text), so one value would be "
                "lost; use distinct str keys"
            )
        seen[text] = key
        if len(seen) > 1:
            out.append(", ")
        out.append(json.dumps(text, ensure_ascii=False))
        out.append(": ")
        _encode(item, what, f"{where}[{key!r}]", depth, out)
    out.append("}")


def _check_depth(value: Any, what: str, where: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(
            f"{what} is nested too deeply to be stored as JSON: {where} is at level {depth}, "
            f"at most {MAX_JSON_DEPTH} levels of dicts and lists are kept "
            f"({reprlib.repr(value)})"
        )


def _key_text(key: Any, what: str, where: str) -> str:
    """A key as JSON writes it (as ``json.dumps`` does); other types are refused."""
    if isinstance(key, str):
        return check_text(key, f"{what} key in {where}")
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        return _int_text(key, what, f"{where} key")
    if isinstance(key, float) and math.isfinite(key):
        return float.__repr__(key)
    raise ValueError(
        f"{what} cannot be stored as JSON: key {shown(key)} of {where} is of type "
        f"{type(key).__name__}; JSON keys are text: use a str"
    )


def _int_text(value: int, what: str, where: str) -> str:
    try:
        return int.__repr__(value)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        raise ValueError(
            f"{what} cannot be stored as JSON: {where} = {shown(value)} has too many digits"
        ) from None


def _float_text(value: float, what: str, where: str) -> str:
    if not math.isfinite(value):
        raise ValueError(
            f"{what} cannot be stored as JSON: {where} = {value!r} (a float; JSON has no "
            "NaN or infinity: store it as a str)"
        )
    if value == 0.0:
        return "0.0"  # no -0.0: jsonb's numeric has no negative zero
    text = float.__repr__(value)
    if "e+" in text:  # jsonb prints 1e+16 as 10000000000000000, an int to every reader
        from decimal import Decimal

        return f"{Decimal(text):f}.0"
    return text


def tags_object(tags: tuple[Any, ...], what: str = "tag") -> dict[str, bool]:
    """Tags as the stored JSON object ``{tag: true}``."""
    return {check_text(tag, what): True for tag in tags}


#: What the ``remove_*`` calls take: names, iterables of names, dicts (their keys), None.
Names = str | Iterable[str] | Mapping[str, Any] | None


def key_names(
    items: Iterable[Any], what: str, auto: Callable[[], Mapping[str, Any] | None] | None = None
) -> list[str]:
    """The key names that the arguments of a ``remove_*`` call mean, checked up front.

    Each item is one name (a str is never split into characters), an iterable of
    names, a dict (its keys) or None (nothing). With ``auto``, the str ``'auto'``
    given directly means the keys ``auto()`` detects; inside an iterable it is the
    name ``'auto'``. Anything else is a TypeError before the database is touched.
    """
    names: list[str] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, str):
            if auto is not None and item == "auto":
                names.extend(key_names([auto()], what))
            else:
                names.append(_key_name(item, what))
        elif isinstance(item, (bytes, bytearray)) or not isinstance(item, Iterable):
            raise TypeError(f"{what} must be a str, an iterable of str or a dict, not {item!r}")
        else:
            names.extend(_key_name(name, what) for name in item)
    return names


def _key_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {name!r}")
    return check_text(name, what)
