"""Command-line argument detection (``args='auto'``): sqltrack.args.parse_args rules."""

from __future__ import annotations

import sys

import pytest
from support.helpers import json_value, read_raw

import sqltrack
from sqltrack.args import detect_args, is_launcher, parse_args, parse_value


# -- option forms ------------------------------------------------------------------------------
def test_empty():
    assert parse_args([]) == {}


def test_long_option_with_equals():
    assert parse_args(["--lr=0.1"]) == {"lr": 0.1}


def test_long_option_with_separate_value():
    assert parse_args(["--lr", "0.1", "--epochs", "10"]) == {"lr": 0.1, "epochs": 10}


def test_short_option_with_value():
    assert parse_args(["-n", "5", "-m=x"]) == {"n": 5, "m": "x"}


def test_flag_before_option_or_at_end():
    assert parse_args(["--fast", "--lr", "1", "--verbose"]) == {
        "fast": True,
        "lr": 1,
        "verbose": True,
    }
    assert parse_args(["-v"]) == {"v": True}


def test_dashes_in_names_become_underscores():
    assert parse_args(["--learning-rate", "0.5", "--use-amp", "--x-y-z=1"]) == {
        "learning_rate": 0.5,
        "use_amp": True,
        "x_y_z": 1,
    }


def test_last_occurrence_wins():
    assert parse_args(["--lr", "1", "--lr=2"]) == {"lr": 2}


def test_equals_value_may_contain_equals_and_be_empty():
    assert parse_args(["--expr=a=b", "--empty="]) == {"expr": "a=b", "empty": ""}


# -- values --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, value",
    [
        ("0.1", 0.1),
        ("3", 3),
        ("-3", -3),
        ("1e-3", 0.001),
        ("true", True),
        ("false", False),
        ("null", None),
        ("True", True),
        ("False", False),
        ("None", None),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ('"quoted"', "quoted"),
        ("hello", "hello"),
        ("resnet50", "resnet50"),
        ("/path/to/data", "/path/to/data"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e999", "1e999"),
        ("inf", "inf"),
        ("[1, 2", "[1, 2"),
        ("", ""),
        ("TRUE", "TRUE"),
    ],
)
def test_parse_value(text, value):
    result = parse_value(text)
    assert result == value
    assert type(result) is type(value)


def test_values_through_options():
    assert parse_args(["--a", "true", "--b=None", "--c", "[1, 2]", "--d", "{\"k\": [true]}"]) == {
        "a": True,
        "b": None,
        "c": [1, 2],
        "d": {"k": [True]},
    }


def test_non_finite_values_stay_strings():
    assert parse_args(["--x", "NaN", "--y=Infinity", "--z", "-Infinity"]) == {
        "x": "NaN",
        "y": "Infinity",
        "z": "-Infinity",
    }


def test_negative_numbers_are_values_not_options():
    assert parse_args(["--lr", "-0.1", "--shift", "-3", "-5"]) == {
        "lr": -0.1,
        "shift": -3,
        "_": [-5],
    }
    assert parse_args(["--min", "-1e-3"]) == {"min": -0.001}


# -- positionals and "--" ------------------------------------------------------------------------
def test_positionals_in_order():
    assert parse_args(["train", "--lr", "1", "data.csv", "3"]) == {
        "lr": 1,
        "_": ["train", "data.csv", 3],
    }


def test_option_takes_one_word_then_positionals():
    # "--opt word": the word is the option's value (the rule has no notion of flags)
    assert parse_args(["--model", "resnet", "extra"]) == {"model": "resnet", "_": ["extra"]}


def test_single_dash_is_positional():
    assert parse_args(["-", "--x", "1"]) == {"x": 1, "_": ["-"]}


def test_double_dash_ends_options():
    assert parse_args(["--a", "1", "--", "--b", "2", "-c", "word"]) == {
        "a": 1,
        "_": ["--b", 2, "-c", "word"],
    }


def test_double_dash_after_flag():
    assert parse_args(["--flag", "--", "x"]) == {"flag": True, "_": ["x"]}


def test_double_dash_at_end():
    assert parse_args(["pos", "--"]) == {"_": ["pos"]}


def test_double_dash_keeps_earlier_positionals_first():
    assert parse_args(["first", "--", "second"]) == {"_": ["first", "second"]}


def test_argv_not_modified():
    argv = ["--a", "1", "x"]
    parse_args(argv)
    assert argv == ["--a", "1", "x"]


def test_detect_args_uses_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["script.py", "--epochs=3", "input"])
    assert detect_args() == {"epochs": 3, "_": ["input"]}
    monkeypatch.setattr(sys, "argv", ["script.py"])
    assert detect_args() == {}


# -- through a run, on both engines -------------------------------------------------------------
async def stored_args(client, run_id):
    rows = await client.query("SELECT args FROM runs WHERE id = %s", [run_id])
    return json_value(rows[0][0])


async def test_run_add_args_auto(client, run, monkeypatch):
    monkeypatch.setattr(
        sys,
        "argv",
        ["train.py", "--learning-rate", "0.01", "--amp", "--layers=[64, 64]", "--name",
         "run one", "data", "--", "--raw"],
    )
    assert await run.add_args("auto") is run
    assert await stored_args(client, run.id) == {
        "learning_rate": 0.01,
        "amp": True,
        "layers": [64, 64],
        "name": "run one",
        "_": ["data", "--raw"],
    }
    monkeypatch.setattr(sys, "argv", ["train.py", "--amp=false", "--seed", "1"])
    await run.add_args()  # merges: later values win, other keys stay
    assert await stored_args(client, run.id) == {
        "learning_rate": 0.01,
        "amp": False,
        "layers": [64, 64],
        "name": "run one",
        "_": ["data", "--raw"],
        "seed": 1,
    }


async def test_run_set_args_auto(client, run, monkeypatch):
    await run.add_args({"old": 1})
    monkeypatch.setattr(sys, "argv", ["train.py", "--new", "2"])
    await run.set_args("auto")
    assert await stored_args(client, run.id) == {"new": 2}
    monkeypatch.setattr(sys, "argv", ["train.py"])
    await sqltrack.run_set_args(client, run.id, "auto")  # nothing detected: nothing done
    assert await stored_args(client, run.id) == {"new": 2}


async def test_run_add_args_auto_without_args(client, run, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    await run.add_args("auto")
    assert await stored_args(client, run.id) is None


# -- launchers whose argv is not the user's -------------------------------------------------------
KERNEL_JSON = "/root/.local/share/jupyter/runtime/kernel-0f3e.json"


@pytest.mark.parametrize("argv", [
    ["/venv/lib/python3.11/site-packages/ipykernel_launcher.py", "-f", "/tmp/tmpa1b2c3.json"],
    ["/venv/lib/python3.11/site-packages/ipykernel_launcher.py", "-f", KERNEL_JSON],
    ["/venv/lib/python3.11/site-packages/ipykernel/__main__.py", "-f", KERNEL_JSON],
    ["/usr/local/lib/python3.10/dist-packages/colab_kernel_launcher.py", "-f", KERNEL_JSON],
    ["/venv/lib/python3.11/site-packages/spyder_kernels/console/__main__.py", "-f",
     KERNEL_JSON],
    ["/venv/bin/ipython", "--no-banner"],
    ["/opt/pycharm/plugins/python/helpers/pydev/pydevconsole.py", "--mode=client",
     "--port=41234"],
    ["/opt/other/some_kernel.py", "--ip=127.0.0.1", "-f", KERNEL_JSON],
    ["C:\\Python311\\Lib\\site-packages\\ipykernel_launcher.py", "-f", "C:\\x\\kernel-1.json"],
], ids=["ipykernel-tmp", "ipykernel-runtime", "python-m-ipykernel", "colab", "spyder",
        "ipython", "pycharm-console", "unknown-with-connection-file", "windows"])
def test_launcher_argv_records_nothing(argv, monkeypatch):
    assert is_launcher(argv)
    monkeypatch.setattr(sys, "argv", argv)
    assert detect_args() == {}


@pytest.mark.parametrize("argv, expected", [
    (["train.py", "--lr", "0.1"], {"lr": 0.1}),
    (["train.py", "-f", "config.yaml"], {"f": "config.yaml"}),
    (["train.py", "-f", "settings.json"], {"f": "settings.json"}),
    (["train.py", "-f", "/tmp/tmpab12.json"], {"f": "/tmp/tmpab12.json"}),
    (["/home/me/ipython_notes/train.py", "--epochs", "3"], {"epochs": 3}),
    (["/home/me/proj/__main__.py", "--x", "1"], {"x": 1}),
    (["-c", "--lr", "2"], {"lr": 2}),
], ids=["script", "short-f-yaml", "short-f-json-in-cwd", "short-f-json-in-tmp",
        "folder-named-like-launcher",
        "python-m-own-package", "python-c"])
def test_user_scripts_are_not_launchers(argv, expected):
    assert not is_launcher(argv)
    assert detect_args(argv) == expected


async def test_run_add_args_auto_in_a_kernel_stores_nothing(client, run, client_kwargs,
                                                            monkeypatch):
    monkeypatch.setattr(sys, "argv", [
        "/venv/lib/python3.11/site-packages/ipykernel_launcher.py", "-f", "/tmp/tmpx1.json"])
    await run.add_args()
    (stored,), = read_raw(client_kwargs, "SELECT args FROM runs WHERE id = %s", [run.id])
    assert json_value(stored) in (None, {})


async def test_run_add_args_auto_masks_secrets(client, run, monkeypatch):
    monkeypatch.setattr(
        sys, "argv",
        ["train.py", "--hf-token", "hf_abc123", "--api-key=sk-1", "--password", "--lr", "0.1",
         "--db-pass", "1234", "--cfg", '{"secret": "x9", "n": 1}',
         "--url", "postgresql://u:pw9@h/d", "https://ghp_tok9@github.com/o/r"],
    )
    await run.add_args("auto")
    stored = await stored_args(client, run.id)
    assert stored == {
        "hf_token": "***", "api_key": "***", "password": True, "lr": 0.1, "db_pass": "***",
        "cfg": {"secret": "***", "n": 1}, "url": "postgresql://u:***@h/d",
        "_": ["https://***@github.com/o/r"],
    }
    await run.remove_args("auto")  # the detected names are the same, masked or not
    assert await stored_args(client, run.id) == {}
    monkeypatch.setattr("sqltrack.environment.MASK_RULE", False)
    await run.set_args("auto")
    assert (await stored_args(client, run.id))["hf_token"] == "hf_abc123"
