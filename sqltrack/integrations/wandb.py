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
  Connection settings: ``client=`` (a ``sqltrack.Client``), or ``connection={...}``
  (``sqltrack.Client`` keywords), then the usual chain (``SQLTRACK_DSN_*``,
  ``sqltrack.conf``). Own keywords: ``system_metrics=`` (True or seconds; off by
  default, unlike wandb), ``terminated=`` (the status on SIGTERM, default CANCELLED).
- ``log(data, step=None, commit=None)`` with wandb's step rules: each committed
  ``log`` is one step and the step counter then moves on by one; ``commit=False``
  merges into the current step; ``step=`` (not below the current step, else the
  data is dropped with a warning) merges into that step, which is written when a
  later step comes, ``commit=True`` or ``finish``. A step is one metrics row
  (``step`` = wandb's step, ``progress`` 0). Nested dicts are flattened with ``/``;
  names are mapped by ``sqltrack.integrations.names`` (originals in
  ``extras["metric_names"]``); values that are not numbers, bools or text
  (images, tables, histograms) are skipped with a warning.
- ``config``: attribute and item access, ``update()``, ``setdefaults()``, writes go
  to ``args``. ``summary``: the last value of each logged metric, plus what you
  set, stored in ``extras["summary"]`` (at ``finish``; items you set at once).
- ``finish(exit_code=None)``: writes the step under way and the summary, then
  stops the run: COMPLETED, or FAILED for a non-zero ``exit_code``.
  ``with wandb.init() as run:`` finishes with exit code 1 when the block raises.
- A script that ends without ``finish()`` (or crashes, or gets SIGTERM or Ctrl-C)
  still has the step under way and the summary written at interpreter exit; the
  run then gets the status of how the program ended (FAILED, CANCELLED, the
  ``terminated`` status with exit status 143, or COMPLETED).

``run.id`` is the run's id (an int). ``login``, ``watch``, ``define_metric``,
``save`` and ``alert`` exist and do nothing. Not covered: artifacts, media
(``wandb.Image``, ``Table``, ``Histogram``...), sweeps, the public ``wandb.Api``,
``mode="offline"`` syncing, ``resume="auto"`` without an ``id``, and several runs
at once in one process (``reinit``): ``init`` finishes the previous run first.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from .common import IntegrationRun, json_safe, metric_value, own_query

log_ = logging.getLogger("sqltrack")

#: The run of the last ``init()`` (None before, and after ``finish()``).
run: Run | None = None
__all__ = ["Config", "Run", "Summary", "alert", "config", "define_metric", "finish", "init",
           "log", "login", "run", "save", "summary", "watch"]


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


class Config(MutableMapping[str, Any]):
    """``wandb.config``: the run's args, as attributes and items."""

    def __init__(self, owner: Run | None = None) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_items", {})

    def _write(self, items: Mapping[str, Any]) -> None:
        safe = json_safe(dict(items))
        self._items.update(safe)
        if self._owner is not None and safe:
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

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._write({key: value})

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        if self._owner is not None:
            self._owner.tracked.open().remove_args({key: None})

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._write({name: value})

    def __repr__(self) -> str:
        return f"Config({self._items!r})"


class Summary(MutableMapping[str, Any]):
    """``wandb.summary``: last logged values plus yours, kept in ``extras["summary"]``."""

    def __init__(self, owner: Run | None = None) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_items", {})

    def write(self) -> None:
        if self._owner is not None and self._items:
            self._owner.tracked.open().add_extras({"summary": json_safe(self._items)})

    def update(self, other: Any = (), **kwargs: Any) -> None:  # type: ignore[override]
        self._items.update({**dict(other), **kwargs})
        self.write()

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._items[key] = value
        self.write()

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        self.write()

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        return f"Summary({self._items!r})"


class Run:
    """What ``wandb.init()`` returns: ``id``, ``name``, ``project``, ``config``,
    ``summary``, ``log()``, ``finish()``; a context manager that finishes."""

    def __init__(self, tracked: IntegrationRun, project: str, name: str | None,
                 own_client: Any = None) -> None:
        self.tracked = tracked
        self._own_client = own_client
        self.project = project
        self.name = name
        self.config = Config(self)
        self.summary = Summary(self)
        self.step = 0
        self._pending: dict[str, Any] = {}
        self._skipped: set[str] = set()
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

    def log(self, data: Mapping[str, Any], step: int | None = None,
            commit: bool | None = None) -> None:
        """Log ``data`` (wandb's step rules; see the module docstring)."""
        if self.finished:
            raise RuntimeError("this run is finished: call wandb.init() for a new one")
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

    def _commit(self) -> None:
        """Write the step under way as one row; the step counter moves on."""
        if not self._pending:
            return
        values = {}
        for name, value in self._pending.items():
            stored = metric_value(value)
            if stored is None:
                if name not in self._skipped:
                    self._skipped.add(name)
                    log_.warning("sqltrack.wandb: %r is not a number, bool or text; skipped "
                                 "(%s)", name, type(value).__name__)
                continue
            values[name] = stored
        self._pending = {}
        if values:
            self.tracked.log(values, self.step)
            self.summary._items.update(values)
        self.step += 1

    def flush_at_exit(self) -> None:
        """At interpreter exit: the step under way and the summary are written."""
        if not self.finished and self.tracked.opened:
            try:
                self._commit()
                self.summary.write()
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
    **ignored: Any,
) -> Run:
    """Start a run (see the module docstring); other wandb keywords are accepted and ignored."""
    global run
    if run is not None:
        run.finish()
    project = project or "uncategorized"
    run_ref = _run_ref(id)
    own_client = None
    if resume in ("must", "never"):
        import sqltrack

        if client is None:
            client = own_client = sqltrack.Client(**dict(connection or {}))
        _check_resume(client, resume, id, run_ref)
    tracked = IntegrationRun(client, project, run_ref, terminated=terminated,
                             system_metrics=system_metrics, tags=tuple(tags or ()),
                             comment=notes, settings=connection)
    sqltrack_run = tracked.start()
    # after the client's own exit handling is registered, so that ours runs first
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)
    extras = {k: v for k, v in (("name", name), ("group", group), ("job_type", job_type),
                                ("entity", entity)) if v is not None}
    if extras:
        sqltrack_run.add_extras(json_safe(extras))
    new = Run(tracked, project, name, own_client)
    if config is not None:
        values = vars(config) if isinstance(config, argparse.Namespace) else dict(config)
        if config_include_keys:
            values = {k: v for k, v in values.items() if k in set(config_include_keys)}
        if config_exclude_keys:
            values = {k: v for k, v in values.items() if k not in set(config_exclude_keys)}
        new.config.update(values)
    run = new
    _publish(new)
    return new


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


def define_metric(*args: Any, **kwargs: Any) -> None:
    """Not covered; does nothing."""


def save(*args: Any, **kwargs: Any) -> None:
    """Not covered (no files are stored); does nothing."""


def alert(*args: Any, **kwargs: Any) -> None:
    """Not covered; does nothing."""


def _at_exit() -> None:
    if run is not None:
        run.flush_at_exit()
