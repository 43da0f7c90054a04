"""Connection settings: keyword arguments > ``SQLTRACK_DSN_*`` environment > config file.

The config file is ``key=value`` lines (``#`` starts a comment). It is taken from
the ``config`` argument (a dict, or a path as str/Path), else from the path in
``SQLTRACK_CONFIG_PATH``, else from ``./sqltrack.conf`` when that file exists.

A config file decides where passwords go, so (as ssh does with its files) one that
its group or others may write is refused (``ConfigFileError``: ``chmod go-w``), and a
file that sets a server (``host``, ``hostaddr``, ``service``, or a connection string
naming a host) is announced: ``resolve`` warns ``ConfigFileHost`` once per process
with its path (``sqltrack`` prints the same as one line on stderr instead), so a
``sqltrack.conf`` in a cloned repository cannot send a client elsewhere unseen.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENGINES = ("postgres", "sqlite")
#: Other spellings of the engine names, accepted wherever an engine is named.
ENGINE_ALIASES = {"postgresql": "postgres", "pg": "postgres", "sqlite3": "sqlite"}
DEFAULT_ENGINE = "postgres"
ENV_PREFIX = "SQLTRACK_DSN_"
CONFIG_PATH_ENV = "SQLTRACK_CONFIG_PATH"
DEFAULT_CONFIG_FILE = "sqltrack.conf"
DEFAULT_SQLITE_PATH = "sqltrack.db"

#: Settings of the client itself; everything else is a libpq keyword.
POOL_DEFAULTS: dict[str, float] = {
    "pool_min_size": 1,
    "pool_max_size": 4,
    "pool_timeout": 30.0,
}
#: A buffer's batch size and seconds between flushes (``run.buffered()``, ``buffered=True``);
#: here, not in sqltrack.metrics.buffer, so that a write-through run never imports the buffer.
DEFAULT_FLUSH_ROWS = 1000
DEFAULT_FLUSH_INTERVAL = 1.0
#: Buffered (write-behind) metrics for every run of the client; see sqltrack.metrics.buffer.
BUFFER_DEFAULTS: dict[str, float] = {
    "flush_rows": DEFAULT_FLUSH_ROWS,
    "flush_interval": DEFAULT_FLUSH_INTERVAL,
    "buffer_max_rows": 0,
}
#: Outages (see sqltrack.metrics.buffer, sqltrack.outage.spool): seconds a buffered run waits for a
#: server that does not answer before its rows go to the spool; seconds a write-through
#: call keeps trying such a server before it raises ServerUnreachable.
OUTAGE_DEFAULTS: dict[str, float] = {
    "spool_after": 5.0,
    "retry_window": 30.0,
}
#: The column budget: metrics get their own column of ``metrics`` up to this many metric
#: columns (``metric_columns``); further names live in the long table ``metric_values``
#: (see docs/metric-storage.md). Below PostgreSQL's 1,600 columns (dropped ones
#: included, for ever) and its 8 KB heap row (about 990 non-null doubles), and below
#: SQLite's 2,000 columns.
METRIC_COLUMNS_DEFAULTS: dict[str, int] = {"postgres": 800, "sqlite": 1500}
#: The hard ceilings of each engine: a budget above them is refused.
METRIC_COLUMNS_MAX: dict[str, int] = {"postgres": 1500, "sqlite": 1900}
#: ``pooler``: "auto" detects a pooler between client and server; "transaction" (or
#: "session", "statement") says there is one; "none" says there is none.
POOLERS = ("auto", "none", "transaction", "session", "statement")
#: libpq keywords whose values must never be shown.
SECRET_KEYS = frozenset({"password", "sslpassword"})


#: The folder of the default spool file (see sqltrack.outage.spool).
SPOOL_DIR_ENV = "SQLTRACK_SPOOL_DIR"


def default_spool_file() -> str:
    """``spool-<host>.db`` in ``$SQLTRACK_SPOOL_DIR``, ``$XDG_CACHE_HOME/sqltrack`` or
    ``~/.cache/sqltrack`` (here: a client finds it without importing sqltrack.outage.spool)."""
    import socket

    directory = os.environ.get(SPOOL_DIR_ENV)
    if not directory:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        directory = os.path.join(cache, "sqltrack")
    return os.path.join(directory, f"spool-{socket.gethostname() or 'localhost'}.db")


def spool_file(settings: Settings) -> str | None:
    """The absolute path of a client's spool file (None: ``spool=off``)."""
    if settings.spool is None:
        return None
    return os.path.abspath(os.path.expanduser(settings.spool or default_spool_file()))


@dataclass(frozen=True)
class Settings:
    """Resolved client settings: the engine, its connection parameters and pool bounds."""

    engine: str
    #: SQLite: ``{"dbpath": ...}``; PostgreSQL: libpq keywords (``schema`` folded into options).
    params: dict[str, Any] = field(repr=False)
    pool_min_size: int = 1
    pool_max_size: int = 4
    pool_timeout: float = 30.0
    schema: str | None = None
    buffered: bool = False
    flush_rows: int = DEFAULT_FLUSH_ROWS
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    buffer_max_rows: int = 0
    #: The spool file of buffered rows while the server is away (None: no spool;
    #: "" the default file, see sqltrack.outage.spool).
    spool: str | None = ""
    spool_after: float = 5.0
    retry_window: float = 30.0
    pooler: str = "auto"
    #: Some setting was given (see :func:`is_configured`); False: every value is a default.
    configured: bool = True
    #: The column budget (see METRIC_COLUMNS_DEFAULTS).
    metric_columns: int = 800
    #: Distribute the tables at the base schema's set-up when the database is a Citus
    #: coordinator (``runs`` by id, the run-keyed tables co-located, reference tables).
    distribute: bool = True
    #: PostgreSQL: make ``metrics`` and ``metric_values`` hash-partitioned by run id into
    #: this many partitions when the base schema is created (0: not partitioned); an
    #: existing database is converted by ``sqltrack setup --partitions N``.
    partitions: int = 0
    #: The config file the settings were read from (absolute path; None: no file).
    config_file: str | None = None
    #: The server that file names (``host``, ``hostaddr`` or ``service``; None: none).
    config_host: str | None = None

    def __repr__(self) -> str:
        # Passwords never show: the password keywords, nor one inside a URI or a DSN
        # given as a value (libpq reads a whole connection string in ``dbname``).
        from .environment import mask_passwords  # here: its patterns cost at start-up

        shown = {
            k: ("***" if k in SECRET_KEYS else mask_passwords(v) if isinstance(v, str) else v)
            for k, v in self.params.items()
        }
        return f"Settings(engine={self.engine!r}, params={shown!r}, schema={self.schema!r})"


class ConfigFileError(ValueError):
    """A config file sqltrack refuses to read (one its group or others may write)."""


class ConfigFileHost(UserWarning):
    """The settings come from a config file that names a server (its path is in the text)."""


def read_config_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a ``key=value`` config file; a line without ``=`` is a ValueError naming it.

    A file its group or others may write is a ConfigFileError naming it and the fix
    (whoever can write it can send the client's password to a server of theirs).
    """
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as file:
        mode = os.fstat(file.fileno()).st_mode  # the file opened, not a name swapped since
        if os.name == "posix" and mode & (stat.S_IWGRP | stat.S_IWOTH):
            shown = os.path.abspath(path)
            raise ConfigFileError(
                f"config file {shown!r} is writable by {_writers(mode)} (mode "
                f"{stat.S_IMODE(mode):04o}), who could send your password to a server of "
                f"theirs: sqltrack does not read it; run 'chmod go-w {shown}'"
            )
        text = file.read()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(
                f"malformed line {number} in config file {str(path)!r}: "
                f"expected 'key=value', got {line!r}"
            )
        values[key.lower()] = value.strip()
    return values


def _writers(mode: int) -> str:
    who = [name for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others"))
           if mode & bit]
    return " and ".join(who)


def _config_path(config: Mapping[str, Any] | str | os.PathLike[str] | None) -> str | None:
    """The config file to read (None: a dict, or no file)."""
    if isinstance(config, Mapping):
        return None
    if config is not None:
        return os.fspath(config)
    env_path = os.environ.get(CONFIG_PATH_ENV)
    if env_path:
        return env_path
    if os.path.isfile(DEFAULT_CONFIG_FILE):
        return DEFAULT_CONFIG_FILE
    return None


def _file_values(config: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return {str(k).lower(): v for k, v in config.items()}
    path = _config_path(config)
    return {} if path is None else read_config_file(path)


#: Settings that name the server a PostgreSQL client connects to.
HOST_KEYS = ("host", "hostaddr", "service")


def _named_host(values: dict[str, Any]) -> str | None:
    """The server a config file's values name (a connection string's host too), or None."""
    try:
        expanded = _expand_dbname(dict(values))
    except ValueError:
        expanded = values
    for key in HOST_KEYS:
        if expanded.get(key) not in (None, ""):
            return f"{key}={expanded[key]}"
    return None


def file_notice(settings: Settings) -> str | None:
    """The one line that says a config file named the server (None: no such file)."""
    if settings.config_file is None or settings.config_host is None:
        return None
    return (f"connection settings from config file {settings.config_file} "
            f"({settings.config_host})")


def engine_name(raw: Any) -> str:
    """An engine name (``postgres``, ``sqlite``, or an alias such as ``postgresql``)."""
    engine = str(raw).strip().lower()
    engine = ENGINE_ALIASES.get(engine, engine)
    if engine not in ENGINES:
        raise ValueError(
            f"unknown engine {raw!r}: use one of {', '.join(ENGINES)} "
            f"(or {', '.join(ENGINE_ALIASES)})"
        )
    return engine


def is_configured(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None, **kwargs: Any
) -> bool:
    """Whether any connection setting is given: ``config``, a keyword that is not None, a
    ``SQLTRACK_DSN_*`` variable, ``SQLTRACK_CONFIG_PATH`` or a ``./sqltrack.conf`` file.

    The integrations write to a local SQLite file when this is False (see
    ``sqltrack.integrations.common``); ``Client()`` keeps the PostgreSQL default.
    """
    return bool(
        config is not None
        or any(v is not None for v in kwargs.values())
        or _env_values()
        or os.environ.get(CONFIG_PATH_ENV)
        or os.path.isfile(DEFAULT_CONFIG_FILE)
    )


def _env_values() -> dict[str, str]:
    return {
        name[len(ENV_PREFIX):].lower(): value
        for name, value in os.environ.items()
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }


def _flag(values: dict[str, Any], key: str, default: bool = False) -> bool:
    raw = values.pop(key, default)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"config value {key}={raw!r} is not a boolean (true/false)")


def _parsed(raw: Any, key: str, kind: type[int] | type[float]) -> Any:
    """Setting ``key``'s value ``raw`` as an int or a float; a boolean is neither, and a
    fraction is no int (True is not a pool size, 2.5 is not a row count)."""
    try:
        if isinstance(raw, bool) or isinstance(raw, float) and kind is int and raw % 1:
            raise TypeError
        return kind(raw)
    except (TypeError, ValueError, OverflowError):
        what = "an int" if kind is int else "a float"
        raise ValueError(f"config value {key}={raw!r} is not {what}") from None


def _number(values: dict[str, Any], key: str, kind: type[int] | type[float]) -> Any:
    raw = values.get(key, {**POOL_DEFAULTS, **BUFFER_DEFAULTS, **OUTAGE_DEFAULTS}[key])
    number = _parsed(raw, key, kind)
    if not math.isfinite(number):
        raise ValueError(f"config value {key}={raw!r} is not a finite number")
    if number <= 0 and key not in ("pool_min_size", "buffer_max_rows") or number < 0:
        raise ValueError(f"config value {key}={raw!r} must be positive")
    return number


def _spool(raw: Any) -> str | None:
    """``spool``: a file path, ``""`` / ``auto`` for the default file, ``off`` for none."""
    if raw is None or raw is True:
        return ""
    if raw is False:
        return None
    text = os.fspath(raw) if isinstance(raw, os.PathLike) else str(raw)
    if text.strip().lower() in ("off", "false", "no", "none", "0"):
        return None
    if text.strip().lower() in ("", "auto", "on", "true", "yes", "1"):
        return ""
    if "\x00" in text or not _encodes(text):
        raise ValueError(f"config value spool={raw!r} is not a file name (no NUL, valid UTF-8)")
    return text


def _pooler(raw: Any) -> str:
    text = str(raw).strip().lower() or "auto"
    if text not in POOLERS:
        raise ValueError(f"config value pooler={raw!r}: use one of {', '.join(POOLERS)}")
    return text


#: The most partitions the setting ``partitions`` may ask for.
PARTITIONS_MAX = 1024


def _partitions(raw: Any, engine: str) -> int:
    """``partitions``: how many hash partitions by run id ``metrics`` and ``metric_values``
    get at creation (0: none); PostgreSQL only (SQLite has no partitioned tables)."""
    if raw is None or raw == "":
        return 0
    number = _parsed(raw, "partitions", int)
    if not 0 <= number <= PARTITIONS_MAX:
        raise ValueError(f"config value partitions={raw!r} must be from 0 to {PARTITIONS_MAX}")
    if number and engine != "postgres":
        raise ValueError(f"config value partitions={raw!r}: partitioned tables are "
                         f"PostgreSQL only ({engine} has none); leave it unset or 0")
    return number


def _metric_columns(raw: Any, engine: str) -> int:
    """``metric_columns``: how many metric columns ``metrics`` may get (0: none, every new
    name goes to the long table); at most the engine's ceiling."""
    if raw is None or raw == "":
        return METRIC_COLUMNS_DEFAULTS[engine]
    number = _parsed(raw, "metric_columns", int)
    ceiling = METRIC_COLUMNS_MAX[engine]
    if not 0 <= number <= ceiling:
        raise ValueError(
            f"config value metric_columns={raw!r} must be between 0 and {ceiling} on {engine}"
        )
    return number


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _schema(raw: Any) -> str | None:
    """The PostgreSQL schema name: any text up to 63 bytes; empty means the default."""
    if raw is None or raw == "":
        return None
    text = str(raw)
    if not _encodes(text):
        raise ValueError(f"config value schema={text!r} is not valid Unicode")
    if "\x00" in text or len(text.encode("utf-8")) > 63 or text.startswith("pg_"):
        raise ValueError(
            f"config value schema={text!r} is not a PostgreSQL schema name: "
            "at most 63 bytes (UTF-8), no NUL character, not starting with 'pg_'"
        )
    return text


def _expand_dbname(values: dict[str, Any]) -> dict[str, Any]:
    """A connection string (URI or ``key=value``) becomes settings; the other settings win.

    libpq reads one in ``dbname``; ``conninfo`` and ``dsn`` take one too. (Sent as a
    database name instead, it would fail and the server would echo it, password
    included, in its error.)
    """
    for key in ("conninfo", "dsn", "dbname"):
        text = values.get(key)
        if key == "dbname" and not (
            isinstance(text, str)
            and (text.startswith(("postgresql://", "postgres://")) or "=" in text)
        ):
            continue
        if text is None:
            continue
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(str(text))
        except Exception as error:  # noqa: BLE001 - shown, without its password
            from .environment import mask_passwords

            raise ValueError(
                f"config value {key}={mask_passwords(str(text))!r} is not a connection "
                f"string: {mask_passwords(str(error))}"
            ) from None
        rest = {k: v for k, v in values.items() if k != key}
        values = {**{k: str(v) for k, v in parts.items()}, **rest}
    return values


def resolve(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None, **kwargs: Any
) -> Settings:
    """Merge file, environment and keyword settings (in rising priority) into Settings."""
    options: dict[str, Any] = {"configured": is_configured(config, **kwargs)}
    values: dict[str, Any] = _file_values(config)
    path = _config_path(config)
    if path is not None:
        options["config_file"] = os.path.abspath(path)
        options["config_host"] = _named_host(values)
    values.update(_env_values())
    values.update({k.lower(): v for k, v in kwargs.items() if v is not None})

    # A database file and no engine anywhere: the file is an SQLite database.
    default = "sqlite" if values.get("dbpath") not in (None, "") else DEFAULT_ENGINE
    engine = engine_name(values.pop("engine", default))
    options.update(
        pool_min_size=_number(values, "pool_min_size", int),
        pool_max_size=_number(values, "pool_max_size", int),
        pool_timeout=_number(values, "pool_timeout", float),
    )
    if options["pool_min_size"] > options["pool_max_size"]:
        raise ValueError(
            f"config value pool_min_size={values.get('pool_min_size')!r} must not exceed "
            f"pool_max_size={values.get('pool_max_size', POOL_DEFAULTS['pool_max_size'])!r}"
        )
    options["buffered"] = _flag(values, "buffered")
    options["distribute"] = _flag(values, "distribute", True)
    options["flush_rows"] = _number(values, "flush_rows", int)
    options["flush_interval"] = _number(values, "flush_interval", float)
    options["buffer_max_rows"] = _number(values, "buffer_max_rows", int)
    options["spool_after"] = _number(values, "spool_after", float)
    options["retry_window"] = _number(values, "retry_window", float)
    options["spool"] = _spool(values.pop("spool", ""))
    options["pooler"] = _pooler(values.pop("pooler", "auto"))
    options["metric_columns"] = _metric_columns(values.pop("metric_columns", None), engine)
    options["partitions"] = _partitions(values.pop("partitions", None), engine)
    for key in (*POOL_DEFAULTS, *BUFFER_DEFAULTS, *OUTAGE_DEFAULTS):
        values.pop(key, None)

    if engine == "sqlite":
        dbpath = os.fspath(values.get("dbpath", DEFAULT_SQLITE_PATH))
        if not isinstance(dbpath, str) or "\x00" in dbpath or not _encodes(dbpath):
            raise ValueError(
                f"config value dbpath={dbpath!r} is not a file name SQLite can open "
                "(no NUL character, valid UTF-8)"
            )
        return Settings(engine, {"dbpath": dbpath}, **{**options, "config_host": None})

    values.pop("dbpath", None)
    values = _expand_dbname(values)
    schema = _schema(values.pop("schema", None))
    params = {k: str(v) for k, v in values.items()}
    if "user" not in params:
        import getpass  # only for PostgreSQL without a user: keeps SQLite start-up light

        params["user"] = os.environ.get("USER") or getpass.getuser()
    params.setdefault("dbname", params["user"])
    named = options.get("config_host")
    if named is not None and params.get(named.partition("=")[0]) != named.partition("=")[2]:
        options["config_host"] = None  # the file's server was overridden: not used
    settings = Settings(engine, params, schema=schema, **options)
    notice = file_notice(settings)
    if notice is not None:
        warnings.warn(f"sqltrack: {notice}", ConfigFileHost, stacklevel=2)
    return settings


def secret_values(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    given: Mapping[str, Any] | None = None,
) -> set[str]:
    """Every password value the settings may hold: ``given``, ``SQLTRACK_DSN_*``, the file.

    For masking known values in text (``environment.mask_passwords(text, secrets)``);
    an unreadable config file contributes nothing.
    """
    sources: list[Mapping[str, Any]] = [given or {}, _env_values()]
    try:
        sources.append(_file_values(config))
    except Exception:  # noqa: BLE001 - the settings report a bad file themselves
        pass
    return {
        str(value) for source in sources for key, value in source.items()
        if key in SECRET_KEYS and value
    }
