"""Runs: the ``run_*`` coroutines and AsyncRun (start / stop / track, metrics)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._markers import sync_fast_path
from ..checks import (
    Auto,
    Names,
    check_int,
    check_status,
    check_text,
    dump_json_object,
    key_names,
    resolve_time,
    tags_object,
)
from ..config import DEFAULT_FLUSH_INTERVAL, DEFAULT_FLUSH_ROWS
from ..errors import ConnectionLost, ExperimentNotFound, ForeignKeyViolation, RunNotFound
from ..process import signals
from .statements import (
    add_link,
    copy_metric_rows,
    count_metric_rows,
    create_run_with_id,
    delete_metric_rows,
    derived_run,
    experiment_row,
    last_step,
    lock_run,
    remove_link,
    update_run,
)

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient
    from ..metrics.buffer import MetricBuffer
    from .system_metrics import SystemMetrics

JSON_COLUMNS = ("tags", "args", "env", "extras")


async def _merge_json(
    client: AsyncClient, run_id: int, column: str, value: Mapping[str, Any]
) -> None:
    patch = dump_json_object(value, column)
    await update_run(client, run_id, f"{column} = {client.dialect.json_merge(column)}", [patch])


async def _remove_json(client: AsyncClient, run_id: int, column: str, names: list[str]) -> None:
    """Remove the keys ``names`` (already checked by ``key_names``) from a JSON column."""
    param = client.dialect.key_list_param(names)
    await update_run(client, run_id, f"{column} = {client.dialect.json_remove(column)}", [param])


async def _set_json(
    client: AsyncClient, run_id: int, column: str, value: Mapping[str, Any] | None
) -> None:
    if value is None:
        await update_run(client, run_id, f"{column} = NULL", [])
        return
    text = dump_json_object(value, column)
    await update_run(client, run_id, f"{column} = {client.dialect.json_param()}", [text])


def _auto_args(args: Auto | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if isinstance(args, str) and args == "auto":
        from .. import environment
        from ..args import detect_args

        return environment.mask_args(detect_args(), environment.MASK_RULE)
    return args


def _auto_env(env: Auto | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if isinstance(env, str) and env == "auto":
        from .. import environment

        return environment.captured_environment(environment.MASK_RULE)
    return env


# -- arguments, environment, extras ------------------------------------------
async def run_add_args(
    client: AsyncClient, run_id: int, args: Auto | dict[str, Any] | None = "auto"
) -> None:
    """Add arguments to a run: ``'auto'`` detects them (``sqltrack.args``); None: nothing."""
    detected = _auto_args(args)
    if detected:
        await _merge_json(client, run_id, "args", detected)


def _detected_args() -> Mapping[str, Any] | None:
    return _auto_args("auto")


def _detected_env() -> Mapping[str, Any] | None:
    return _auto_env("auto")


async def run_remove_args(client: AsyncClient, run_id: int, *args: Names) -> None:
    """Remove arguments from a run, by name: ``run_remove_args(client, id, "lr", "bs")``.

    Each argument is a name, an iterable of names or a dict (its keys); ``'auto'``
    means the names ``run_add_args`` would detect; None is nothing. A str is one
    name, never its characters. A bad name raises before anything is changed.
    """
    await _remove_json(client, run_id, "args", key_names(args, "args name", _detected_args))


async def run_set_args(
    client: AsyncClient, run_id: int, args: Auto | dict[str, Any] | None = "auto"
) -> None:
    """Set run arguments: ``'auto'`` detects them (nothing is done when none are found);
    None sets NULL."""
    detected = _auto_args(args)
    if isinstance(args, str) and not detected:
        return
    await _set_json(client, run_id, "args", detected)


async def run_add_env(
    client: AsyncClient, run_id: int, env: Auto | dict[str, Any] | None = "auto"
) -> None:
    """Add environment variables to a run: ``'auto'`` means ``os.environ``, None does nothing.

    ``'auto'`` masks credentials: the values of variables named like ``*PASSWORD*``,
    ``*TOKEN*``, ``*SECRET*``, ``*API_KEY*`` ... and the passwords in URL/DSN values
    become ``***``. Change or turn off the rule with
    ``sqltrack.environment.MASK_RULE`` (see ``sqltrack.environment``); a dict is
    stored as given.
    """
    captured = _auto_env(env)
    if captured:
        await _merge_json(client, run_id, "env", captured)


async def run_remove_env(client: AsyncClient, run_id: int, *env: Names) -> None:
    """Remove environment variables from a run, by name (``"HOME"``, ``"HOME", "PATH"``).

    Names are given as for ``run_remove_args``; ``'auto'`` means the names in
    ``os.environ``.
    """
    await _remove_json(client, run_id, "env", key_names(env, "env name", _detected_env))


async def run_set_env(
    client: AsyncClient, run_id: int, env: Auto | dict[str, Any] | None = "auto"
) -> None:
    """Set the run environment: ``'auto'`` means ``os.environ``, None sets NULL.

    ``'auto'`` masks credentials as ``run_add_env`` does (rule:
    ``sqltrack.environment.MASK_RULE``); a dict is stored as given.
    """
    await _set_json(client, run_id, "env", _auto_env(env))


async def run_add_extras(
    client: AsyncClient, run_id: int, extras: dict[str, Any] | None = None
) -> None:
    """Add extras (any JSON object) to a run; None does nothing."""
    if extras:
        await _merge_json(client, run_id, "extras", extras)


async def run_remove_extras(client: AsyncClient, run_id: int, *extras: Names) -> None:
    """Remove extras from a run, by name: names, iterables of names or dicts (their keys)."""
    await _remove_json(client, run_id, "extras", key_names(extras, "extras name"))


async def run_set_extras(
    client: AsyncClient, run_id: int, extras: dict[str, Any] | None = None
) -> None:
    """Set run extras; None sets NULL."""
    await _set_json(client, run_id, "extras", extras)


# -- tags, comment, status, times --------------------------------------------
async def run_add_tags(client: AsyncClient, run_id: int, *tags: str) -> None:
    """Add tags to a run."""
    await _merge_json(client, run_id, "tags", tags_object(tags))


async def run_remove_tags(client: AsyncClient, run_id: int, *tags: Names) -> None:
    """Remove tags from a run: tags, iterables of tags or dicts (their keys)."""
    await _remove_json(client, run_id, "tags", key_names(tags, "tag"))


async def run_set_tags(client: AsyncClient, run_id: int, *tags: str) -> None:
    """Set the tags of a run (replacing all of them)."""
    await _set_json(client, run_id, "tags", tags_object(tags))


async def run_set_comment(client: AsyncClient, run_id: int, comment: str | None) -> None:
    """Set the comment of a run (None clears it)."""
    comment = check_text(comment, "comment", allow_none=True)
    await update_run(client, run_id, "comment = %s", [comment])


async def run_set_status(client: AsyncClient, run_id: int, status: str) -> None:
    """Set a run's status (one of ``sqltrack.STATUSES``; anything else is a ValueError)."""
    await update_run(client, run_id, "status = %s", [check_status(status)])


async def _set_time(client: AsyncClient, run_id: int, column: str, dt: Any) -> None:
    value = resolve_time(dt, column)
    if value is not None:
        param = client.dialect.timestamp(value)
        await update_run(client, run_id, f"{column} = %s", [param])
        if column == "time_updated":
            client.metrics.forget_touch(run_id)


async def run_set_created(
    client: AsyncClient, run_id: int, dt: Auto | datetime | None = "auto"
) -> None:
    """Set time_created: ``'auto'`` is now, an aware datetime is used, None does nothing."""
    await _set_time(client, run_id, "time_created", dt)


async def run_set_started(
    client: AsyncClient, run_id: int, dt: Auto | datetime | None = "auto"
) -> None:
    """Set time_started: ``'auto'`` is now, an aware datetime is used, None does nothing."""
    await _set_time(client, run_id, "time_started", dt)


async def run_set_updated(
    client: AsyncClient, run_id: int, dt: Auto | datetime | None = "auto"
) -> None:
    """Set time_updated: ``'auto'`` is now, an aware datetime is used, None does nothing."""
    await _set_time(client, run_id, "time_updated", dt)


# -- links, metrics -----------------------------------------------------------
async def run_add_link(client: AsyncClient, from_id: int, kind: str, to_id: int) -> None:
    """Add a link ``from_id --kind--> to_id`` between two runs (RunNotFound: either is missing).

    The run linked to is locked first, in the link's transaction: on Citus ``run_links``
    has no foreign key on ``to_id`` (it lives on another shard), so that lock is what
    refuses a link to a missing run, and keeps the run from being deleted meanwhile."""
    from_id, to_id = check_int(from_id, "from_id"), check_int(to_id, "to_id")
    async with client:
        await lock_run(client, to_id)
        await add_link(client, "run_links", from_id, kind, to_id, RunNotFound)


async def run_remove_link(client: AsyncClient, from_id: int, kind: str, to_id: int) -> None:
    """Remove a link between two runs."""
    await remove_link(client, "run_links", from_id, kind, to_id)


async def run_add_metrics(
    client: AsyncClient,
    run_id: int,
    metrics: dict[str, Any],
    step: int = 0,
    progress: float = 0.0,
    updated: Auto | datetime | None = "auto",
) -> None:
    """Add metrics to a run: upsert the ``(run_id, step, progress)`` row.

    Give a distinct step or progress per call, or the values of an earlier call
    with the same pair are overwritten. A metric without a column gets one, typed
    from its value (see ``sqltrack.metrics.table``). ``updated`` sets ``time_updated``
    in the same round trip (``'auto'``: now; None: leave it).
    """
    await client.metrics.write(run_id, metrics, step, progress, updated)


# -- history: rewind and fork ---------------------------------------------------
#: Link kinds of the runs a rewind and a fork make (``new --kind--> run``).
REWOUND_FROM = "rewound_from"
FORKED_FROM = "forked_from"
#: The status of a run that holds the rows a rewind moved (a branch left behind).
REWOUND_STATUS = "CANCELLED"
_PAST = "step > %s"
_UP_TO_STEP = "step <= %s"


def _json_dict(value: Any) -> dict[str, Any]:
    """A JSON column as a dict (SQLite gives text, PostgreSQL a dict; NULL or a non-object: {})."""
    if isinstance(value, str):
        import json

        value = json.loads(value)
    return dict(value) if isinstance(value, Mapping) else {}


def _now_iso() -> str:
    from datetime import timezone

    return datetime.now(timezone.utc).isoformat()


async def run_rewind(client: AsyncClient, run_id: int, step: int) -> int | None:
    """Make run ``run_id``'s history end at ``step``, atomically, losing nothing.

    Its metric rows past ``step`` (a greater step, any progress) move to a new run in
    the same experiment, with the run's args and status CANCELLED, linked to it
    ``new --rewound_from--> run_id``; its extras get ``{"rewound_from": {"step", "time"}}``.
    The run's extras key ``"rewinds"`` gets one entry per rewind: ``{"step", "time",
    "rows"}`` (rows: how many moved). The run then continues from ``step``: rows logged
    later past ``step`` are its new history. Everything happens in one transaction
    (inside the caller's ``async with client:`` block when there is one). Returns the
    new run's id, or None when no row was past ``step`` (the rewind is still recorded).

    What a restart from a checkpoint at ``step`` needs: ``run_rewind(client, run_id,
    step)`` before training continues, and the history equals an uninterrupted run's.
    """
    run_id = check_int(run_id, "run_id")
    step = check_int(step, "step")
    when = _now_iso()
    async with client:
        _, extras = await lock_run(client, run_id)
        moved = await count_metric_rows(client, run_id, _PAST, [step])
        new_id = None
        if moved:
            columns = list(await client.metrics.table.columns())
            new_id = await derived_run(client, run_id)
            await copy_metric_rows(client, columns, run_id, new_id, _PAST, [step])
            await delete_metric_rows(client, run_id, _PAST, [step])
            await update_run(client, new_id, "status = %s", [REWOUND_STATUS])
            await _merge_json(client, new_id, "extras",
                              {REWOUND_FROM: {"step": step, "time": when}})
            await add_link(client, "run_links", new_id, REWOUND_FROM, run_id, RunNotFound)
        extras = _json_dict(extras)
        rewinds = extras.get("rewinds")
        rewinds = list(rewinds) if isinstance(rewinds, list) else []
        rewinds.append({"step": step, "time": when, "rows": moved})
        await _merge_json(client, run_id, "extras", {"rewinds": rewinds})
    return new_id


async def run_fork(client: AsyncClient, run_id: int, step: int | None = None) -> AsyncRun:
    """A new run in run ``run_id``'s experiment whose history up to ``step`` equals the
    run's (its metric rows with ``step <= step`` copied; None: all of them), with its
    args, linked ``new --forked_from--> run_id``, status PENDING; its extras get
    ``{"forked_from": {"step", "time"}}`` (``step``: the one given, or the run's last
    step). One transaction: the new run exists with all its rows or not at all.
    """
    run_id = check_int(run_id, "run_id")
    if step is not None:
        step = check_int(step, "step")
    async with client:
        experiment_id, _ = await lock_run(client, run_id)
        if step is None:
            where, params, at = "1 = 1", [], await last_step(client, run_id)
        else:
            where, params, at = _UP_TO_STEP, [step], step
        new_id = await derived_run(client, run_id)
        if await count_metric_rows(client, run_id, where, params):
            columns = list(await client.metrics.table.columns())
            await copy_metric_rows(client, columns, run_id, new_id, where, params)
        await _merge_json(client, new_id, "extras",
                          {FORKED_FROM: {"step": at, "time": _now_iso()}})
        await add_link(client, "run_links", new_id, FORKED_FROM, run_id, RunNotFound)
    return AsyncRun._made(client, new_id, experiment_id)


# -- run objects --------------------------------------------------------------
def _run_id_from(run_id: int | str | None) -> int | None:
    if isinstance(run_id, str):
        text = os.environ.get(run_id, "").strip()
        if not text:
            return None
        try:
            number = int(text)
        except ValueError:
            raise ValueError(
                f"environment variable {run_id} holds {text!r}, not a run id"
            ) from None
        return check_int(number, f"run_id (environment variable {run_id})")
    return None if run_id is None else check_int(run_id, "run_id")


class AsyncRun:
    """A run (async). Make one with ``await AsyncRun.create(...)`` or ``await exp.get_run()``.

    Every method returns the run itself, for chaining.
    """

    def __init__(self, client: AsyncClient, run_id: int, experiment_id: int) -> None:
        self.client = client
        self.id = run_id
        self.experiment_id = experiment_id
        self.terminated_status = "CANCELLED"
        self._buffer: MetricBuffer | None = None
        self._system: SystemMetrics | None = None

    def __repr__(self) -> str:
        return f"<AsyncRun id={self.id} experiment_id={self.experiment_id}>"

    @classmethod
    def _made(cls, client: AsyncClient, run_id: int, experiment_id: int) -> AsyncRun:
        run = cls(client, run_id, experiment_id)
        s = client.settings
        if s.buffered:  # sqltrack.metrics.buffer only for buffered runs (start-up of the rest)
            run._buffer = run._new_buffer(s.flush_rows, s.flush_interval, s.buffer_max_rows)
        return run

    def _live_buffer(self) -> MetricBuffer | None:
        """The run's buffer, unless none or abandoned (a forked child writes through)."""
        buffer = self._buffer
        return None if buffer is None or buffer.abandoned else buffer

    def _new_buffer(
        self, flush_rows: int, flush_interval: float, max_rows: int | None
    ) -> MetricBuffer:
        """A write-behind buffer for this run's metrics, with the client's spool."""
        from functools import partial

        from ..metrics.buffer import MetricBuffer
        from ..outage.replay import replay

        client = self.client
        spool = client.spool
        return MetricBuffer(
            self.id, client.metrics, client.settings, client.hooks, spool,
            None if spool is None else partial(replay, spool, client),
            flush_rows, flush_interval, max_rows,
        )

    @classmethod
    async def create(
        cls,
        client: AsyncClient,
        experiment_id: int | None = None,
        run_id: int | str | None = None,
    ) -> AsyncRun:
        """Get or create a run.

        ``run_id`` None creates a run with an unused id in ``experiment_id``. A str
        names an environment variable holding the id (unset or empty: a new run,
        e.g. ``"SLURM_JOB_ID"``). An id that exists is loaded (its experiment must
        match ``experiment_id`` when given); one that does not is created with that
        id, which needs ``experiment_id``.
        """
        run_id = _run_id_from(run_id)
        if experiment_id is not None:
            experiment_id = check_int(experiment_id, "experiment_id")
        if run_id is None:
            if experiment_id is None:
                raise ValueError("a new run needs an experiment_id")
            try:
                rows = await client.query(
                    "INSERT INTO runs (experiment_id) VALUES (%s) RETURNING id",
                    [experiment_id],
                    idempotent=False,  # a retry could make a second run
                )
            except ForeignKeyViolation:
                raise ExperimentNotFound(experiment_id) from None
            return cls._made(client, rows[0][0], experiment_id)
        if experiment_id is None:
            rows = await client.query("SELECT experiment_id FROM runs WHERE id = %s", [run_id])
            if not rows:
                raise RunNotFound(run_id)
            return cls._made(client, run_id, rows[0][0])
        try:
            found = await create_run_with_id(client, run_id, experiment_id)
        except ForeignKeyViolation:
            raise ExperimentNotFound(experiment_id) from None
        except ConnectionLost as error:
            return await cls._offline(client, run_id, experiment_id, error)
        if found != experiment_id:
            raise ValueError(f"run {run_id} belongs to experiment {found}, not {experiment_id}")
        return cls._made(client, run_id, experiment_id)

    @classmethod
    async def _offline(
        cls, client: AsyncClient, run_id: int, experiment_id: int, error: ConnectionLost
    ) -> AsyncRun:
        """The server is away and both ids are known: a buffered client with a spool
        makes the run there (created on the server when the spool is replayed)."""
        if not client.settings.buffered or client.spool is None:
            raise error
        run = cls._made(client, run_id, experiment_id)
        assert run._buffer is not None
        run._buffer.note_down(error)
        await run._buffer.spool_run_update(experiment_id=experiment_id)
        return run

    async def _update(self, assignments: list[str], params: list[Any], status: str,
                      started: datetime | None = None, updated: datetime | None = None) -> None:
        """Set the run's status and times; while its server is away, a buffered run
        with a spool keeps the update there, after its rows."""
        buffer = self._live_buffer()
        if buffer is not None and buffer.takes_run_update():
            await buffer.spool_run_update(status, started, updated)
            return
        try:
            await update_run(self.client, self.id, ", ".join(assignments), params)
            if updated is not None:
                self.client.metrics.forget_touch(self.id)
        except ConnectionLost as error:
            if buffer is None or not buffer.takes_run_update(error):
                raise
            buffer.note_down(error)
            await buffer.spool_run_update(status, started, updated)

    # -- lifecycle ------------------------------------------------------------
    async def start(
        self,
        terminated: str = "CANCELLED",
        started: Auto | datetime | None = "auto",
        updated: Auto | datetime | None = "auto",
        system_metrics: bool | float = False,
    ) -> AsyncRun:
        """Set status RUNNING and time_started / time_updated (``'auto'``: now, None: leave).

        ``terminated`` is the status to record if SIGTERM ends the process while
        the run is open (``track()`` records it; the sync facade does at exit).
        ``system_metrics`` (True, or seconds between samples) samples the machine
        until the run stops (``sqltrack.model.system_metrics``).
        """
        from . import system_metrics as system

        interval = system.interval_of(system_metrics)
        self.terminated_status = check_status(terminated)
        assignments, params = ["status = %s"], ["RUNNING"]
        times = []
        for column, dt in (("time_started", started), ("time_updated", updated)):
            value = resolve_time(dt, column)
            times.append(value)
            if value is not None:
                assignments.append(f"{column} = %s")
                params.append(self.client.dialect.timestamp(value))
        await self._update(assignments, params, "RUNNING", *times)
        self.client.hooks.run_opened(self)
        if interval is not None:
            await self.start_system_metrics(interval)
        return self

    async def start_system_metrics(self, interval: bool | float = True) -> AsyncRun:
        """Sample the machine into this run every ``interval`` seconds (True: the default
        interval; ``sqltrack.model.system_metrics``) without touching its status.

        What the ranks of a distributed job other than zero do: rank zero starts and
        stops the run, every rank samples its own process and devices under its rank
        and host. Sampling ends with :meth:`stop_system_metrics` or :meth:`stop`; a
        run already sampling is left as it is.
        """
        from . import system_metrics as system

        seconds = system.interval_of(interval)
        if seconds is not None and self._system is None:
            self._system = system.SystemMetrics(self.client, self.id, seconds).start()
        return self

    async def stop_system_metrics(self) -> AsyncRun:
        """Stop sampling the machine (the run's status is left as it is)."""
        if self._system is not None:
            sampler, self._system = self._system, None
            await sampler.stop()
        return self

    async def stop(
        self, status: str = "COMPLETED", updated: Auto | datetime | None = "auto"
    ) -> AsyncRun:
        """Set the final status (default COMPLETED) and time_updated (``'auto'``: now).

        Buffered metrics are written first; a write error is raised after the status
        is set. While the server is away, a buffered run with a spool keeps the status
        in the spool, after its rows (see ``sqltrack.outage.spool``).
        """
        assignments, params = ["status = %s"], [check_status(status)]
        await self.stop_system_metrics()
        write_error = None
        buffer = self._live_buffer()
        if buffer is not None:
            try:
                await buffer.flush()
            except Exception as error:  # noqa: BLE001 - raised below, after the status
                write_error = error
        value = resolve_time(updated, "updated")
        if value is not None:
            assignments.append("time_updated = %s")
            params.append(self.client.dialect.timestamp(value))
        await self._update(assignments, params, params[0], None, value)
        self.client.hooks.run_stopped(self)
        if write_error is not None:
            raise write_error
        return self

    @asynccontextmanager
    async def track(
        self,
        normal: str = "COMPLETED",
        exception: str = "FAILED",
        interrupt: str = "CANCELLED",
        terminated: str = "CANCELLED",
        started: Auto | datetime | None = "auto",
        updated: Auto | datetime | None = "auto",
        system_metrics: bool | float = False,
    ) -> AsyncIterator[AsyncRun]:
        """``async with run.track():`` start the run, and stop it with a status that says
        how the block ended: ``normal``, ``exception`` (the exception is re-raised),
        ``interrupt`` (Ctrl-C; KeyboardInterrupt is re-raised) or ``terminated``
        (SIGTERM; the process then exits with status 143, see ``sqltrack.process.signals``).
        ``sys.exit(n)`` in the block records ``exception`` for a non-zero ``n`` and
        ``normal`` for 0 or None (README: "What each exit path does").
        ``system_metrics`` (True, or seconds between samples) samples the machine
        while the block runs (``sqltrack.model.system_metrics``).
        """
        for status in (normal, exception, interrupt, terminated):
            check_status(status)
        await self.start(terminated, started, updated, system_metrics)
        received: list[str] = []
        task = asyncio.current_task()
        try:
            with signals.signals_cancel_task(task, received):
                yield self
        except BaseException as error:
            status, replacement = _ending(error, received, exception, interrupt, terminated,
                                          normal)
            if replacement is not None and task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            await self.stop(status, updated)
            if replacement is not None:
                raise replacement from None
            raise
        await self.stop(normal, updated)

    # -- setters --------------------------------------------------------------
    async def set_status(self, status: str) -> AsyncRun:
        """Set the run status."""
        await run_set_status(self.client, self.id, status)
        return self

    async def set_comment(self, comment: str | None) -> AsyncRun:
        """Set the run comment."""
        await run_set_comment(self.client, self.id, comment)
        return self

    async def set_created(self, dt: Auto | datetime | None = "auto") -> AsyncRun:
        """Set time_created. See run_set_created()."""
        await run_set_created(self.client, self.id, dt)
        return self

    async def set_started(self, dt: Auto | datetime | None = "auto") -> AsyncRun:
        """Set time_started. See run_set_started()."""
        await run_set_started(self.client, self.id, dt)
        return self

    async def set_updated(self, dt: Auto | datetime | None = "auto") -> AsyncRun:
        """Set time_updated. See run_set_updated()."""
        await run_set_updated(self.client, self.id, dt)
        return self

    async def add_tags(self, *tags: str) -> AsyncRun:
        """Add tags to the run. See run_add_tags()."""
        await run_add_tags(self.client, self.id, *tags)
        return self

    async def remove_tags(self, *tags: Names) -> AsyncRun:
        """Remove tags from the run. See run_remove_tags()."""
        await run_remove_tags(self.client, self.id, *tags)
        return self

    async def set_tags(self, *tags: str) -> AsyncRun:
        """Set the run tags. See run_set_tags()."""
        await run_set_tags(self.client, self.id, *tags)
        return self

    async def add_args(self, args: Auto | dict[str, Any] | None = "auto") -> AsyncRun:
        """Add parameters to the run. See run_add_args()."""
        await run_add_args(self.client, self.id, args)
        return self

    async def remove_args(self, args: Auto | Names = "auto", *more: Names) -> AsyncRun:
        """Remove parameters from the run, by name: ``remove_args("lr")``,
        ``remove_args("lr", "bs")``, a list of names, a dict (its keys) or ``'auto'``
        (the detected ones, the default). See run_remove_args()."""
        await run_remove_args(self.client, self.id, args, *more)
        return self

    async def set_args(self, args: Auto | dict[str, Any] | None = "auto") -> AsyncRun:
        """Set the run parameters. See run_set_args()."""
        await run_set_args(self.client, self.id, args)
        return self

    async def add_env(self, env: Auto | dict[str, Any] | None = "auto") -> AsyncRun:
        """Add environment variables to the run. See run_add_env()."""
        await run_add_env(self.client, self.id, env)
        return self

    async def remove_env(self, env: Auto | Names = "auto", *more: Names) -> AsyncRun:
        """Remove environment variables from the run, by name (``remove_env("HOME")``),
        as remove_args() does; ``'auto'`` (the default): those in ``os.environ``."""
        await run_remove_env(self.client, self.id, env, *more)
        return self

    async def set_env(self, env: Auto | dict[str, Any] | None = "auto") -> AsyncRun:
        """Set the run environment. See run_set_env()."""
        await run_set_env(self.client, self.id, env)
        return self

    async def add_extras(self, extras: dict[str, Any] | None = None) -> AsyncRun:
        """Add extras to the run. See run_add_extras()."""
        await run_add_extras(self.client, self.id, extras)
        return self

    async def remove_extras(self, *extras: Names) -> AsyncRun:
        """Remove extras (by name) from the run. See run_remove_extras()."""
        await run_remove_extras(self.client, self.id, *extras)
        return self

    async def set_extras(self, extras: dict[str, Any] | None = None) -> AsyncRun:
        """Set the run extras. See run_set_extras()."""
        await run_set_extras(self.client, self.id, extras)
        return self

    async def add_link(self, kind: str, to_id: int) -> AsyncRun:
        """Add a link to another run."""
        await run_add_link(self.client, self.id, kind, to_id)
        return self

    async def remove_link(self, kind: str, to_id: int) -> AsyncRun:
        """Remove a link to another run."""
        await run_remove_link(self.client, self.id, kind, to_id)
        return self

    async def rewind(self, step: int) -> AsyncRun:
        """Make the run's history end at ``step``: its rows past ``step`` move to a new run
        linked ``rewound_from``; the run continues from ``step``. Buffered rows are
        written first. See run_rewind()."""
        await self.flush()
        await run_rewind(self.client, self.id, step)
        return self

    async def fork(self, step: int | None = None) -> AsyncRun:
        """A new run whose history up to ``step`` (None: all of it) equals this run's,
        with its args, linked ``forked_from``; buffered rows are written first. Returns
        the new run (this one is unchanged). See run_fork()."""
        await self.flush()
        return await run_fork(self.client, self.id, step)

    @sync_fast_path("add_metrics_nowait")
    async def add_metrics(
        self,
        metrics: dict[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> AsyncRun:
        """Add metrics to the run. See run_add_metrics().

        In buffered mode the row is checked and buffered, and written in a batch later.
        """
        buffer = self._buffer
        if buffer is None or buffer.abandoned:
            await self.client.metrics.write(self.id, metrics, step, progress, updated)
        elif not buffer.put(metrics, step, progress, updated):
            await buffer.add(metrics, step, progress, updated)  # full: waits for room first
        elif buffer.batch_waiting():
            await asyncio.sleep(0)  # the flusher takes the batch between this task's calls
        return self

    def add_metrics_nowait(
        self,
        metrics: dict[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> bool:
        """``add_metrics`` in the calling thread, without the event loop, when it can.

        Buffered: the row is buffered (False when the buffer is full). Write-through
        on SQLite, from a thread that runs no event loop: the row is written and
        committed on that thread's own connection (False when a metric has no
        column yet or a thread holds a ``with client`` block). False means nothing
        was done: call ``add_metrics`` then. The blocking API calls this first, so
        its ``add_metrics`` does not cross threads.
        """
        buffer = self._buffer
        if buffer is not None and not buffer.abandoned:
            return buffer.put(metrics, step, progress, updated)
        return self.client.metrics.write_nowait(self.id, metrics, step, progress, updated)

    async def set_buffered(
        self,
        enabled: bool = True,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_rows: int | None = None,
    ) -> AsyncRun:
        """Turn buffered (write-behind) metrics on or off for this run.

        On: ``add_metrics`` returns at once; rows are written in batches of
        ``flush_rows``, every ``flush_interval`` seconds, and on flush / stop /
        the end of ``track()``; at most ``max_rows`` (default 100 x flush_rows) wait
        in memory. Off: what is buffered is written, then each call writes through.
        See ``sqltrack.metrics.buffer``.
        """
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            await buffer.close()
        if enabled:
            self._buffer = self._new_buffer(flush_rows, flush_interval, max_rows)
        return self

    async def flush(self) -> AsyncRun:
        """Write buffered metrics now (nothing to do when the run is not buffered)."""
        buffer = self._live_buffer()
        if buffer is not None:
            await buffer.flush()
        return self


def _ending(
    error: BaseException,
    received: list[str],
    exception: str,
    interrupt: str,
    terminated: str,
    normal: str,
) -> tuple[str, BaseException | None]:
    """The status for how a tracked block ended, and the exception to raise instead."""
    if isinstance(error, asyncio.CancelledError) and received:
        if received[0] == "terminated":
            return terminated, signals.Terminated()
        return interrupt, KeyboardInterrupt()
    if isinstance(error, signals.Terminated):
        return terminated, None
    if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
        return interrupt, None
    if isinstance(error, SystemExit) and error.code in (None, 0):
        return normal, None
    return exception, None


async def run_from_env(client: AsyncClient) -> AsyncRun:
    """The run named by ``SQLTRACK_EXPERIMENT_NAME`` and/or ``SQLTRACK_EXPERIMENT_ID``
    (at least one), and optionally ``SQLTRACK_RUN_ID`` (else a new run)."""
    name = os.environ.get("SQLTRACK_EXPERIMENT_NAME") or None
    experiment_id = os.environ.get("SQLTRACK_EXPERIMENT_ID") or None
    if name is None and experiment_id is None:
        raise ValueError("set SQLTRACK_EXPERIMENT_NAME and/or SQLTRACK_EXPERIMENT_ID")
    try:
        exp_id = None if experiment_id is None else int(experiment_id)
    except ValueError:
        raise ValueError(f"SQLTRACK_EXPERIMENT_ID={experiment_id!r} is not an integer") from None
    exp_id, _ = await experiment_row(client, exp_id, name)
    return await AsyncRun.create(client, exp_id, "SQLTRACK_RUN_ID")

