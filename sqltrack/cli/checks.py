"""What every ``sqltrack`` command checks before it works: the user-facing error, and
whether a database is there and answers (so a wrong setting fails at once, with the reason).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines import make_engine
from ..errors import DatabaseError
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


#: Seconds the check waits for a database server to answer (as libpq's connect_timeout).
CONNECT_TIMEOUT = 10.0


def _check_file_exists(client: AsyncClient) -> None:
    path = client.dialect.database_path(client.settings)
    if path is not None and not Path(path).is_file():
        raise CliError(f"no SQLite database at {str(Path(path).absolute())!r}: {WHERE_HINT}")


async def _check_server(client: AsyncClient) -> None:
    """Connect once, on an engine of its own, so a wrong setting fails at once with the
    server's reason (opening an engine connects once directly, see ``Engine.open``)."""
    engine = make_engine(replace(client.settings, pool_timeout=CONNECT_TIMEOUT))
    try:
        await engine.open()
    except DatabaseError as error:
        raise CliError(f"cannot connect to {describe(client)}: {one_line(error)}") from None
    finally:
        await engine.close()


async def check_database(client: AsyncClient, must_exist: bool = True) -> None:
    """Fail at once, with the server's reason, on a database server that does not
    answer; with ``must_exist``, on a database file that is not there."""
    if must_exist:
        _check_file_exists(client)
    if client.dialect.has_server:
        await _check_server(client)
