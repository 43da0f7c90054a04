"""What every ``sqltrack`` command checks before it works: the user-facing error, and
whether a database is there and answers (so a wrong setting fails at once, with the reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .formatting import describe, one_line

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


#: How to point a command at another database (part of the "no tables" error).
WHERE_HINT = (
    "point sqltrack elsewhere with '--engine sqlite --dbpath FILE' or "
    "'--host HOST --dbname NAME [--schema NAME]' before the command, "
    "SQLTRACK_DSN_* variables (SQLTRACK_DSN_ENGINE, SQLTRACK_DSN_DBPATH, SQLTRACK_DSN_HOST, ...) "
    "or a sqltrack.conf file; or create the tables here with 'sqltrack setup'"
)


def _check_sqlite_exists(client: AsyncClient) -> None:
    path = str(client.settings.params["dbpath"])
    if path == ":memory:" or path.startswith("file:"):
        return
    if not Path(path).is_file():
        raise CliError(f"no SQLite database at {str(Path(path).absolute())!r}: {WHERE_HINT}")


async def _check_postgres(client: AsyncClient) -> None:
    """Connect once, directly, so a wrong setting fails at once with the server's reason."""
    import psycopg

    params = dict(client.settings.params)
    params.setdefault("connect_timeout", "10")
    try:
        conn = await psycopg.AsyncConnection.connect(**params)
    except psycopg.Error as error:
        raise CliError(f"cannot connect to {describe(client)}: {one_line(error)}") from None
    await conn.close()


async def check_database(client: AsyncClient, must_exist: bool = True) -> None:
    """Fail at once, with the server's reason, on a PostgreSQL database that does not
    answer; with ``must_exist``, on a SQLite file that is not there."""
    if client.engine == "sqlite" and must_exist:
        _check_sqlite_exists(client)
    if client.engine == "postgres":
        await _check_postgres(client)
