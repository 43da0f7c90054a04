"""The wandb-style module (``import sqltrack.wandb as wandb``), both engines."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import pytest
from support.helpers import json_value, read_raw
from support.integration_helpers import run_example, sigterm_after_rows

import sqltrack
import sqltrack.wandb as wandb


@pytest.fixture(autouse=True)
def restore_sigterm():
    """A started run makes SIGTERM raise sqltrack.Terminated; the test runner's handler
    comes back afterwards."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture
def client(client_kwargs):
    c = sqltrack.Client(**client_kwargs)
    yield c
    if wandb.run is not None:
        wandb.finish()
    c.close()


def metric_rows(client_kwargs, run_id, columns: str):
    return read_raw(client_kwargs, f"SELECT step, {columns} FROM metrics WHERE run_id = %s "
                    "ORDER BY step", [run_id])


def test_a_wandb_script(client, client_kwargs):
    run = wandb.init(project="mnist", name="baseline", config=argparse.Namespace(lr=0.1),
                     tags=["cnn", "small"], notes="first try", client=client, group="g1")
    assert wandb.run is run and wandb.config is run.config and run.project == "mnist"
    for i in range(3):
        wandb.log({"train/loss": 1.0 / (i + 1), "nested": {"acc": 0.5}})
    wandb.config.update({"epochs": 3})
    wandb.config.batch = 32
    assert wandb.config.lr == 0.1 and wandb.config["epochs"] == 3
    wandb.summary["best"] = 0.97
    run_id = run.id
    wandb.finish()
    assert wandb.run is None
    name, status, args, tags, comment, extras = read_raw(
        client_kwargs, "SELECT e.name, r.status, r.args, r.tags, r.comment, r.extras FROM runs r "
        "JOIN experiments e ON e.id = r.experiment_id WHERE r.id = %s", [run_id])[0]
    assert (name, status, comment) == ("mnist", "COMPLETED", "first try")
    assert json_value(args) == {"lr": 0.1, "epochs": 3, "batch": 32}
    assert json_value(tags) == {"cnn": True, "small": True}
    extras = json_value(extras)
    assert extras["name"] == "baseline" and extras["group"] == "g1"
    assert extras["metric_names"] == {"train__loss": "train/loss", "nested__acc": "nested/acc"}
    assert extras["summary"] == {"train/loss": 1 / 3, "nested/acc": 0.5, "best": 0.97}
    assert metric_rows(client_kwargs, run_id, "progress, train__loss") == [
        (0, 0.0, 1.0), (1, 0.0, 0.5), (2, 0.0, 1 / 3)]


def test_step_rules(client, client_kwargs):
    """wandb's rules: commit=False merges, step= merges until a later step or commit."""
    run = wandb.init(project="steps", client=client)
    wandb.log({"a": 1})                     # step 0, committed
    wandb.log({"b": 2}, commit=False)       # step 1, pending
    wandb.log({"c": 3})                     # step 1 with b, committed
    wandb.log({"a": 4}, step=5)             # step 5, pending
    wandb.log({"b": 5}, step=5)             # merged into 5
    wandb.log({"c": 6}, step=7)             # 5 written; 7 pending
    wandb.log({"a": 7}, step=3)             # below the current step: dropped
    wandb.log({"b": 8}, step=7, commit=True)  # 7 written, the next step is 8
    wandb.log({"a": 9}, commit=False)       # 8 pending, written by finish
    run_id = run.id
    wandb.finish()
    assert metric_rows(client_kwargs, run_id, "a, b, c") == [
        (0, 1.0, None, None), (1, None, 2.0, 3.0), (5, 4.0, 5.0, None),
        (7, None, 8.0, 6.0), (8, 9.0, None, None)]


def test_finish_exit_code_and_context_manager(client, client_kwargs):
    failed = wandb.init(project="codes", client=client)
    wandb.log({"x": 1})
    wandb.finish(exit_code=2)
    with pytest.raises(ZeroDivisionError):
        with wandb.init(project="codes", client=client) as raised:
            wandb.log({"x": 1 / 0})
    with wandb.init(project="codes", client=client) as fine:
        wandb.log({"x": 1})
    statuses = dict(read_raw(client_kwargs, "SELECT id, status FROM runs"))
    assert statuses == {failed.id: "FAILED", raised.id: "FAILED", fine.id: "COMPLETED"}


def test_resume_continues_the_run(client, client_kwargs, monkeypatch):
    first = wandb.init(project="resume", client=client)
    wandb.log({"loss": 1.0})
    wandb.finish()
    with pytest.raises(ValueError, match="no run '999'"):
        wandb.init(project="resume", id="999", resume="must", client=client)
    with pytest.raises(ValueError, match="no run '99999999999999999999'"):  # beyond bigint
        wandb.init(project="resume", id="99999999999999999999", resume="must", client=client)
    with pytest.raises(ValueError, match="exists already"):
        wandb.init(project="resume", id=first.id, resume="never", client=client)
    monkeypatch.setenv("SLURM_JOB_ID", str(first.id))
    again = wandb.init(project="resume", id="SLURM_JOB_ID", resume="must", client=client)
    assert again.id == first.id
    wandb.log({"loss": 0.5}, step=1)
    wandb.finish()
    assert read_raw(client_kwargs, "SELECT id FROM runs") == [(first.id,)]
    assert metric_rows(client_kwargs, first.id, "loss") == [(0, 1.0), (1, 0.5)]


def test_not_scalars_are_skipped(client, client_kwargs):
    run = wandb.init(project="media", client=client)
    wandb.log({"image": object(), "loss": 0.5})
    run_id = run.id
    wandb.finish()
    assert metric_rows(client_kwargs, run_id, "loss") == [(0, 0.5)]


def test_log_before_init_is_an_error():
    with pytest.raises(RuntimeError, match="init"):
        wandb.log({"x": 1})


def test_example_script(client_kwargs):
    out = run_example("wandb_style.py", client_kwargs, "--steps", "4")
    assert out.returncode == 0, out.stderr
    (run_id, status, args, extras), = read_raw(client_kwargs,
                                               "SELECT id, status, args, extras FROM runs")
    assert status == "COMPLETED" and f"run {run_id}: done" in out.stdout
    assert json_value(args)["steps"] == 4 and json_value(args)["optimizer"] == "sgd"
    assert json_value(extras)["metric_names"]["train__acc_1"] == "train/acc@1"
    assert [s for s, _ in metric_rows(client_kwargs, run_id, "train__loss")] == [0, 1, 2, 3]


def test_example_script_without_finish_and_crashing(client_kwargs):
    """No finish(): the run is stopped at exit, COMPLETED; a crash: FAILED, rows kept."""
    assert run_example("wandb_style.py", client_kwargs, "--steps", "2", "--no-finish"
                       ).returncode == 0
    crashed = run_example("wandb_style.py", client_kwargs, "--fail-at-step", "2")
    assert crashed.returncode == 1 and "on purpose" in crashed.stderr
    rows = read_raw(client_kwargs, "SELECT id, status, extras FROM runs ORDER BY id")
    assert [r[1] for r in rows] == ["COMPLETED", "FAILED"]
    assert "best_loss" in json_value(rows[0][2])["summary"]  # written at exit
    assert [s for s, _ in metric_rows(client_kwargs, rows[1][0], "train__loss")] == [0, 1]


def test_example_script_sigterm(client_kwargs):
    status, err = sigterm_after_rows("wandb_style.py", client_kwargs, 3, "--steps", "2000",
                                     "--step-sleep", "0.02", "--terminated", "PREEMPTED")
    assert status == 143, err
    assert read_raw(client_kwargs, "SELECT status FROM runs") == [("PREEMPTED",)]


# -- media, objects and wandb's semantics ------------------------------------------------
def table_rows_sql(engine: str, name: str) -> str:
    """The README's query of a logged wandb.Table's rows (one row per table row)."""
    if engine == "sqlite":
        return ("SELECT r.id, t.value FROM runs r, "
                f"json_each(r.extras, '$.tables.{name}.data') t WHERE r.id = %s ORDER BY t.key")
    return ("SELECT r.id, t.value FROM runs r, "
            f"jsonb_array_elements(r.extras->'tables'->'{name}'->'data') WITH ORDINALITY "
            "AS t(value, n) WHERE r.id = %s ORDER BY t.n")


def test_media_and_objects_are_stored_never_a_crash(client, client_kwargs, tmp_path, caplog):
    import numpy as np

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not really a video")
    run = wandb.init(project="media", client=client, dir=str(tmp_path))
    pixels = np.linspace(0, 1, 4 * 5 * 3).reshape(4, 5, 3)
    table = wandb.Table(columns=["x", "label"], data=[[1, "a"], [2, "b"]])
    table.add_data(3, "c")
    wandb.log({
        "examples": [wandb.Image(pixels, caption="first"), wandb.Image(pixels[..., 0])],
        "preds": table,
        "weights": wandb.Histogram(np.arange(101)),
        "binned": wandb.Histogram(np_histogram=([1, 3], [0.0, 1.0, 2.0])),
        "sound": wandb.Audio(np.zeros(800), sample_rate=8000),
        "movie": wandb.Video(str(clip)),
        "page": wandb.Html("<p>hi</p>"),
        "cloud": wandb.Object3D(np.zeros((5, 3))),
        "fig": wandb.Plotly({"data": [], "layout": {}}),
        "chart": wandb.plot.line(table, "x", "label", title="t"),
        "loss": 0.5,
    })
    with caplog.at_level("WARNING", logger="sqltrack"):
        wandb.log({"frames": wandb.Video(np.zeros((2, 3, 4, 4))), "odd": object()})
        wandb.log({"frames": wandb.Video(np.zeros((2, 3, 4, 4))), "odd": object()})
    artifact = wandb.Artifact("data", type="dataset", metadata={"rows": 3})
    artifact.add_file(clip)
    artifact.add_reference("s3://bucket/train.csv")
    run.log_artifact(artifact, aliases=["v1"])
    run_id = run.id
    wandb.finish()

    (status, extras), = read_raw(client_kwargs, "SELECT status, extras FROM runs")
    assert status == "COMPLETED"
    extras = json_value(extras)
    # one warning per kind and run, none of them fatal
    assert sum("(video)" in r.getMessage() for r in caplog.records) == 1
    assert sum("(object)" in r.getMessage() for r in caplog.records) == 1
    # Histogram: summary statistics as metrics under its name
    (count, low, high, mean, median, bins), = read_raw(
        client_kwargs, "SELECT weights__count, weights__min, weights__max, weights__mean, "
        "weights__p50, binned__count FROM metrics WHERE run_id = %s AND step = 0", [run_id])
    assert (count, low, high, mean, median, bins) == (101.0, 0.0, 100.0, 50.0, 50.0, 4.0)
    # Table: rows a user can query
    rows = [json_value(v) for _, v in read_raw(client_kwargs,
                                               table_rows_sql(client_kwargs["engine"], "preds"),
                                               [run_id])]
    assert rows == [[1, "a"], [2, "b"], [3, "c"]]
    assert extras["tables"]["preds"]["columns"] == ["x", "label"]
    assert extras["tables"]["chart"]["chart"] == {"type": "line", "x": "x", "y": "label",
                                                  "title": "t"}
    # files in the run's media folder, with references
    folder = tmp_path / "sqltrack-media" / str(run_id)
    assert run.dir == str(folder)
    media = extras["media"]
    assert [m["caption"] for m in media["examples"]] == ["first", None]
    for name, kind, suffix in [("examples", "image", ".png"), ("sound", "audio", ".wav"),
                               ("movie", "video", ".mp4"), ("page", "html", ".html"),
                               ("cloud", "object3d", ".json"), ("fig", "plotly", ".json")]:
        entry = media[name][0]
        path = Path(entry["path"])
        assert entry["type"] == kind and path.parent == folder and path.suffix == suffix
        assert path.stat().st_size == entry["size"] > 0 and entry["step"] == 0
    assert Path(media["examples"][0]["path"]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "frames" not in media
    # Artifact: a reference linked to the run
    (recorded,) = extras["artifacts"]
    assert (recorded["name"], recorded["type"], recorded["aliases"]) == ("data", "dataset",
                                                                         ["v1"])
    local, remote = recorded["files"]
    assert local["path"] == str(clip) and local["size"] == clip.stat().st_size
    assert local["digest"].startswith("sha256:") and remote["uri"] == "s3://bucket/train.csv"
    assert metric_rows(client_kwargs, run_id, "loss") == [(0, 0.5)]


def test_disabled_mode_writes_nothing(client, client_kwargs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for how in ("keyword", "env"):
        if how == "env":
            monkeypatch.setenv("WANDB_MODE", "disabled")
        run = (wandb.init(project="off", mode="disabled", client=client, config={"a": 1})
               if how == "keyword" else wandb.init(project="off", config={"a": 1}))
        wandb.define_metric("loss", summary="min")
        wandb.log({"loss": 1.0, "img": wandb.Image([[0, 1]])})
        wandb.config.update({"b": 2})
        wandb.summary["best"] = 1
        wandb.log_artifact(wandb.Artifact("x", type="data"))
        assert run.id is None and run.url is None and wandb.config.b == 2
        wandb.finish()
    # the given client was never even opened: no tables, no rows, no file in the folder
    if client_kwargs["engine"] == "sqlite":
        assert not Path(client_kwargs["dbpath"]).exists()
    else:
        assert read_raw(client_kwargs, "SELECT COUNT(*) FROM information_schema.tables "
                        "WHERE table_schema = %s", [client_kwargs["schema"]]) == [(0,)]
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_writes_locally_for_a_later_sync(client_kwargs, tmp_path, monkeypatch,
                                                      capsys):
    from sqltrack.cli import main

    local = tmp_path / "node"
    monkeypatch.setenv("SQLTRACK_DSN_ENGINE", "postgres")  # configured: offline still local
    monkeypatch.setenv("SQLTRACK_DSN_HOST", str(tmp_path / "nowhere"))
    run = wandb.init(project="offline", mode="offline", dir=str(local))
    wandb.log({"loss": 0.25})
    wandb.finish()
    err = capsys.readouterr().err
    database = local / "sqltrack.db"
    assert f"sqlite file {database}" in err and f"sqltrack sync --from {database}" in err
    for key in ("SQLTRACK_DSN_ENGINE", "SQLTRACK_DSN_HOST"):
        monkeypatch.delenv(key)
    options = [f"--option={k}={v}" for k, v in client_kwargs.items()]
    assert main([*options, "sync", "--from", str(database)]) == 0
    assert read_raw(client_kwargs, "SELECT id, status FROM runs") == [(run.id, "COMPLETED")]
    assert metric_rows(client_kwargs, run.id, "loss") == [(0, 0.25)]


def test_url_and_define_metric_summaries(client, client_kwargs):
    run = wandb.init(project="summary", client=client)
    assert run.url == f"http://127.0.0.1:8080/runs/{run.id}"
    wandb.define_metric("val/acc", summary="max")
    wandb.define_metric("loss", summary="min")
    wandb.define_metric("loss", summary="last")  # added to min, as wandb does
    wandb.define_metric("train/*", summary="mean")
    wandb.define_metric("noise", summary="none")
    wandb.define_metric("err", summary="best", goal="minimize")
    with pytest.raises(ValueError, match="goal"):
        wandb.define_metric("x", summary="best")
    for acc, loss in [(0.5, 3.0), (0.9, 1.0), (0.7, 2.0)]:
        wandb.log({"val/acc": acc, "loss": loss, "train/a": acc, "noise": 1, "err": loss,
                   "plain": loss})
    run_id = run.id
    wandb.finish()
    extras = json_value(read_raw(client_kwargs, "SELECT extras FROM runs WHERE id = %s",
                                 [run_id])[0][0])
    assert extras["summary"] == {"val/acc": {"max": 0.9}, "loss": {"min": 1.0, "last": 2.0},
                                 "train/a": {"mean": pytest.approx(0.7)},
                                 "err": {"min": 1.0}, "plain": 2.0}


def test_names_differing_only_in_case_are_both_kept(client, client_kwargs):
    run = wandb.init(project="case", client=client)
    wandb.log({"Loss": 1.0, "loss": 0.9})
    wandb.log({"Loss": 0.8, "loss": 0.7})
    run_id = run.id
    wandb.finish()
    status, extras = read_raw(client_kwargs, "SELECT status, extras FROM runs")[0]
    assert status == "COMPLETED"
    columns = {original: column for column, original in
               json_value(extras)["metric_names"].items()}
    assert set(columns) == {"Loss", "loss"} and columns["Loss"] == "Loss"
    assert metric_rows(client_kwargs, run_id, f'"Loss", "{columns["loss"]}"') == [
        (0, 1.0, 0.9), (1, 0.8, 0.7)]
    assert json_value(extras)["summary"] == {"Loss": 0.8, "loss": 0.7}
