"""Checks and conversions of user values shared by experiments and runs."""

from __future__ import annotations

import json
import math
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
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import operator

            return operator.index(value)
        except TypeError:
            raise TypeError(f"{what} must be an int, not {value!r}") from None
    return value


def check_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, not {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, not {value!r}") from None
    if math.isnan(result):
        raise ValueError(f"{what} must not be NaN")
    return result


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
    """Serialize a dict for a JSON column; reject what JSON (and JSONB) cannot hold."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, not {value!r}")
    try:
        try:
            text = json.dumps(dict(value), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as error:
            where, bad = _unstorable(value, what) or (what, value)
            raise ValueError(
                f"{what} cannot be stored as JSON: {error} ({where} = {bad!r})"
            ) from None
        _check_json_strings(value, what)
    except RecursionError:
        raise ValueError(
            f"{what} is nested too deeply to be stored as JSON: {reprlib.repr(value)}"
        ) from None
    return text


def _unstorable(value: Any, where: str) -> tuple[str, Any] | None:
    """The first part of ``value`` that JSON cannot hold, and where it is."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if value is None or isinstance(value, (str, int)):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key is not None and not isinstance(key, (str, int, float)):
                return f"{where} key", key
            found = _unstorable(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _unstorable(item, f"{where}[{index}]")
            if found:
                return found
        return None
    return where, value


def _check_json_strings(value: Any, what: str) -> None:
    if isinstance(value, str):
        check_text(value, what)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_text(str(key), f"{what} key")
            _check_json_strings(item, what)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json_strings(item, what)


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
