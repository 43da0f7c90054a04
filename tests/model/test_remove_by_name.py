"""remove_args / remove_env / remove_extras / remove_tags take names, as 0.1.4 did.

One name (never its characters), several names, iterables of names, dicts (their
keys), None, and ``'auto'`` for args/env (the detected names); a bad name raises
with nothing changed. Every form on both engines, async and blocking API, methods
and module functions, read back with the raw driver.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from support.helpers import json_value, read_raw

import sqltrack
import sqltrack_sync

pytestmark = pytest.mark.usefixtures("clean_env")

#: Stored in every column before each removal; "l" and "r" catch a str split into characters.
KEYS = ("lr", "bs", "l", "r", "auto", "x")
#: The names os.environ / sys.argv hold for 'auto' (set up by the ``detected`` fixture).
DETECTED = {"args": {"lr", "x"}, "env": {"lr", "x"}}
FIELDS = ("args", "env", "extras", "tags", "experiment_tags")


def _forms(field: str, via: str) -> list[tuple[tuple, set[str]]]:
    """(arguments of the remove call, names it removes) for ``field``."""
    auto = DETECTED.get(field) if field in ("args", "env") else None
    forms: list[tuple[tuple, set[str]]] = [
        (("lr",), {"lr"}),
        (("lr", "bs"), {"lr", "bs"}),
        ((["lr", "bs"],), {"lr", "bs"}),
        ((("lr", "bs"),), {"lr", "bs"}),
        (({"lr", "bs"},), {"lr", "bs"}),
        (((name for name in ("lr", "bs")),), {"lr", "bs"}),
        (({"lr": 0, "bs": 1},), {"lr", "bs"}),
        ((["auto"],), {"auto"}),  # inside a list, 'auto' is just a name
        (("lr", ["bs"], {"x": 1}, None), {"lr", "bs", "x"}),
        (("not-there",), set()),
        ((None,), set()),
        (("auto",), auto if auto is not None else {"auto"}),
    ]
    if via == "method" and auto is not None:
        forms.append(((), auto))  # Run.remove_args() / remove_env(): 'auto' by default
    else:
        forms.append(((), set()))
    return forms


BAD = [("lr", 5), (["lr", 5],), (b"lr",), ({1: "a"},), (5,), ("l\x00r",), ([["lr"]],)]


@pytest.fixture
def detected(monkeypatch):
    """sys.argv and os.environ give 'auto' the names lr and x (besides the real env)."""
    monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "0.1", "--x", "3"])
    monkeypatch.setenv("lr", "0.1")
    monkeypatch.setenv("x", "3")
    for name in KEYS:
        if name not in ("lr", "x"):
            monkeypatch.delenv(name, raising=False)


def _stored(kw: dict[str, Any], field: str, obj_id: int) -> set[str]:
    table, column = ("experiments", "tags") if field == "experiment_tags" else ("runs", field)
    rows = read_raw(kw, f"SELECT {column} FROM {table} WHERE id = %s", [obj_id])
    return set(json_value(rows[0][0]) or {})


def _remover(api: Any, field: str, via: str, client: Any, obj: Any):
    if via == "method":
        name = "remove_tags" if field == "experiment_tags" else f"remove_{field}"
        return getattr(obj, name)
    name = "experiment_remove_tags" if field == "experiment_tags" else f"run_remove_{field}"
    function = getattr(api, name)
    return lambda *args: function(client, obj.id, *args)


async def _async_fill(field: str, obj: Any) -> None:
    if field in ("tags", "experiment_tags"):
        await obj.set_tags(*KEYS)
    else:
        await getattr(obj, f"set_{field}")({k: 1 for k in KEYS})


def _sync_fill(field: str, obj: Any) -> None:
    if field in ("tags", "experiment_tags"):
        obj.set_tags(*KEYS)
    else:
        getattr(obj, f"set_{field}")({k: 1 for k in KEYS})


@pytest.mark.parametrize("via", ["method", "function"])
@pytest.mark.parametrize("field", FIELDS)
async def test_async_remove_forms(client, client_kwargs, experiment, field, via, detected):
    for args, removed in _forms(field, via):
        obj = experiment if field == "experiment_tags" else await experiment.get_run()
        await _async_fill(field, obj)
        result = await _remover(sqltrack, field, via, client, obj)(*args)
        if via == "method":
            assert result is obj
        assert _stored(client_kwargs, field, obj.id) == set(KEYS) - removed, args


@pytest.mark.parametrize("via", ["method", "function"])
@pytest.mark.parametrize("field", FIELDS)
def test_sync_remove_forms(client_kwargs, field, via, detected):
    client = sqltrack_sync.Client(**client_kwargs)
    try:
        experiment = sqltrack_sync.Experiment(client, name="remove-by-name")
        for args, removed in _forms(field, via):
            obj = experiment if field == "experiment_tags" else experiment.get_run()
            _sync_fill(field, obj)
            result = _remover(sqltrack_sync, field, via, client, obj)(*args)
            if via == "method":
                assert result is obj
            assert _stored(client_kwargs, field, obj.id) == set(KEYS) - removed, args
    finally:
        client.close()


@pytest.mark.parametrize("field", FIELDS)
async def test_async_bad_names_change_nothing(client, client_kwargs, experiment, field):
    obj = experiment if field == "experiment_tags" else await experiment.get_run()
    await _async_fill(field, obj)
    for via in ("method", "function"):
        remove = _remover(sqltrack, field, via, client, obj)
        for args in BAD:
            with pytest.raises((TypeError, ValueError)):
                await remove(*args)
            assert _stored(client_kwargs, field, obj.id) == set(KEYS), args


@pytest.mark.parametrize("field", FIELDS)
def test_sync_bad_names_change_nothing(client_kwargs, field):
    client = sqltrack_sync.Client(**client_kwargs)
    try:
        experiment = sqltrack_sync.Experiment(client, name="remove-bad")
        obj = experiment if field == "experiment_tags" else experiment.get_run()
        _sync_fill(field, obj)
        for via in ("method", "function"):
            remove = _remover(sqltrack_sync, field, via, client, obj)
            for args in BAD:
                with pytest.raises((TypeError, ValueError)):
                    remove(*args)
                assert _stored(client_kwargs, field, obj.id) == set(KEYS), args
    finally:
        client.close()


def test_sync_spec_keyword_forms(client_kwargs, detected):
    """The spec's keyword forms ``remove_args(args=...)`` / ``remove_env(env=...)`` work."""
    client = sqltrack.Client(**client_kwargs)
    try:
        run = sqltrack.Experiment(client, name="kw").get_run()
        run.set_args({k: 1 for k in KEYS}).set_env({k: 1 for k in KEYS})
        run.remove_args(args={"bs": 0}).remove_env(env="auto")
        assert _stored(client_kwargs, "args", run.id) == set(KEYS) - {"bs"}
        assert _stored(client_kwargs, "env", run.id) == set(KEYS) - DETECTED["env"]
    finally:
        client.close()


async def test_remove_from_missing_run_raises(client):
    with pytest.raises(sqltrack.RunNotFound):
        await sqltrack.run_remove_args(client, 987654, "lr")
