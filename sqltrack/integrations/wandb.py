"""A wandb-style API over sqltrack, for scripts switching from Weights & Biases.

Change one line of a script written for wandb::

    import sqltrack.wandb as wandb          # was: import wandb

    run = wandb.init(project="mnist", name="baseline", config={"lr": 0.1}, tags=["cnn"],
                     notes="first try")
    for step in range(100):
        wandb.log({"train/loss": 1 / (step + 1)})
    wandb.config.update({"epochs": 3})
    wandb.summary["best_acc"] = 0.97
    wandb.finish()

``sqltrack.wandb`` is this module (``sqltrack.integrations.wandb``). Where it writes:

- ``init(project=, name=, config=, tags=, notes=, resume=, id=)``: ``project`` is
  the experiment (default ``"uncategorized"``), a new run of it is started
  (RUNNING); ``config`` (dict, ``argparse.Namespace``) is the run's ``args``,
  ``tags`` its tags, ``notes`` its comment, ``name``, ``group`` and ``job_type`` go
  into its ``extras``. ``id`` is a run id, or the name of an environment variable
  holding one (``"SLURM_JOB_ID"``): that run is continued (created when missing);
  ``resume="must"`` requires it to exist, ``resume="never"`` requires it not to.
  W&B's rewind and fork, with its syntax: ``resume_from="<run id>?_step=<k>"``
  continues that run after rewinding it to step ``k`` (``Run.rewind``: its rows past
  ``k`` move to a run linked ``rewound_from``, nothing is lost); ``fork_from="<run
  id>?_step=<k>"`` starts a new run whose history is the run's up to step ``k``
  (``Run.fork``: copied, linked ``forked_from``, with its args). Both go on logging at
  step ``k + 1`` (history up to and including ``k`` is kept), in the run's experiment.
  Connection settings: ``client=`` (a ``sqltrack.Client``), or ``connection={...}``
  (``sqltrack.Client`` keywords), then the usual chain (``SQLTRACK_DSN_*``,
  ``sqltrack.conf``); with none of these, the local file ``sqltrack.db`` in ``dir=``,
  ``$WANDB_DIR`` or the current folder. One line on stderr names the database and
  the run (``quiet=True``, ``WANDB_SILENT=true`` or ``SQLTRACK_QUIET=1``: none).
  ``mode="disabled"`` (or ``WANDB_MODE=disabled``): every call works and nothing is
  written; ``mode="offline"``: the local file above whatever is configured, for a
  later ``sqltrack sync --from <file>``. Own keywords: ``system_metrics=`` (True or
  seconds; off by default, unlike wandb), ``terminated=`` (the status on SIGTERM,
  default CANCELLED).
- ``log(data, step=None, commit=None)`` with wandb's step rules: each committed
  ``log`` is one step and the step counter then moves on by one; ``commit=False``
  merges into the current step; ``step=`` (not below the current step, else the
  data is dropped with a warning) merges into that step, which is written when a
  later step comes, ``commit=True`` or ``finish``. A step is one metrics row
  (``step`` = wandb's step, ``progress`` 0). Nested dicts are flattened with ``/``;
  names are mapped by ``sqltrack.integrations.names`` (originals in
  ``extras["metric_names"]``; names differing only in case are both kept, each in a
  column of its own). ``Histogram``, ``Table``, ``Image``, ``Audio``, ``Video``,
  ``Html``, ``Object3D``, ``Plotly``, ``plot.*`` and ``Artifact`` exist: what each
  stores and where is in ``sqltrack.integrations.wandb_media``; what cannot be
  stored is skipped with one warning per kind and run, never a failed run.
- ``config``: attribute and item access, ``update()``, ``setdefaults()``, writes go
  to ``args``. ``summary``: the last value of each logged metric, plus what you
  set, stored in ``extras["summary"]`` (at ``finish``; items you set at once);
  ``define_metric(name, summary="max")`` (min, max, mean, best with ``goal``, last,
  first, none; ``*`` in ``name`` matches anything) keeps ``{"max": ...}`` instead,
  as wandb does.
- ``finish(exit_code=None)``: writes the step under way and the summary, then
  stops the run: COMPLETED, or FAILED for a non-zero ``exit_code``.
  ``with wandb.init() as run:`` finishes with exit code 1 when the block raises.
- A script that ends without ``finish()`` (or crashes, or gets SIGTERM or Ctrl-C)
  still has the step under way and the summary written at interpreter exit; the
  run then gets the status of how the program ended (FAILED, CANCELLED, the
  ``terminated`` status with exit status 143, or COMPLETED).
- Ranks of a distributed job (``torch.distributed`` initialised before ``init``): every
  rank calling ``init`` gets the same run. Rank zero gets or creates it as above
  (``id``, ``resume``, ``resume_from``, ``fork_from``, ``name``, ``config`` ...) and
  publishes its id in the process group's key-value store; the others wait for it there
  and join. Setting a key is not a collective, so a script that calls ``init`` on rank
  zero only (wandb's "track a single process") never waits for the others. A rank's
  n-th ``init`` pairs with rank zero's n-th one of the same project, name, group,
  job_type, id and resume arguments (config may differ): rank zero alone may open runs
  of other names before or between. Only rank zero's
  ``log`` values, config, summary, media and artifacts are stored, and only it sets the
  status; the other ranks sample their own process and devices into the run
  (``system_metrics=``: rows with their rank and host), and their ``finish()`` writes
  what they buffered and stops sampling. ``per_rank=`` (metric names or ``fnmatch``
  patterns; True: every metric), as on the Lightning logger: every rank stores those
  metrics as ``<name>/rank<r>`` (column ``<name>__rank<r>``) in the row of its step.
  wandb's shared mode works as in wandb: ``settings=wandb.Settings(mode="shared",
  x_primary=True)`` where the run is opened, ``x_primary=False`` and ``id=`` (the
  primary's ``run.id``, sent by the program) elsewhere; ``x_label`` and
  ``x_update_finish_state`` are accepted (samples carry rank and host; the status is the
  primary's). With ``WORLD_SIZE`` (or ``SLURM_NTASKS``) above 1 but no process group, a
  rank other than zero joins the run ``id=`` names (``id="SLURM_JOB_ID"`` on every rank:
  making it is an upsert, no race); without ``id=`` it cannot know rank zero's run and
  stores nothing (a warning says so) rather than start a second run.

``run.id`` is the run's id (an int); ``run.url`` its page on ``sqltrack ui`` (the
default address, http://127.0.0.1:8080/runs/<id>); ``run.dir`` its media folder.
``log_artifact`` / ``use_artifact`` record references. ``login``, ``watch``, ``save``
and ``alert`` exist and do nothing. Not covered: sweeps, the public ``wandb.Api``,
``resume="auto"`` without an ``id``, and several runs at once in one process
(``reinit``): ``init`` finishes the previous run first.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from ..config import is_configured
from ..model.system_metrics import current_rank
from .common import IntegrationRun, default_settings, is_quiet, json_safe, metric_value, own_query
from .distributed import (
    Job,
    current_job,
    per_rank_patterns,
    publish_run,
    ranked,
    receive_run,
    store_key,
)
from .wandb_media import (
    Artifact,
    Audio,
    Chart,
    Histogram,
    Html,
    Image,
    Media,
    Object3D,
    Plotly,
    Table,
    Video,
    as_media,
    media_folder,
    plot,
)

log_ = logging.getLogger("sqltrack")

#: The run of the last ``init()`` (None before, and after ``finish()``).
run: Run | None = None
__all__ = ["Artifact", "Audio", "Config", "Histogram", "Html", "Image", "Object3D", "Plotly",
           "Run", "Settings", "Summary", "Table", "Video", "alert", "config", "define_metric",
           "finish", "init", "log", "log_artifact", "login", "plot", "run", "save", "summary",
           "use_artifact", "watch"]
#: The page of ``sqltrack ui`` (its default address) that shows a run: ``run.url``.
UI_RUN_URL = "http://127.0.0.1:8080/runs/{id}"
#: ``define_metric(summary=...)`` values.
SUMMARY_MODES = ("min", "max", "mean", "best", "last", "first", "none")
#: Per kind of ``init`` call (``_init_key``): how many this process made in a job.
_inits: dict[str, int] = {}


def _init_key(*arguments: Any) -> str:
    """The store key pairing a rank's ``init`` with rank zero's: the n-th call with the
    same ``arguments`` (project, name, group, ...; not config, which may differ per rank).
    So an ``init`` that rank zero makes alone, with other arguments, pairs with nothing."""
    import hashlib
    import json

    kind = hashlib.sha1(json.dumps(arguments, default=str).encode()).hexdigest()[:16]
    n = _inits[kind] = _inits.get(kind, -1) + 1
    return store_key(f"wandb.init/{kind}", n)


class Settings:
    """``wandb.Settings(...)``: keywords kept as attributes. ``init`` reads ``mode`` and,
    for wandb's shared mode, ``x_primary`` (see the module docstring); the others
    (``x_label``, ``x_update_finish_state``, ...) are accepted and ignored."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None  # a setting not given

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def _setting(settings: Any, name: str) -> Any:
    """A setting of ``settings=`` (a ``Settings``, wandb's own, a dict or None)."""
    if settings is None:
        return None
    if isinstance(settings, Mapping):
        return settings.get(name)
    return getattr(settings, name, None)


class _Nothing:
    """What a ``mode="disabled"`` run writes to: nothing."""

    run_id = None
    opened = False
    started = False

    def __init__(self, tags: tuple[str, ...], comment: str | None) -> None:
        self.tags, self.comment = tags, comment

    def open(self) -> _Nothing:
        return self

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None  # log, add_args, add_extras, stop, ...


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened with ``/`` (``{"a": {"b": 1}}`` -> ``{"a/b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


class _Items(MutableMapping[str, Any]):
    """A run's mapping read as attributes and items (``wandb.config``, ``wandb.summary``);
    each kind says how a change is written to the run (``__setitem__``, ``__delitem__``,
    ``__setattr__``)."""

    _owner: Run | None
    _items: dict[str, Any]

    def __init__(self, owner: Run | None = None) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_items", {})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class Config(_Items):
    """``wandb.config``: the run's args, as attributes and items."""

    def _write(self, items: Mapping[str, Any]) -> None:
        safe = json_safe(dict(items))
        self._items.update(safe)
        if self._owner is not None and safe and not self._owner.joined:
            self._owner.tracked.add_args(safe)

    def update(  # type: ignore[override] # wandb's signature
        self, other: Any = (), allow_val_change: bool | None = None, **kwargs: Any
    ) -> None:
        if isinstance(other, argparse.Namespace):
            other = vars(other)
        self._write({**dict(other), **kwargs})

    def setdefaults(self, other: Mapping[str, Any]) -> None:
        self._write({k: v for k, v in other.items() if k not in self._items})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._items)

    def __setitem__(self, key: str, value: Any) -> None:
        self._write({key: value})

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        if self._owner is not None and not self._owner.joined:
            self._owner.tracked.open().remove_args({key: None})

    def __setattr__(self, name: str, value: Any) -> None:
        self._write({name: value})


class Summary(_Items):
    """``wandb.summary``: last logged values plus yours, kept in ``extras["summary"]``."""

    def write(self) -> None:
        if self._owner is not None and self._items and not self._owner.joined:
            self._owner.tracked.open().add_extras({"summary": json_safe(self._items)})

    def update(self, other: Any = (), **kwargs: Any) -> None:  # type: ignore[override]
        self._items.update({**dict(other), **kwargs})
        self.write()

    def __setitem__(self, key: str, value: Any) -> None:
        self._items[key] = value
        self.write()

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        self.write()

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class Run:
    """What ``wandb.init()`` returns: ``id``, ``name``, ``project``, ``config``,
    ``summary``, ``url``, ``dir``, ``log()``, ``log_artifact()``, ``define_metric()``,
    ``finish()``; a context manager that finishes."""

    def __init__(self, tracked: Any, project: str, name: str | None,
                 own_client: Any = None, directory: str | None = None,
                 disabled: bool = False, *, joined: bool = False, rank: int = 0,
                 world: int = 1, per_rank: bool | tuple[str, ...] = ()) -> None:
        self.tracked = tracked
        #: A rank other than zero in the run of rank zero (see the module docstring).
        self.joined = joined
        self.rank, self.world, self.per_rank = rank, world, per_rank
        self._own_client = own_client
        self.project = project
        self.name = name
        self.disabled = disabled
        self.config = Config(self)
        self.summary = Summary(self)
        self.step = 0
        self._pending: dict[str, Any] = {}
        self._skipped: set[str] = set()  # kinds of values warned about (once per run)
        self._directory = directory
        self._media: dict[str, list[dict[str, Any]]] = {}
        self._tables: dict[str, dict[str, Any]] = {}
        self._artifacts: list[dict[str, Any]] = []
        self._used: list[dict[str, Any]] = []  # use_artifact's inputs
        self._rules: dict[str, tuple[str, ...]] = {}  # define_metric: pattern -> modes
        self._seen: dict[str, dict[str, float]] = {}  # per metric: first, min, max, sum, n
        self.finished = False

    @property
    def id(self) -> int | None:
        return self.tracked.run_id

    @property
    def tags(self) -> tuple[str, ...]:
        return self.tracked.tags

    @property
    def notes(self) -> str | None:
        return self.tracked.comment

    @property
    def url(self) -> str | None:
        """The run's page on ``sqltrack ui`` (started on this database with its default
        address, 127.0.0.1:8080); None for a disabled run."""
        return None if self.id is None else UI_RUN_URL.format(id=self.id)

    @property
    def dir(self) -> str | None:
        """The run's media folder (``<base>/sqltrack-media/<run id>``; see
        ``sqltrack.integrations.wandb_media``); None for a disabled run."""
        return None if self.id is None else str(media_folder(self._media_base(), self.id))

    def _media_base(self) -> str:
        """Beside the SQLite file; for a server database ``dir=``, ``$WANDB_DIR`` or ``.``."""
        client = self.tracked.client
        if client is not None:
            path = client.async_client.dialect.database_path(client.async_client.settings)
            if path is not None:
                return os.path.dirname(os.path.abspath(path))
        return self._directory or "."

    def log(self, data: Mapping[str, Any], step: int | None = None,
            commit: bool | None = None) -> None:
        """Log ``data`` (wandb's step rules; see the module docstring)."""
        if self.finished:
            raise RuntimeError("this run is finished: call wandb.init() for a new one")
        if self.disabled:
            return
        if step is not None:
            step = int(step)
            if step < self.step:
                log_.warning("sqltrack.wandb: step %s is below the current step %s; "
                             "data dropped (as wandb does)", step, self.step)
                return
            if step > self.step:
                self._commit()
                self.step = step
        self._pending.update(_flatten(data))
        if commit or (commit is None and step is None):
            self._commit()

    def define_metric(self, name: str, step_metric: str | None = None,
                      step_sync: bool | None = None, hidden: bool | None = None,
                      summary: str | None = None, goal: str | None = None,
                      overwrite: bool | None = None, **ignored: Any) -> None:
        """``summary=`` ("min", "max", "mean", "best" with ``goal``, "last", "first",
        "none", or several joined by commas) decides what the summary keeps for metrics
        matching ``name`` (``*`` matches anything): ``{"max": ...}`` per mode, as wandb
        does; "none" keeps nothing. The other keywords are accepted and ignored."""
        if summary is None:
            return
        modes = tuple(m.strip().lower() for m in summary.split(",") if m.strip())
        unknown = [m for m in modes if m not in SUMMARY_MODES]
        if unknown:
            raise ValueError(f"define_metric summary={summary!r}: use {', '.join(SUMMARY_MODES)}")
        if "best" in modes:
            if goal not in ("minimize", "maximize"):
                raise ValueError("define_metric summary='best' needs goal='minimize' or "
                                 "'maximize'")
            modes = tuple(("min" if goal == "minimize" else "max") if m == "best" else m
                          for m in modes)
        if not overwrite and name in self._rules:
            modes = tuple(dict.fromkeys(self._rules[name] + modes))
        self._rules[name] = modes

    def _summarize(self, values: Mapping[str, Any]) -> None:
        """The summary after a row: last values, or what define_metric asked for."""
        import fnmatch

        for name, value in values.items():
            modes = next((m for p, m in reversed(self._rules.items())
                          if p == name or fnmatch.fnmatchcase(name, p)), None)
            if modes is None:
                self.summary._items[name] = value
                continue
            if "none" in modes:
                self.summary._items.pop(name, None)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.summary._items[name] = value if "last" in modes else {}
                continue
            seen = self._seen.setdefault(name, {"first": value, "min": value, "max": value,
                                               "sum": 0.0, "n": 0})
            seen["min"], seen["max"] = min(seen["min"], value), max(seen["max"], value)
            seen["sum"] += value
            seen["n"] += 1
            current = {"first": seen["first"], "min": seen["min"], "max": seen["max"],
                       "mean": seen["sum"] / seen["n"], "last": value}
            self.summary._items[name] = {mode: current[mode] for mode in modes}

    def _warn_once(self, kind: str, name: str, reason: str) -> None:
        if kind not in self._skipped:
            self._skipped.add(kind)
            log_.warning("sqltrack.wandb: %r (%s) skipped: %s (warned once per kind and run)",
                         name, kind, reason)

    def _store_media(self, name: str, items: list[Media]) -> None:
        """Write each file to the run's media folder and add its references."""
        folder = media_folder(self._media_base(), int(self.id or 0))
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "media"
        for index, item in enumerate(items):
            written = item.write(folder / f"{stem}_{self.step}_{index}")
            if written is None:
                self._warn_once(item.kind, name, "no file can be made of it here "
                                "(give a file path)")
                continue
            self._media.setdefault(name, []).append({
                "step": self.step, "type": item.kind, "path": str(written),
                "caption": item.caption, "size": written.stat().st_size})

    def _store_table(self, name: str, table: Table, chart: Chart | None = None) -> None:
        entry: dict[str, Any] = {"columns": json_safe(table.columns),
                                 "data": json_safe(table.data), "step": self.step}
        if chart is not None:
            entry["chart"] = {"type": chart.chart, **json_safe(chart.fields)}
        self._tables[name] = entry

    def _value(self, name: str, value: Any, values: dict[str, Any]) -> bool:
        """Put a logged value where it goes; whether the run's extras changed."""
        if isinstance(value, Histogram):
            values.update({f"{name}/{k}": v for k, v in value.statistics().items()})
            return False
        if self.joined and metric_value(value) is None:
            self._warn_once(type(value).__name__, name, "ranks other than zero store numbers, "
                            "bools and text only")
            return False
        if isinstance(value, Chart):
            self._store_table(name, value.table, value)
            return True
        if isinstance(value, Table):
            self._store_table(name, value)
            return True
        items = list(value) if isinstance(value, (list, tuple)) and value else [value]
        media = [as_media(item) for item in items]
        if all(m is not None for m in media):
            self._store_media(name, [m for m in media if m is not None])
            return True
        stored = metric_value(value)
        if stored is None:
            kind = type(value).__name__
            self._warn_once(kind, name, "not a number, bool, text or a wandb media type")
        else:
            values[name] = stored
        return False

    def _commit(self) -> None:
        """Write the step under way as one row; the step counter moves on."""
        if not self._pending:
            return
        values: dict[str, Any] = {}
        extras = False
        pending = self._pending
        if self.joined or self.per_rank:
            pending = ranked(pending, self.per_rank, self.rank, self.world, self.tracked.names,
                             lead=not self.joined)
        for name, value in pending.items():
            try:
                extras = self._value(name, value, values) or extras
            except Exception as error:  # noqa: BLE001 - a value never ends the run
                self._warn_once(type(value).__name__, name, f"{type(error).__name__}: {error}")
        self._pending = {}
        if values:
            self.tracked.log(values, self.step, record_names=not self.joined)
            self._summarize(values)
        if extras:
            self.tracked.open().add_extras(json_safe({"media": self._media,
                                                      "tables": self._tables}))
        self.step += 1

    def log_artifact(self, artifact: Artifact | str | os.PathLike[str],
                     name: str | None = None, type: str | None = None,  # noqa: A002
                     aliases: Any = None, **ignored: Any) -> Artifact:
        """Record ``artifact`` (or a file or folder path) as a reference in the run's
        ``extras["artifacts"]``: name, type, size, digest, files (nothing is copied)."""
        if not isinstance(artifact, Artifact):
            path = os.fspath(artifact)
            made = Artifact(name or os.path.basename(path.rstrip("/")), type or "unspecified")
            made.add_dir(path) if os.path.isdir(path) else made.add_file(path)
            artifact = made
        if not (self.disabled or self.joined):
            self._artifacts.append(artifact.record([aliases] if isinstance(aliases, str)
                                                   else aliases))
            self.tracked.open().add_extras(json_safe({"artifacts": self._artifacts}))
        return artifact

    def use_artifact(self, artifact: Artifact | str, type: str | None = None,  # noqa: A002
                     **ignored: Any) -> Artifact:
        """An input of the run: an Artifact is recorded (``extras["used_artifacts"]``)
        and returned; a name gives an empty Artifact of that name."""
        if not isinstance(artifact, Artifact):
            artifact = Artifact(str(artifact).split(":")[0], type or "unspecified")
        if not (self.disabled or self.joined):
            self._used.append(artifact.record())
            self.tracked.open().add_extras(json_safe({"used_artifacts": self._used}))
        return artifact

    def flush_at_exit(self) -> None:
        """At interpreter exit: the step under way and the summary are written."""
        if not self.finished and self.tracked.opened:
            try:
                self._commit()
                self.summary.write()
                if self.joined:
                    self.tracked.leave()
            except Exception:  # noqa: BLE001 - exit goes on
                log_.exception("sqltrack.wandb: could not write run %s at exit", self.id)

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """Write what is pending and stop the run: COMPLETED, or FAILED for exit_code != 0."""
        global run
        if self.finished:
            return
        try:
            self._commit()
            self.summary.write()
        finally:
            self.finished = True
            if self.joined:  # the status is rank zero's
                self.tracked.leave()
            else:
                self.tracked.stop("COMPLETED" if not exit_code else "FAILED")
            if self._own_client is not None:
                self._own_client.close()
            if run is self:
                run = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    def __repr__(self) -> str:
        return f"<sqltrack.wandb.Run id={self.id} project={self.project!r}>"

config: Config = Config()
summary: Summary = Summary()


def init(
    project: str | None = None,
    name: str | None = None,
    config: Any = None,
    tags: Any = None,
    notes: str | None = None,
    resume: bool | str | None = None,
    id: int | str | None = None,  # noqa: A002 - wandb's name
    *,
    group: str | None = None,
    job_type: str | None = None,
    entity: str | None = None,
    config_exclude_keys: Any = None,
    config_include_keys: Any = None,
    client: Any = None,
    connection: Mapping[str, Any] | None = None,
    system_metrics: bool | float = False,
    terminated: str = "CANCELLED",
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,  # noqa: A002 - wandb's name
    quiet: bool | None = None,
    resume_from: str | None = None,
    fork_from: str | None = None,
    settings: Any = None,
    per_rank: bool | str | Sequence[str] = (),
    **ignored: Any,
) -> Run:
    """Start a run (see the module docstring); other wandb keywords are accepted and ignored."""
    global run
    if run is not None:
        run.finish()
    project = project or "uncategorized"
    mode = str(mode or _setting(settings, "mode") or os.environ.get("WANDB_MODE") or "online")
    mode = mode.strip().lower()
    if mode not in ("online", "offline", "disabled", "dryrun", "run", "shared"):
        raise ValueError(f"wandb.init mode={mode!r}: use 'online', 'offline' or 'disabled'")
    primary = _setting(settings, "x_primary")
    job = current_job()
    lead = bool(primary) if primary is not None else job is None or job.rank == 0
    # rank zero tells the others its run through the process group's store (not a
    # collective: a program calling init on rank zero only does not hang)
    key = None
    if job is not None and job.store is not None and primary is None:
        key = _init_key(project, name, group, job_type, id, resume, resume_from, fork_from)
    if mode == "disabled":
        if lead and job is not None and key is not None:
            publish_run(job.store, key, {"disabled": True})
        return _disabled(project, name, config, tags, notes)
    directory = os.fspath(dir) if dir is not None else os.environ.get("WANDB_DIR") or None
    connection = dict(connection or {})
    offline = mode in ("offline", "dryrun")
    if client is None and (offline or not is_configured(**connection)):
        # nothing configured, or offline: the local file (sqltrack sync copies it later)
        connection = {**connection, **default_settings(directory)}
    config = _config_values(config, config_include_keys, config_exclude_keys)
    place: dict[str, Any] = {"per_rank": per_rank_patterns(per_rank),
                             "rank": current_rank() if job is None else job.rank,
                             "world": 1 if job is None else job.world}
    if not lead:
        joined = _join(job, key, primary is not None, id, project, client, connection,
                       directory, system_metrics,
                       resume == "never" or resume_from is not None or fork_from is not None)
        if joined is None:
            return _disabled(project, name, config, tags, notes)
        tracked, first_step = joined
        return _started(Run(tracked, project, name, None, directory, joined=True, **place),
                        first_step, config)
    try:
        new = _lead(project, name, tags, notes, resume, id, client, connection, directory,
                    system_metrics, terminated, is_quiet(quiet, "WANDB_SILENT", "WANDB_QUIET"),
                    offline, resume_from, fork_from, place)
        extras = {k: v for k, v in (("name", name), ("group", group),
                                    ("job_type", job_type), ("entity", entity)) if v is not None}
        if extras:
            new.tracked.open().add_extras(json_safe(extras))
    except BaseException:
        if job is not None and key is not None:
            publish_run(job.store, key, None)  # the other ranks raise instead of waiting
        raise
    if job is not None and key is not None:
        publish_run(job.store, key, {"run": new.id, "experiment": new.tracked.run.experiment_id,
                                     "step": new.step})
    return _started(new, new.step, config)


def _config_values(config: Any, include: Any, exclude: Any) -> dict[str, Any] | None:
    """``init``'s ``config`` as a dict, filtered by ``config_include_keys`` / ``_exclude_``."""
    if config is None:
        return None
    values = vars(config) if isinstance(config, argparse.Namespace) else dict(config)
    if include:
        values = {k: v for k, v in values.items() if k in set(include)}
    if exclude:
        values = {k: v for k, v in values.items() if k not in set(exclude)}
    return values


def _lead(project: str, name: str | None, tags: Any, notes: str | None, resume: Any,
          given_id: Any, client: Any, connection: dict[str, Any], directory: str | None,
          system_metrics: bool | float, terminated: str, quiet: bool, offline: bool,
          resume_from: str | None, fork_from: str | None, place: dict[str, Any]) -> Run:
    """The run of a single process, or of rank zero (the primary) of a job: checked,
    rewound or forked as asked, created or continued, and started."""
    run_ref = _run_ref(given_id)
    own_client = None
    experiment: str | int = project
    history = _history_start(resume_from, fork_from, given_id)
    if resume in ("must", "never") or history is not None:
        import sqltrack

        if client is None:
            client = own_client = sqltrack.Client(**dict(connection or {}))
    first_step = 0
    try:
        if resume in ("must", "never"):
            _check_resume(client, str(resume), given_id, run_ref)
        if history is not None:
            kind, source, at = history
            rows = own_query(client, "SELECT experiment_id FROM runs WHERE id = %s", [source])
            if not rows:
                raise ValueError(f"wandb.init {kind}: there is no run {source}")
            experiment, first_step = int(rows[0][0]), at + 1
            if kind == "resume_from":
                sqltrack.run_rewind(client, source, at)
                run_ref = source
            else:
                run_ref = int(sqltrack.run_fork(client, source, at).id)
    except BaseException:
        if own_client is not None:  # made here for the check: closed again
            own_client.close()
        raise
    tracked = IntegrationRun(client, experiment, run_ref, terminated=terminated,
                             system_metrics=system_metrics, tags=tuple(tags or ()),
                             comment=notes, settings=connection, quiet=quiet,
                             default_dir=directory)
    if offline and client is None:
        tracked.note = f"offline: copy it later with: sqltrack sync --from {connection['dbpath']}"
    tracked.start()
    new = Run(tracked, project, name, own_client, directory, **place)
    new.step = first_step
    return new


def _join(job: Job | None, key: str | None, explicit: bool, given_id: Any, project: str,
          client: Any, connection: dict[str, Any], directory: str | None,
          system_metrics: bool | float, own_history: bool) -> tuple[IntegrationRun, int] | None:
    """A rank other than zero (or a process with ``x_primary=False``) joins the run of
    rank zero: the id it published in the process group's store, else ``id=``. None:
    there is no way to know that run (a warning says why); the rank then stores nothing."""
    experiment: str | int = project
    first_step = 0
    run_id: int | None
    if job is not None and key is not None:
        got = receive_run(job.store, key)
        if got.get("disabled"):
            return None
        run_id, experiment, first_step = int(got["run"]), int(got["experiment"]), int(got["step"])
    else:
        run_id = _resolved_id(given_id)
        if explicit and run_id is None:
            raise ValueError("wandb.init with settings x_primary=False joins a run: give id= "
                             "(the primary's run.id)")
        if run_id is None or (not explicit and own_history):
            rank, world = (job.rank, job.world) if job is not None else (current_rank(), 1)
            log_.warning(
                "sqltrack.wandb: rank %s of %s cannot know rank zero's run (torch.distributed "
                "is not initialised%s), so it stores nothing: call wandb.init after "
                "init_process_group, or give every rank id= (e.g. id=\"SLURM_JOB_ID\")",
                rank, world, "" if run_id is None else "; resume='never', resume_from and "
                "fork_from need it")
            return None
    tracked = IntegrationRun(client, experiment, run_id, system_metrics=system_metrics,
                             settings=connection, quiet=True, default_dir=directory)
    tracked.join(run_id)
    return tracked, first_step


def _resolved_id(ref: Any) -> int | None:
    """``id=`` as a run id: an int, digits, or a variable holding digits (else None)."""
    ref = _run_ref(ref)
    if isinstance(ref, str):
        text = os.environ.get(ref, "").strip()
        ref = int(text) if text.isdigit() else None
    return ref


def _started(new: Run, first_step: int, config: dict[str, Any] | None) -> Run:
    """``new`` becomes the current run (``wandb.run``, ``config``, ``summary``)."""
    global run
    # after the client's own exit handling is registered, so that ours runs first
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)
    new.step = first_step
    if config is not None:
        new.config.update(config)
    run = new
    _publish(new)
    return new


def _disabled(project: str, name: str | None, config: Any, tags: Any, notes: str | None) -> Run:
    """``mode="disabled"``: a run on which every call works and nothing is written."""
    global run
    new = Run(_Nothing(tuple(tags or ()), notes), project, name, disabled=True)
    if config is not None:
        new.config.update(vars(config) if isinstance(config, argparse.Namespace) else config)
    run = new
    _publish(new)
    return new


_HISTORY_POINT = re.compile(r"\s*([0-9]+)\?_step=([0-9]+)\s*")


def _history_start(resume_from: str | None, fork_from: str | None,
                   given_id: Any) -> tuple[str, int, int] | None:
    """``("resume_from" | "fork_from", run id, step)`` from W&B's ``"<run id>?_step=<k>"``
    (None: neither given)."""
    if resume_from is not None and fork_from is not None:
        raise ValueError("wandb.init: give resume_from= or fork_from=, not both")
    kind, value = ("resume_from", resume_from) if resume_from is not None else (
        "fork_from", fork_from)
    if value is None:
        return None
    if given_id is not None:
        raise ValueError(f"wandb.init: {kind}= names the run; do not give id= as well")
    match = _HISTORY_POINT.fullmatch(str(value))
    if match is None:
        raise ValueError(f"wandb.init {kind}={value!r}: use '<run id>?_step=<step>', "
                         "e.g. '42?_step=1000'")
    source, step = int(match.group(1)), int(match.group(2))
    if not (source < 2**63 and step < 2**63):
        raise ValueError(f"wandb.init {kind}={value!r}: the run id or step is too large")
    return kind, source, step


def _run_ref(ref: int | str | None) -> int | str | None:
    """wandb's ``id``: an int, digits, or the name of a variable holding the id."""
    if isinstance(ref, str) and ref.strip().isdigit():
        return int(ref)
    return ref


def _check_resume(client: Any, resume: str, given: Any, ref: int | str | None) -> None:
    """``resume="must"``: the run exists; ``"never"``: it does not."""
    if isinstance(ref, str):
        text = os.environ.get(ref, "").strip()
        ref = int(text) if text.isdigit() else None
    # Run ids are BIGINT: a larger number names no run (SQLite could not even bind it).
    exists = ref is not None and -(2**63) <= ref < 2**63 and bool(
        own_query(client, "SELECT 1 FROM runs WHERE id = %s", [int(ref)]))
    if resume == "must" and not exists:
        raise ValueError(f"resume='must': there is no run {given!r} to resume (id=)")
    if resume == "never" and exists:
        raise ValueError(f"resume='never': run {ref} exists already")


def _publish(current: Run) -> None:
    """Point the module's ``config`` and ``summary`` at the run's."""
    globals()["config"] = current.config
    globals()["summary"] = current.summary


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """``wandb.log``: log to the current run."""
    if run is None:
        raise RuntimeError("call sqltrack.wandb.init() before wandb.log()")
    run.log(data, step=step, commit=commit)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """``wandb.finish``: finish the current run (nothing to do without one)."""
    if run is not None:
        run.finish(exit_code)


def login(*args: Any, **kwargs: Any) -> bool:
    """Nothing to log in to: sqltrack uses its connection settings."""
    return True


def watch(*args: Any, **kwargs: Any) -> None:
    """Not covered (gradients and parameters are not logged); does nothing."""


def define_metric(name: str, *args: Any, **kwargs: Any) -> None:
    """``wandb.define_metric``: what the summary keeps (see :meth:`Run.define_metric`)."""
    if run is None:
        raise RuntimeError("call sqltrack.wandb.init() before wandb.define_metric()")
    run.define_metric(name, *args, **kwargs)


def log_artifact(artifact: Any, name: str | None = None, type: str | None = None,  # noqa: A002
                 aliases: Any = None, **kwargs: Any) -> Artifact:
    """``wandb.log_artifact``: a reference in the current run (see :meth:`Run.log_artifact`)."""
    if run is None:
        raise RuntimeError("call sqltrack.wandb.init() before wandb.log_artifact()")
    return run.log_artifact(artifact, name=name, type=type, aliases=aliases)


def use_artifact(artifact: Any, type: str | None = None, **kwargs: Any) -> Artifact:  # noqa: A002
    """``wandb.use_artifact``: an input of the current run (see :meth:`Run.use_artifact`)."""
    if run is None:
        raise RuntimeError("call sqltrack.wandb.init() before wandb.use_artifact()")
    return run.use_artifact(artifact, type=type)


def save(*args: Any, **kwargs: Any) -> None:
    """Not covered (no files are stored); does nothing."""


def alert(*args: Any, **kwargs: Any) -> None:
    """Not covered; does nothing."""


def _at_exit() -> None:
    if run is not None:
        run.flush_at_exit()
