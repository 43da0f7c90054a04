"""Users' SQL on the web page, read only: the runs filter and the SQL page.

What a user types is one SQL query (a SELECT; for the filter, a boolean
expression placed inside our own SELECT), and nothing else can run through it:

- text checks first, for a clear message: one statement (no ``;`` outside
  quotes and comments), parentheses balanced, a query keyword first;
- the SQL page's query runs as a subquery (``SELECT * FROM (...) AS q LIMIT n``),
  so only a query parses there;
- in a read-only transaction (PostgreSQL): the dialect's ``read_only_setup``
  (``READ ONLY``, a ``statement_timeout``), then the statement in pipeline mode
  (the extended protocol), so the server itself refuses more than one statement;
- on a connection of its own, where read-only is a connection setting (SQLite,
  ``read_only_per_connection``): opened read-only (the dialect's ``read_only_uri``,
  ``mode=ro``) with ``PRAGMA query_only``, an authorizer that allows reading only,
  and a progress handler that interrupts it at the deadline; sqlite3 runs one
  statement only.

Every refusal is a :class:`QueryRefused` with a one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import errors
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
QUERY_KEYWORDS = ("select", "with", "values")


class QueryRefused(BadRequest):
    """A user's SQL was refused or failed; the message is one line."""


@dataclass(frozen=True)
class User:
    """A piece of a statement typed by the user (placed as is, never as a parameter)."""

    text: str


@dataclass(frozen=True)
class Policy:
    """How the page runs users' SQL: the time limit (s) of the whole query, the role it runs
    as on PostgreSQL (``sqltrack setup --ui-role``), whether a superuser login is allowed."""

    timeout: float = DEFAULT_TIMEOUT
    reader: str = DEFAULT_READER
    allow_superuser: bool = False


#: The page's policy unless told otherwise.
DEFAULT_POLICY = Policy()


@dataclass
class Result:
    """Column names and rows of a read-only query; ``truncated``: more rows existed."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False


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
) -> Result:
    """Rows of one statement made of ``parts``, read only, stopped after ``timeout`` s
    (default the policy's; the engine's ``read_only``: how each engine keeps users' SQL
    from writing, as the policy's reader role)."""
    policy = policy or DEFAULT_POLICY
    sql = compose(client.dialect, parts)
    try:
        columns, rows = await client.read_only(
            sql, params, policy.timeout if timeout is None else timeout, max_rows,
            reader=policy.reader, allow_superuser=policy.allow_superuser)
    except errors.QueryRefused as error:
        raise QueryRefused(one_line(error)) from None
    if max_rows is not None and len(rows) > max_rows:
        return Result(columns, rows[:max_rows], truncated=True)
    return Result(columns, rows)


async def run_query(
    client: AsyncClient, text: str, *, timeout: float | None = None, max_rows: int = MAX_ROWS,
    policy: Policy | None = None,
) -> Result:
    """The SQL page: any one SELECT, at most ``max_rows`` rows."""
    body = check_query(text)
    parts: list[str | User] = ["SELECT * FROM (\n", User(body), "\n) AS q LIMIT %s"]
    return await fetch(client, parts, [max_rows + 1], timeout=timeout, max_rows=max_rows,
                       policy=policy)
