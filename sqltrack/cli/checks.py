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


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to sqltrack as it was installed here.

    A source checkout (the imported package beside its ``pyproject.toml``, as the README
    installs it with ``pip install -e '.[...]'``): ``pip install -e '<checkout>[extra]'``;
    an install from a path, a wheel or a VCS URL: that again with the extra; from a
    package index: ``sqltrack[extra]==<this version>``.
    """
    import importlib.metadata
    import json
    from urllib.parse import unquote, urlparse

    package = Path(__file__).resolve().parents[1]
    if (package.parent / "pyproject.toml").is_file():
        return f"pip install -e '{package.parent}[{extra}]'"
    try:
        dist = importlib.metadata.distribution("sqltrack")
    except importlib.metadata.PackageNotFoundError:
        return f"pip install 'sqltrack[{extra}]'"
    origin = json.loads(dist.read_text("direct_url.json") or "{}")
    url = str(origin.get("url", ""))
    if url.startswith("file://"):
        path = unquote(urlparse(url).path)
        editable = "-e " if origin.get("dir_info", {}).get("editable") else ""
        return f"pip install {editable}'{path}[{extra}]'"
    if url and "vcs_info" in origin:
        vcs = origin["vcs_info"]
        return f"pip install 'sqltrack[{extra}] @ {vcs.get('vcs', 'git')}+{url}@" \
               f"{vcs.get('commit_id', '')}'"
    if url:
        return f"pip install 'sqltrack[{extra}] @ {url}'"
    return f"pip install 'sqltrack[{extra}]=={dist.version}'"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


#: How to point a command at another database (part of the "no tables" error).
WHERE_HINT = (
    "point sqltrack elsewhere with '--engine sqlite --dbpath FILE' or "
    "'--host HOST --dbname NAME [--schema NAME]' (before or after the command), "
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
