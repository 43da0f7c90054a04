"""Connection settings: kwargs > SQLTRACK_DSN_* environment > config file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sqltrack
from sqltrack import config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No SQLTRACK_* settings from the outside, and an empty working directory."""
    for name in list(os.environ):
        if name.startswith("SQLTRACK_DSN_") or name == "SQLTRACK_CONFIG_PATH":
            monkeypatch.delenv(name)
    monkeypatch.setenv("USER", "alice")
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- priority -------------------------------------------------------------------
def test_kwargs_beat_env_beat_file(monkeypatch, tmp_path):
    conf = write(
        tmp_path / "my.conf",
        "# a comment\n\nhost = filehost\nport=1111\ndbname=filedb\nuser=fileuser\n",
    )
    monkeypatch.setenv("SQLTRACK_DSN_PORT", "2222")
    monkeypatch.setenv("SQLTRACK_DSN_DBNAME", "envdb")
    s = config.resolve(conf, dbname="kwdb")
    assert s.engine == "postgres"
    assert s.params["dbname"] == "kwdb"  # kwargs win over env and file
    assert s.params["port"] == "2222"  # env wins over file
    assert s.params["host"] == "filehost"  # file is the fallback
    assert s.params["user"] == "fileuser"


def test_env_beats_file_for_engine(monkeypatch, tmp_path):
    conf = write(tmp_path / "x.conf", "engine=postgres\n")
    monkeypatch.setenv("SQLTRACK_DSN_ENGINE", "sqlite")
    monkeypatch.setenv("SQLTRACK_DSN_DBPATH", str(tmp_path / "env.db"))
    s = config.resolve(str(conf))
    assert s.engine == "sqlite"
    assert s.params == {"dbpath": str(tmp_path / "env.db")}


def test_env_name_is_case_insensitive_key(monkeypatch):
    monkeypatch.setenv("SQLTRACK_DSN_HOST", "envhost")
    s = config.resolve()
    assert s.params["host"] == "envhost"


def test_kwarg_none_does_not_override(monkeypatch):
    monkeypatch.setenv("SQLTRACK_DSN_HOST", "envhost")
    s = config.resolve(host=None)
    assert s.params["host"] == "envhost"


# -- where the config comes from ----------------------------------------------------
def test_config_as_dict():
    s = config.resolve({"engine": "sqlite", "dbpath": "from-dict.db"})
    assert s.engine == "sqlite"
    assert s.params == {"dbpath": "from-dict.db"}


def test_config_dict_keys_case_insensitive():
    s = config.resolve({"HOST": "h", "Port": 5})
    assert s.params["host"] == "h"
    assert s.params["port"] == "5"


def test_config_as_str_path(tmp_path):
    conf = write(tmp_path / "a.conf", "engine=sqlite\ndbpath=from-str.db\n")
    s = config.resolve(str(conf))
    assert s.params == {"dbpath": "from-str.db"}


def test_config_as_pathlib_path(tmp_path):
    conf = write(tmp_path / "b.conf", "engine=sqlite\ndbpath=from-path.db\n")
    s = config.resolve(conf)
    assert s.params == {"dbpath": "from-path.db"}


def test_config_path_env(monkeypatch, tmp_path):
    conf = write(tmp_path / "c.conf", "engine=sqlite\ndbpath=from-env-path.db\n")
    monkeypatch.setenv("SQLTRACK_CONFIG_PATH", str(conf))
    s = config.resolve()
    assert s.params == {"dbpath": "from-env-path.db"}


def test_default_config_file_in_cwd(tmp_path):
    write(tmp_path / "sqltrack.conf", "engine=sqlite\ndbpath=from-cwd.db\n")
    s = config.resolve()
    assert s.engine == "sqlite"
    assert s.params == {"dbpath": "from-cwd.db"}


def test_config_path_env_beats_cwd_file(monkeypatch, tmp_path):
    write(tmp_path / "sqltrack.conf", "engine=sqlite\ndbpath=cwd.db\n")
    other = tmp_path / "other"
    other.mkdir()
    conf = write(other / "o.conf", "engine=sqlite\ndbpath=env.db\n")
    monkeypatch.setenv("SQLTRACK_CONFIG_PATH", str(conf))
    assert config.resolve().params == {"dbpath": "env.db"}


def test_explicit_config_beats_config_path_env(monkeypatch, tmp_path):
    conf = write(tmp_path / "e.conf", "engine=sqlite\ndbpath=env.db\n")
    monkeypatch.setenv("SQLTRACK_CONFIG_PATH", str(conf))
    assert config.resolve({"engine": "sqlite", "dbpath": "dict.db"}).params == {
        "dbpath": "dict.db"
    }


def test_no_config_at_all_defaults_to_postgres():
    s = config.resolve()
    assert s.engine == "postgres"
    assert s.params == {"user": "alice", "dbname": "alice"}
    assert s.schema is None


def test_missing_config_file_raises(tmp_path):
    with pytest.raises(OSError):
        config.resolve(tmp_path / "does-not-exist.conf")


# -- defaults ---------------------------------------------------------------------------
def test_user_defaults_to_env_user_and_dbname_to_user():
    s = config.resolve(engine="postgres", host="h")
    assert s.params["user"] == "alice"
    assert s.params["dbname"] == "alice"


def test_dbname_defaults_to_given_user():
    s = config.resolve(user="bob")
    assert s.params["user"] == "bob"
    assert s.params["dbname"] == "bob"


def test_dbname_given_is_kept():
    s = config.resolve(user="bob", dbname="experiments")
    assert s.params["dbname"] == "experiments"


def test_sqlite_default_dbpath():
    s = config.resolve(engine="sqlite")
    assert s.params == {"dbpath": "sqltrack.db"}


def test_sqlite_dbpath_pathlike(tmp_path):
    s = config.resolve(engine="sqlite", dbpath=tmp_path / "p.db")
    assert s.params == {"dbpath": str(tmp_path / "p.db")}


def test_engine_is_case_insensitive():
    assert config.resolve(engine="SQLite").engine == "sqlite"


def test_schema_is_separate_from_libpq_params():
    s = config.resolve(schema="exp_schema", host="h")
    assert s.schema == "exp_schema"
    assert "schema" not in s.params
    assert s.params["host"] == "h"


def test_schema_from_env(monkeypatch):
    monkeypatch.setenv("SQLTRACK_DSN_SCHEMA", "envschema")
    assert config.resolve().schema == "envschema"


def test_dbpath_dropped_for_postgres():
    s = config.resolve(engine="postgres", dbpath="x.db")
    assert "dbpath" not in s.params


def test_password_hidden_in_repr():
    s = config.resolve(password="hunter2")
    assert s.params["password"] == "hunter2"
    assert "hunter2" not in repr(s)


# -- errors ---------------------------------------------------------------------------
def test_unknown_engine_raises_naming_it():
    with pytest.raises(ValueError, match="mysql"):
        config.resolve(engine="mysql")


def test_unknown_engine_from_file(tmp_path):
    conf = write(tmp_path / "bad.conf", "engine=oracle\n")
    with pytest.raises(ValueError, match="oracle"):
        config.resolve(conf)


def test_unknown_engine_from_client():
    with pytest.raises(ValueError, match="unknown engine"):
        sqltrack.AsyncClient(engine="nosuchdb")


def test_malformed_file_names_line_and_file(tmp_path):
    conf = write(tmp_path / "broken.conf", "host=h\n# fine\nthis line has no equals sign\n")
    with pytest.raises(ValueError) as info:
        config.resolve(conf)
    message = str(info.value)
    assert "line 3" in message
    assert "broken.conf" in message
    assert "this line has no equals sign" in message


def test_malformed_file_empty_key(tmp_path):
    conf = write(tmp_path / "k.conf", "=value\n")
    with pytest.raises(ValueError, match="line 1"):
        config.resolve(conf)


def test_malformed_default_file_raises(tmp_path):
    write(tmp_path / "sqltrack.conf", "garbage\n")
    with pytest.raises(ValueError, match="sqltrack.conf"):
        config.resolve()


def test_file_value_with_equals_sign(tmp_path):
    conf = write(tmp_path / "eq.conf", "options=-c search_path=foo\n")
    assert config.resolve(conf).params["options"] == "-c search_path=foo"


# -- pool bounds ------------------------------------------------------------------------
def test_pool_defaults():
    s = config.resolve()
    assert (s.pool_min_size, s.pool_max_size, s.pool_timeout) == (1, 4, 30.0)


def test_pool_bounds_from_kwargs_env_file(monkeypatch, tmp_path):
    conf = write(tmp_path / "p.conf", "pool_min_size=2\npool_max_size=9\npool_timeout=7\n")
    monkeypatch.setenv("SQLTRACK_DSN_POOL_MAX_SIZE", "8")
    s = config.resolve(conf, pool_timeout=1.5)
    assert s.pool_min_size == 2
    assert s.pool_max_size == 8
    assert s.pool_timeout == 1.5
    assert isinstance(s.pool_min_size, int) and isinstance(s.pool_timeout, float)
    # pool settings are the client's, not libpq keywords
    assert not any(k.startswith("pool_") for k in s.params)


def test_pool_bounds_for_sqlite():
    s = config.resolve(engine="sqlite", pool_max_size=2)
    assert s.pool_max_size == 2
    assert s.params == {"dbpath": "sqltrack.db"}


def test_pool_min_zero_is_allowed():
    assert config.resolve(pool_min_size=0).pool_min_size == 0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"pool_max_size": 0}, "pool_max_size"),
        ({"pool_max_size": -1}, "pool_max_size"),
        ({"pool_min_size": -1}, "pool_min_size"),
        ({"pool_timeout": 0}, "pool_timeout"),
        ({"pool_timeout": "soon"}, "pool_timeout"),
        ({"pool_max_size": "many"}, "pool_max_size"),
        ({"pool_min_size": 5, "pool_max_size": 2}, "pool_min_size"),
    ],
)
def test_bad_pool_bounds_raise(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        config.resolve(**kwargs)


@pytest.mark.parametrize("key", ["pool_max_size", "pool_min_size", "flush_rows",
                                 "buffer_max_rows", "metric_columns", "partitions"])
@pytest.mark.parametrize("raw", [True, 2.5, "many"])
def test_whole_number_settings_refuse_anything_else_alike(key, raw):
    """Every whole-number setting refuses a boolean, a fraction and a word with the
    same message (one parser for them all)."""
    with pytest.raises(ValueError) as info:
        config.resolve(engine="postgres", **{key: raw})
    assert str(info.value) == f"config value {key}={raw!r} is not an int"


@pytest.mark.parametrize("key", ["pool_timeout", "flush_interval", "retry_window"])
def test_number_settings_refuse_a_boolean(key):
    with pytest.raises(ValueError) as info:
        config.resolve(engine="postgres", **{key: True})
    assert str(info.value) == f"config value {key}=True is not a float"


def test_bad_pool_bound_in_env(monkeypatch):
    monkeypatch.setenv("SQLTRACK_DSN_POOL_TIMEOUT", "never")
    with pytest.raises(ValueError, match="pool_timeout"):
        config.resolve()


# -- end to end with a real database --------------------------------------------------
async def test_client_from_config_file_connects(tmp_path):
    dbpath = tmp_path / "viafile.db"
    write(tmp_path / "sqltrack.conf", f"engine=sqlite\ndbpath={dbpath}\n")
    client = sqltrack.AsyncClient()
    try:
        assert client.engine == "sqlite"
        await client.execute("SELECT 1")
    finally:
        await client.close()
    assert dbpath.is_file()


async def test_pg_schema_setting_applies(pg_dsn, pg_schema):
    from support.helpers import pg_params

    params = pg_params(pg_dsn)
    client = sqltrack.AsyncClient({"engine": "postgres", **params}, schema=pg_schema)
    try:
        assert (await client.execute("SELECT current_schema()")) == [(pg_schema,)]
        rows = await client.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = 'runs'",
            [pg_schema],
        )
        assert rows == [("runs",)]
    finally:
        await client.close()


async def test_pool_max_size_bounds_connections(client_kwargs):
    """With pool_max_size=1 and a short timeout, a second task waiting for a
    connection while the first holds it gets PoolTimeout (both engines)."""
    import asyncio

    client = sqltrack.AsyncClient(**client_kwargs, pool_max_size=1, pool_timeout=0.5)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder():
        async with client:
            holding.set()
            await release.wait()

    async def waiter():
        await holding.wait()
        try:
            with pytest.raises(sqltrack.PoolTimeout):
                await client.execute("SELECT 1")
        finally:
            release.set()

    try:
        await asyncio.gather(holder(), waiter())
        assert await client.execute("SELECT 1") == [(1,)]
    finally:
        await client.close()


def test_engine_aliases_and_a_dbpath_alone_mean_what_they_say(monkeypatch, tmp_path):
    from sqltrack import config

    for name in [n for n in os.environ if n.startswith("SQLTRACK_DSN_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("SQLTRACK_CONFIG_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert config.resolve(engine="postgresql").engine == "postgres"
    assert config.resolve(engine="SQLite3").engine == "sqlite"
    assert config.resolve(dbpath="x.db").engine == "sqlite"  # no engine anywhere: a file
    assert config.resolve(dbpath="x.db", engine="postgres").engine == "postgres"
    assert config.resolve().engine == "postgres" and not config.resolve().configured
    assert not config.is_configured() and config.is_configured(host="db")
    monkeypatch.setenv("SQLTRACK_DSN_HOST", "db")
    assert config.is_configured() and config.resolve().configured
    monkeypatch.delenv("SQLTRACK_DSN_HOST")
    (tmp_path / "sqltrack.conf").write_text("engine=sqlite\n")
    assert config.is_configured()


# -- config files: who may write them, which server they name ----------------------------
@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620, 0o777])
def test_a_config_file_others_may_write_is_refused(tmp_path, mode):
    conf = write(tmp_path / "shared.conf", "host=evil.example\npassword=x\n")
    conf.chmod(mode)
    with pytest.raises(config.ConfigFileError) as refused:
        config.resolve(conf)
    message = str(refused.value)
    assert str(conf) in message and f"chmod go-w {conf}" in message
    writers = {0o020: "its group", 0o002: "others", 0o022: "its group and others"}
    assert f"is writable by {writers[mode & 0o022]} (mode {mode:04o})" in message
    assert isinstance(refused.value, ValueError)


def test_a_writable_default_or_env_file_is_refused_too(monkeypatch, tmp_path):
    write(tmp_path / "sqltrack.conf", "engine=sqlite\ndbpath=cwd.db\n").chmod(0o666)
    with pytest.raises(config.ConfigFileError, match="chmod go-w .*sqltrack.conf"):
        config.resolve()
    (tmp_path / "sqltrack.conf").chmod(0o644)
    assert config.resolve().params == {"dbpath": "cwd.db"}
    env_file = write(tmp_path / "env.conf", "engine=sqlite\ndbpath=env.db\n")
    env_file.chmod(0o642)
    monkeypatch.setenv("SQLTRACK_CONFIG_PATH", str(env_file))
    with pytest.raises(config.ConfigFileError, match="env.conf"):
        config.resolve()


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640, 0o400])
def test_a_config_file_only_its_owner_writes_is_read(tmp_path, mode):
    conf = write(tmp_path / "mine.conf", "engine=sqlite\ndbpath=mine.db\n")
    conf.chmod(mode)
    assert config.resolve(conf).params == {"dbpath": "mine.db"}


@pytest.mark.parametrize("text, named", [
    ("host=db.example\n", "host=db.example"),
    ("hostaddr=10.1.2.3\nport=5433\n", "hostaddr=10.1.2.3"),
    ("service=prod\n", "service=prod"),
    ("dbname=postgresql://bob@db.example:5433/exp\n", "host=db.example"),
    ("conninfo=host=db.example dbname=exp\n", "host=db.example"),
])
def test_a_config_file_naming_a_server_is_announced_with_its_path(tmp_path, text, named):
    conf = write(tmp_path / "sqltrack.conf", text)
    with pytest.warns(config.ConfigFileHost) as caught:
        settings = config.resolve()
    (warning,) = caught
    assert str(warning.message) == (
        f"sqltrack: connection settings from config file {conf} ({named})")
    assert settings.config_file == str(conf)
    assert config.file_notice(settings) == str(warning.message).removeprefix("sqltrack: ")


def test_no_announcement_without_a_server_from_the_file(recwarn, monkeypatch, tmp_path):
    conf = write(tmp_path / "a.conf", "dbname=exp\nuser=bob\n")
    assert config.resolve(conf).config_file == str(conf)
    sqlite = write(tmp_path / "s.conf", "engine=sqlite\ndbpath=x.db\nhost=ignored\n")
    assert config.resolve(sqlite).config_host is None
    named = write(tmp_path / "h.conf", "host=db.example\n")
    assert config.resolve(named, host="other.example").config_host is None  # overridden
    monkeypatch.setenv("SQLTRACK_DSN_HOST", "mine.example")
    assert config.resolve(named).config_host is None
    assert config.resolve({"host": "db.example"}).config_file is None  # a dict: no file
    assert not [w for w in recwarn if issubclass(w.category, config.ConfigFileHost)]


def test_client_and_cli_name_the_config_file_of_their_server(pg_dsn, pg_schema, tmp_path):
    """A ./sqltrack.conf naming a server: ``Client()`` warns with its path, the command
    prints it as one line before anything else; writable by others, both refuse it."""
    import subprocess
    import sys

    from support.helpers import pg_params

    params = pg_params(pg_dsn)
    lines = "".join(f"{k}={v}\n" for k, v in params.items() if k != "schema")
    conf = write(tmp_path / "sqltrack.conf", f"engine=postgres\n{lines}schema={pg_schema}\n")
    conf.chmod(0o600)
    named = next(f"{k}={params[k]}" for k in config.HOST_KEYS if k in params)
    notice = f"sqltrack: connection settings from config file {conf} ({named})"
    with pytest.warns(config.ConfigFileHost) as caught:
        client = sqltrack.Client()
    try:
        assert [str(w.message) for w in caught] == [notice]
        assert client.execute("SELECT current_schema()") == [(pg_schema,)]
    finally:
        client.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLTRACK_")}
    done = subprocess.run([sys.executable, "-m", "sqltrack", "setup"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == notice
    assert "Warning" not in done.stderr
    conf.chmod(0o660)
    with pytest.raises(config.ConfigFileError, match="chmod go-w"):
        sqltrack.Client()
    done = subprocess.run([sys.executable, "-m", "sqltrack", "runs"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == (
        f"sqltrack: error: config file '{conf}' is writable by its group (mode 0660), who "
        "could send your password to a server of theirs: sqltrack does not read it; run "
        f"'chmod go-w {conf}'\n")
