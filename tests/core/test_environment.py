"""``env='auto'`` stores the environment with credentials masked (sqltrack.environment)."""

from __future__ import annotations

import os

import pytest
from support.helpers import json_value

import sqltrack
from sqltrack import environment
from sqltrack.environment import captured_environment, mask_environment, mask_passwords

SECRETS = {
    "PGPASSWORD": "pg-secret-1",
    "SQLTRACK_DSN_PASSWORD": "dsn-secret-2",
    "db_passwd": "secret-3",
    "GITHUB_TOKEN": "ghp_secret4",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-5",
    "OPENAI_API_KEY": "sk-secret-6",
    "MY_ACCESS_KEY_ID": "secret-7",
    "SSH_PRIVATE_KEY": "-----BEGIN secret-8",
    "GOOGLE_APPLICATION_CREDENTIALS": "/keys/secret-9.json",
    "Some_Secret_Thing": "secret-10",
}
DSNS = {
    "DATABASE_URL": ("postgresql://alice:url-secret-11@db.example:5432/app",
                     "postgresql://alice:***@db.example:5432/app"),
    "REDIS_URL": ("redis://:p@ss:w0rd-12@cache:6379/0", "redis://:***@cache:6379/0"),
    "LIBPQ_DSN": ("host=db user=bob password=kv-secret-13 dbname=app",
                  "host=db user=bob password=*** dbname=app"),
    "QUOTED_DSN": ("host=db password='sp ace secret-14' port=5432",
                   "host=db password=*** port=5432"),
    "OPTS": ("--db-url=mysql://u:secret-15@h/d --sslpassword=secret-16",
             "--db-url=mysql://u:***@h/d --sslpassword=***"),
}
PLAIN = {
    "PLAIN_URL": "https://example.org/path?q=1",
    "PLAIN_DSN": "postgresql://alice@db.example/app",
    "LR": "0.1",
}


#: Variables the test process keeps (none of them secret by name).
KEEP = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
        "SQLTRACK_TEST_PG_DSN", "PYTEST_CURRENT_TEST")


@pytest.fixture
def environ(monkeypatch):
    for name in list(os.environ):
        if name not in KEEP:
            monkeypatch.delenv(name)
    for name, value in {**SECRETS, **{k: v for k, (v, _) in DSNS.items()}, **PLAIN}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def expected_masked() -> dict[str, str]:
    kept = {k: mask_passwords(v) for k, v in os.environ.items() if k in KEEP}
    return {**kept, **dict.fromkeys(SECRETS, "***"), **{k: m for k, (_, m) in DSNS.items()},
            **PLAIN}


def test_default_rule_masks_secret_names_and_dsn_passwords(environ):
    captured = captured_environment()
    assert captured == expected_masked()
    text = repr(captured)
    for number in range(1, 17):
        assert f"secret-{number}" not in text and "secret4" not in text


def test_rule_off_and_own_rule(environ):
    assert captured_environment(False) == dict(os.environ)
    own = captured_environment(lambda name, value: name == "LR")
    assert own["LR"] == "***"
    assert own["PGPASSWORD"] == "pg-secret-1"  # the own rule replaces the name rule
    assert own["DATABASE_URL"] == DSNS["DATABASE_URL"][1]  # URL passwords are still masked
    with pytest.raises(TypeError, match="'yes'"):
        captured_environment("yes")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgres://u:p%40ss@h/d", "postgres://u:***@h/d"),
        ("a=1 PASSWORD = x1 b=2", "a=1 PASSWORD = *** b=2"),
        ("https://h/api?password=x2&x=1", "https://h/api?password=***&x=1"),
        ("amqp://u:p1@h1,amqp://u:p2@h2", "amqp://u:***@h2"),  # too much, never too little
        ("postgres://u@h:5432/d", "postgres://u@h:5432/d"),
        ("nothing here", "nothing here"),
    ],
)
def test_mask_passwords(text, masked):
    assert mask_passwords(text) == masked


def test_undecodable_environment_bytes_are_kept_as_escapes():
    raw = "caf\udce9"  # os.environ's view of the byte 0xE9 in a UTF-8 locale
    assert mask_environment({"NAME": raw}) == {"NAME": "caf\\xe9"}
    assert mask_environment({"NAME": raw}, False) == {"NAME": "caf\\xe9"}


async def stored_env(client, run) -> dict:
    rows = await client.query("SELECT env FROM runs WHERE id = %s", [run.id])
    return json_value(rows[0][0])


async def test_env_auto_is_stored_masked(client, run, environ):
    await run.add_env()
    assert await stored_env(client, run) == expected_masked()
    await run.set_env({"only": "this"})
    await sqltrack.run_set_env(client, run.id, "auto")
    assert await stored_env(client, run) == expected_masked()
    await run.remove_env()  # 'auto': the same names
    assert await stored_env(client, run) == {}


async def test_mask_rule_setting(client, run, environ, monkeypatch):
    monkeypatch.setattr(environment, "MASK_RULE", False)
    await run.set_env()
    assert await stored_env(client, run) == dict(os.environ)
    monkeypatch.setattr(environment, "MASK_RULE", lambda name, value: name == "LR")
    await run.set_env()
    stored = await stored_env(client, run)
    assert stored["LR"] == "***" and stored["PGPASSWORD"] == "pg-secret-1"
    assert stored["DATABASE_URL"] == DSNS["DATABASE_URL"][1]


async def test_a_dict_is_stored_as_given(client, run):
    await run.set_env({"PGPASSWORD": "given"})
    assert await stored_env(client, run) == {"PGPASSWORD": "given"}


def test_blocking_api_masks_too(client_kwargs, environ):
    client = sqltrack.Client(**client_kwargs)
    try:
        run = sqltrack.Experiment(client, name="env").get_run()
        run.add_env()
        env = sqltrack.Run(client, run.experiment_id, run.id)
        p = "?" if client.engine == "sqlite" else "%s"
        rows = client.execute(f"SELECT env FROM runs WHERE id = {p}", [env.id])
        assert json_value(rows[0][0]) == expected_masked()
    finally:
        client.close()


# -- the one rule for env='auto' and args='auto': a table of realistic secrets -----------------
#: (name, value, stored): a variable NAME=value, and the option --name value, are stored so.
SECRET_TABLE = [
    ("MYSQL_PWD", "s-1", "***"),
    ("DB_PASS", "s-2", "***"),
    ("db-pass", "s-2b", "***"),
    ("AUTHORIZATION", "Bearer s-3", "***"),
    ("HTTP_AUTH", "basic s-3b", "***"),
    ("hf-token", "hf_s4", "***"),
    ("api-key", "sk-s5", "***"),
    ("apikey", "s-5b", "***"),
    ("password", "s-6", "***"),
    ("secret", "s-7", "***"),
    ("AZURE_STORAGE_ACCOUNT_KEY", "s-8==", "***"),
    ("SESSION_COOKIE", "s-8b", "***"),
    ("AZURE_STORAGE_CONNECTION_STRING",
     "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=s9+/A==;EndpointSuffix=core",
     "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core"),
    ("SERVICE_BUS", "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s-10=",
     "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=***"),
    ("BLOB_URL", "https://a.blob.core.windows.net/c?sv=1&sig=s-11%3D&se=2",
     "https://a.blob.core.windows.net/c?sv=1&sig=***&se=2"),
    ("REPO_URL", "https://ghp_s12@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("GIT_REMOTE", "git+ssh://glpat-s13aaaaaaaaaaaaaaaaa@gitlab.example/r",
     "git+ssh://***@gitlab.example/r"),
    ("db-url", "mysql://u:s-14@h/d", "mysql://u:***@h/d"),
    ("WEBHOOK", "https://h/hook?token=s-15&x=1", "https://h/hook?token=***&x=1"),
    ("GPG_PASSPHRASE", "s-17", "***"),
    ("ssh-key-passphrase", "s-18", "***"),
    ("GITHUB_PAT", "ghp_s19", "***"),
    # not secrets: kept
    ("PASSPORT_DIR", "/data/p", "/data/p"),
    ("AUTHOR", "Ada", "Ada"),
    ("max-tokens", "512", "512"),
    ("TOKENIZER", "gpt2", "gpt2"),
    ("PATH_PREFIX", "/opt", "/opt"),
    ("PATTERN", "*.py", "*.py"),
    ("MY_ACCESSTOKEN", "s-16", "***"),
    ("PG_URL", "postgresql://alice@db/app", "postgresql://alice@db/app"),
    ("SSH_URL", "ssh://git@github.com/o/r", "ssh://git@github.com/o/r"),
]


@pytest.mark.parametrize(("name", "value", "stored"), SECRET_TABLE,
                         ids=[row[0] for row in SECRET_TABLE])
def test_secret_table_env_and_args(name, value, stored):
    from sqltrack.args import parse_args
    from sqltrack.environment import mask_args, mask_value

    assert mask_value(name, value) == stored
    assert mask_environment({name: value}) == {name: stored}
    args = mask_args(parse_args([f"--{name}", value]))
    key = name.replace("-", "_")
    expected = stored if stored == "***" or stored != value else parse_args([value])["_"][0]
    assert args == {key: expected}
    assert mask_args(parse_args([f"--{name}={value}"])) == {key: expected}
