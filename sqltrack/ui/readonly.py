"""Users' SQL on the web page, read only: the runs filter and the SQL page.

What a user types is one SQL query (a SELECT; for the filter, a boolean
expression placed inside our own SELECT), and nothing else can run through it:

- text checks first, for a clear message: one statement (no ``;`` outside
  quotes and comments), parentheses balanced, a query keyword first;
- the SQL page's query runs as a subquery (``SELECT * FROM (...) AS q LIMIT n``),
  so only a query parses there; a query ordered at its top level without a ``LIMIT``,
  ``OFFSET`` or ``FETCH`` of its own gets the page's ``LIMIT n`` inside too (its
  order is then kept by Citus, which keeps a subquery's ``ORDER BY`` only with one of
  them, and the server sorts for the first ``n`` rows only);
- in a read-only transaction (PostgreSQL): ``READ ONLY``, a ``statement_timeout``,
  the reader role; the statement is parsed alone first (an unnamed prepared
  statement: the server itself refuses more than one), then run by the reader's
  function and read through a server-side cursor (see the engine's ``read_only``);
- on a connection of its own, where read-only is a connection setting (SQLite,
  ``read_only_per_connection``): opened read-only (the dialect's ``read_only_uri``,
  ``mode=ro``) with ``PRAGMA query_only``, an authorizer that allows reading only,
  and a progress handler that interrupts it at the deadline; sqlite3 runs one
  statement only.

Bounded cost, whatever the query: the time limit covers the whole request (waiting
for a connection, running, fetching, turning the rows into an answer); rows are
fetched a batch at a time and counted as they come, the fetching stopping at
``MAX_ROWS`` rows (SQL page) or ``MAX_BYTES`` bytes of values (``Result.note`` says
which); on the SQL page a value over ``VALUE_CAP`` bytes is cut (PostgreSQL cuts it
on the server; SQLite refuses a value over ``MAX_BYTES``, all an answer may hold),
and binary values are shown as hex (``\\x0102...``), never as Python's repr.

Every refusal is a :class:`QueryRefused` with a one-line message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import errors
from ..engines.base import Cut, Limits, stopped_after
from .api import BadRequest

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient
    from ..engines.base import Dialect

#: Seconds a user's query may run before it is stopped.
DEFAULT_TIMEOUT = 5.0
#: The role users' SQL runs as on PostgreSQL unless ``--ui-role`` names another.
DEFAULT_READER = "sqltrack_reader"
#: Rows the SQL page shows (and puts in a CSV) at most.
MAX_ROWS = 10_000
#: Bytes of values one answer holds at most (SQL page, its CSV, the runs table).
MAX_BYTES = 10 * 2**20
#: A value of the SQL page longer than this (bytes) is cut.
VALUE_CAP = 100_000
QUERY_KEYWORDS = ("select", "with", "values")


class QueryRefused(BadRequest):
    """A user's SQL was refused or failed; the message is one line."""


@dataclass(frozen=True)
class User:
    """A piece of a statement typed by the user (placed as is, never as a parameter)."""

    text: str


@dataclass(frozen=True)
class Policy:
    """How the page runs users' SQL: the time limit (s) of the whole request, the role it
    runs as on PostgreSQL (``sqltrack setup --ui-role``), whether a superuser login is
    allowed, the bytes of values an answer holds at most and the length of one value."""

    timeout: float = DEFAULT_TIMEOUT
    reader: str = DEFAULT_READER
    allow_superuser: bool = False
    max_bytes: int = MAX_BYTES
    value_cap: int = VALUE_CAP


#: The page's policy unless told otherwise.
DEFAULT_POLICY = Policy()


@dataclass
class Result:
    """Column names and rows of a read-only query; ``truncated``: more rows existed
    (``note`` says which limit stopped them); ``cut``: how many values were cut."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    note: str | None = None
    cut: int = 0


def shown(value: Any) -> Any:
    """A value as the page shows it: binary as hex (``\\x...``), a cut value as its first
    part and its whole size; anything else as it is."""
    if isinstance(value, Cut):
        return f"{shown(value.head)}… (cut: {value.size:,} bytes in all)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return value


def _note(stopped: str | None, rows: int, max_bytes: int) -> str | None:
    if stopped == "rows":
        return f"only the first {rows:,} rows: the page shows {rows:,} at most"
    if stopped == "bytes":
        held = f"{max_bytes / 2**20:g} MB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"
        return f"only the first {rows:,} rows: the page holds {held} of values at most"
    return None


def one_line(message: object) -> str:
    """A message on one line (whitespace runs collapsed), at most 300 characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= 300 else text[:297] + "..."


# -- text checks -----------------------------------------------------------------
_TOKEN = re.compile(
    r"""(?P<skip>'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
      |(?P<open>\()|(?P<close>\))|(?P<semi>;)|(?P<bad>'|"|/\*|\$[A-Za-z_]*\$)""",
    re.S | re.X,
)


def check_text(text: str, what: str = "query") -> str:
    """``text`` without trailing ``;``/space; QueryRefused if it is not one piece of SQL."""
    body = text.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    if not body:
        raise QueryRefused(f"the {what} is empty")
    depth = 0
    for match in _TOKEN.finditer(body):
        if match.group("semi"):
            raise QueryRefused(f"only one statement is allowed: the {what} has a ';'")
        if match.group("bad"):
            raise QueryRefused(f"the {what} has an unclosed quote or comment")
        if match.group("open"):
            depth += 1
        elif match.group("close"):
            depth -= 1
            if depth < 0:
                raise QueryRefused(f"the {what} has a ')' without its '('")
    if depth:
        raise QueryRefused(f"the {what} has a '(' without its ')'")
    return body


def check_query(text: str) -> str:
    """A SQL page query: one SELECT (or WITH ... SELECT, VALUES)."""
    body = check_text(text)
    first = _TOKEN.sub(" ", body).lstrip(" (").split(None, 1)
    if not first or first[0].lower() not in QUERY_KEYWORDS:
        word = first[0] if first else ""
        raise QueryRefused(f"only queries can run here (SELECT, WITH, VALUES), not {word!r}")
    return body


#: A top level's ``ORDER BY``; its ``LIMIT``, ``OFFSET`` or ``FETCH FIRST|NEXT``.
_ORDERED = re.compile(r"\border\s+by\b", re.I)
_LIMITED = re.compile(r"\b(?:limit|offset)\b|\bfetch\s+(?:first|next)\b", re.I)


def top_level(body: str) -> str:
    """The text of a checked query outside parentheses, quotes and comments (blanked)."""
    plain = _TOKEN.sub(lambda m: " " if m.group("skip") else m.group(0), body)
    depth, kept = 0, []
    for char in plain:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        kept.append(char if depth == 0 and char != ")" else " ")
    return "".join(kept)


def ordered_without_limit(body: str) -> bool:
    """Whether a checked query has an ``ORDER BY`` but no ``LIMIT``, ``OFFSET`` or
    ``FETCH`` at its top level (where the page may add its own ``LIMIT``)."""
    outside = top_level(body)
    return bool(_ORDERED.search(outside)) and not _LIMITED.search(outside)


def compose(dialect: Dialect, parts: Sequence[str | User]) -> str:
    """One statement from our SQL (``%s`` placeholders, translated by the dialect) and
    the user's text (escaped by the dialect: PostgreSQL doubles a ``%``)."""
    return "".join(
        dialect.user_text(part.text) if isinstance(part, User) else dialect.sql(part)
        for part in parts
    )


# -- running -------------------------------------------------------------------
async def fetch(
    client: AsyncClient,
    parts: Sequence[str | User],
    params: Sequence[Any] = (),
    *,
    timeout: float | None = None,
    max_rows: int | None = None,
    policy: Policy | None = None,
    value_cap: int | None = None,
) -> Result:
    """Rows of one statement made of ``parts``, read only (the engine's ``read_only``:
    how each engine keeps users' SQL from writing, as the policy's reader role).

    Everything, the rows' conversion included, stops after ``timeout`` s (default the
    policy's); at most ``max_rows`` rows (None: any number) and the policy's
    ``max_bytes`` of values are fetched; values over ``value_cap`` bytes are cut (None:
    none is: a row with a value over ``max_bytes`` ends the rows instead)."""
    policy = policy or DEFAULT_POLICY
    timeout = policy.timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    sql = compose(client.dialect, parts)
    cap = policy.max_bytes if value_cap is None else min(value_cap, policy.max_bytes)
    try:
        read = await client.read_only(
            sql, params, timeout, Limits(max_rows, policy.max_bytes, cap),
            reader=policy.reader, allow_superuser=policy.allow_superuser)
    except errors.QueryRefused as error:
        raise QueryRefused(one_line(error)) from None
    cut = 0
    rows: list[tuple[Any, ...]] = []
    for row in read.rows:
        cut += sum(isinstance(value, Cut) for value in row)
        rows.append(tuple(shown(value) for value in row))
    check_deadline(deadline, timeout)
    return Result(read.columns, rows, read.stopped is not None,
                  _note(read.stopped, len(rows), policy.max_bytes), cut)


def check_deadline(deadline: float, timeout: float) -> None:
    """QueryRefused when the request is past its time limit (``deadline``, monotonic)."""
    if time.monotonic() > deadline:
        raise QueryRefused(stopped_after(timeout))


async def run_query(
    client: AsyncClient, text: str, *, timeout: float | None = None, max_rows: int = MAX_ROWS,
    policy: Policy | None = None,
) -> Result:
    """The SQL page: any one SELECT, at most ``max_rows`` rows, values cut at the policy's
    ``value_cap``."""
    policy = policy or DEFAULT_POLICY
    body = check_query(text)
    parts: list[str | User] = ["SELECT * FROM (\n", User(body)]
    params = [max_rows + 1]
    if ordered_without_limit(body):  # its order kept through the subquery (Citus)
        parts.append("\nLIMIT %s")
        params.append(max_rows + 1)
    parts.append("\n) AS q LIMIT %s")
    return await fetch(client, parts, params, timeout=timeout, max_rows=max_rows,
                       policy=policy, value_cap=policy.value_cap)
