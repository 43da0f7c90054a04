"""What the integrations share: a lazily opened run, JSON-safe args, scalar metric values.

Every integration writes through the blocking API (``sqltrack.Client``,
``Experiment``, ``Run``), because the frameworks' training loops are blocking
code. :class:`IntegrationRun` opens the client, experiment and run on first
use, maps metric names (``sqltrack.integrations.names``), keeps the original
names in the run's extras, and registers with ``sqltrack.process.sigterm`` while the
run is open, so that a SIGTERM raises ``sqltrack.Terminated`` (exit status 143)
in the training loop and the run gets its ``terminated`` status.

Where runs go when nothing is configured (no ``client``, no connection keyword, no
``SQLTRACK_DSN_*`` variable, no ``SQLTRACK_CONFIG_PATH``, no ``./sqltrack.conf``; see
``sqltrack.config.is_configured``): a local SQLite file, :data:`DEFAULT_FILE` in the
current folder (the wandb-style module: in ``dir=`` or ``$WANDB_DIR`` when given).
Anything configured wins. Each run an integration starts prints one line to stderr
naming the database (password masked), the run and the command to look at it;
``quiet=True``, or ``SQLTRACK_QUIET=1`` in the environment, turns it off.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from ..config import is_configured
from ..process import signals, sigterm
from .names import EXTRAS_KEY, MetricNames, known_names

#: Deepest nesting json_safe follows; deeper values are stored as their repr.
MAX_DEPTH = 32


def _text(value: str) -> str:
    """``value`` without what no engine stores (NUL, lone surrogates)."""
    value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON the run's ``args`` can hold.

    Mappings, ``argparse.Namespace``, dataclasses, OmegaConf configs and objects with
    ``to_dict()`` (Transformers configs) become objects; lists, tuples and sets
    become lists; tensors and numpy scalars their Python value; NaN and infinities
    their text; anything else ``str(value)``.
    """
    if depth > MAX_DEPTH:
        return _text(repr(value))
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif type(value).__module__.startswith("omegaconf"):
        omegaconf: Any = importlib.import_module("omegaconf")  # only when given one

        value = omegaconf.OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {_text(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    number = scalar(value)
    if number is not None:
        return json_safe(number, depth + 1)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        try:
            return json_safe(to_dict(), depth + 1)
        except Exception:  # noqa: BLE001 - fall back to the text
            pass
    return _text(str(value))


def scalar(value: Any) -> bool | int | float | str | None:
    """A metric value as a Python scalar: a one-element tensor or numpy value via
    ``.item()``; None for what is not a scalar (it is not logged)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, type):
        try:
            value = item()
        except (ValueError, RuntimeError, TypeError):
            return None  # more than one element
        if isinstance(value, (bool, int, float)):
            return value
    return None


def metric_value(value: Any) -> bool | float | str | None:
    """A metric value to store: bools and text as they are, numbers as floats
    (frameworks log ``1`` and later ``0.5`` for one metric), None to skip it."""
    value = scalar(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    return float(value)


#: The SQLite file the integrations write to when nothing is configured.
DEFAULT_FILE = "sqltrack.db"
#: An environment variable that, set to 1/true/yes, silences the line naming each run.
QUIET_ENV = "SQLTRACK_QUIET"


def default_settings(directory: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The client settings used when nothing is configured: :data:`DEFAULT_FILE` in
    ``directory`` (default: the current folder), as an absolute path."""
    path = os.path.join(os.fspath(directory) if directory else ".", DEFAULT_FILE)
    return {"engine": "sqlite", "dbpath": os.path.abspath(path)}


def is_quiet(quiet: bool | None, *variables: str) -> bool:
    """``quiet`` when given, else whether ``SQLTRACK_QUIET`` (or one of ``variables``) is on."""
    if quiet is not None:
        return bool(quiet)
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in (QUIET_ENV, *variables))


def where(client: Any) -> tuple[str, list[str]]:
    """The database of a blocking client, spelled out without secrets, and the CLI's
    connection options that name it (for "see it with: sqltrack show ID ...")."""
    from dataclasses import replace

    from ..config import SECRET_KEYS
    from ..environment import mask_passwords

    async_client = client.async_client
    settings = async_client.settings
    params = {k: "***" if k in SECRET_KEYS else v for k, v in settings.params.items()}
    shown = mask_passwords(async_client.dialect.describe_spelled_out(
        replace(settings, params=params)))
    path = async_client.dialect.database_path(settings)
    if path is not None:
        options = ["--dbpath", os.path.abspath(path)]
    else:
        options = [f"--{key}={params[key]}" for key in ("host", "port", "user", "dbname")
                   if key in params]
        if settings.schema:
            options.append(f"--schema={settings.schema}")
    return shown, options


def announce(client: Any, run_id: int, experiment: Any, note: str = "") -> None:
    """The one line naming where a run goes (stderr)."""
    import shlex

    shown, options = where(client)
    command = " ".join(shlex.quote(part) for part in ["sqltrack", "show", str(run_id), *options])
    print(f"sqltrack: run {run_id} of experiment {experiment!r} -> {shown}; "
          f"see it with: {command}{'; ' + note if note else ''}", file=sys.stderr, flush=True)


#: Frames looked at, from the caller upwards, by find_in_stack.
STACK_FRAMES = 16


def own_query(client: Any, sql: str, parameters: list[Any]) -> list[tuple[Any, ...]]:
    """Run one of sqltrack's own statements (``%s`` placeholders) on a blocking Client.

    Values go in ``parameters``, never in the SQL text (the dialect picks the placeholder).
    """
    return list(client.execute(client.async_client.dialect.sql(sql), parameters))


def find_in_stack(cls: type) -> Any:
    """The ``cls`` instance (a framework's Trainer) among the calling frames: a
    ``trainer`` or ``self`` local, or ``self.trainer`` (Lightning's connectors).

    Loggers and callbacks are not handed their trainer; this finds it once, from
    the trainer's own call into them. None when there is none.
    """
    frame: Any = sys._getframe(1)
    for _ in range(STACK_FRAMES):
        if frame is None:
            return None
        local = frame.f_locals
        owner = local.get("self")
        for candidate in (local.get("trainer"), owner):
            if isinstance(candidate, cls):
                return candidate
        attributes = getattr(owner, "__dict__", None)
        if isinstance(attributes, dict) and isinstance(attributes.get("trainer"), cls):
            return attributes["trainer"]
        frame = frame.f_back
    return None


def ending_status(error: BaseException | None, normal: str, exception: str,
                  interrupt: str, terminated: str) -> str:
    """The run status for how training ended (None: normally), as ``track()`` decides."""
    if error is None:
        return normal
    if isinstance(error, signals.Terminated):
        return terminated
    if type(error).__name__ == "SIGTERMException":  # Lightning's, raised after SIGTERM
        return terminated
    if isinstance(error, KeyboardInterrupt):
        return interrupt
    if isinstance(error, SystemExit) and error.code in (None, 0):
        return normal
    return exception


def _note_sigterm() -> None:
    """SIGTERM callback: nothing to do before Terminated is raised (the run's status is
    set where training ends, or by the blocking API at exit)."""


class IntegrationRun:
    """The run an integration writes to, opened on first use.

    ``client``: a ``sqltrack.Client``, or None to make one from ``settings`` and the
    usual chain (keywords, ``SQLTRACK_DSN_*``, ``sqltrack.conf``); a client made here is
    closed when the run stops. ``experiment``: a name (created when missing) or an id.
    ``run_id``: None (a new run), an id, or the name of an environment variable
    holding one (``"SLURM_JOB_ID"``: a requeued job continues its run).
    With no client and nothing configured, the run goes to :func:`default_settings`
    (``default_dir``: the folder of that file). ``quiet``: no line naming the run
    (default: ``SQLTRACK_QUIET``).
    """

    def __init__(
        self,
        client: Any = None,
        experiment: str | int | None = None,
        run_id: int | str | None = None,
        *,
        buffered: bool = True,
        terminated: str = "CANCELLED",
        system_metrics: bool | float = False,
        tags: tuple[str, ...] | list[str] = (),
        comment: str | None = None,
        settings: Mapping[str, Any] | None = None,
        quiet: bool | None = None,
        default_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if client is not None and not hasattr(client, "async_client"):
            raise TypeError(
                f"client must be a blocking sqltrack.Client (or None), not {type(client).__name__}"
            )
        self.given_client = client
        self.experiment_ref = experiment
        self.run_id_ref = run_id
        self.buffered = buffered
        self.terminated = terminated
        self.system_metrics = system_metrics
        self.tags = tuple(tags)
        self.comment = comment
        self.settings = dict(settings or {})
        self.quiet = quiet
        self.default_dir = os.fspath(default_dir) if default_dir is not None else None
        #: The line naming the run was printed (once per run, not again on a restart).
        self.announced = False
        #: Said at the end of that line (the wandb-style module's offline mode).
        self.note = ""
        self.client: Any = None
        self.run: Any = None
        self.names = MetricNames()
        self.started = False
        #: Stopped (and not started again since).
        self.stopped = False

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Lightning's ``ddp_spawn`` sends loggers to new processes): without
        client and run, so the new process opens its own from the settings and the
        usual chain, and continues the same run once it was opened."""
        state = dict(self.__dict__)
        state.update(given_client=None, client=None, run=None, started=False)
        return state

    @property
    def run_id(self) -> int | None:
        """The run's id once known (given as an int, or the run opened once)."""
        ref = self.run_id_ref
        return ref if isinstance(ref, int) and not isinstance(ref, bool) else None

    @property
    def opened(self) -> bool:
        return self.run is not None

    def open(self) -> Any:
        """The run (a ``sqltrack.Run``), opening client, experiment and run when needed."""
        if self.run is not None:
            return self.run
        import sqltrack

        client = self.given_client
        if client is None:
            settings = self.settings
            if not is_configured(**settings):
                settings = {**settings, **default_settings(self.default_dir)}
            client = sqltrack.Client(**settings)
        ref = self.experiment_ref
        if isinstance(ref, int) and not isinstance(ref, bool):
            experiment = sqltrack.Experiment(client, experiment_id=ref)
        else:
            experiment = sqltrack.Experiment(client, name=str(ref))
        run = experiment.get_run(self.run_id_ref)
        rows = own_query(client, "SELECT extras FROM runs WHERE id = %s", [int(run.id)])
        self.names = MetricNames(known_names(rows[0][0] if rows else None))
        if self.tags:
            run.add_tags(*self.tags)
        if self.comment is not None:
            run.set_comment(self.comment)
        if self.buffered:
            run.set_buffered(True)
        self.client, self.run = client, run
        self.run_id_ref = run.id  # opened again (after stop), it is the same run
        return run

    def start(self) -> Any:
        """Open the run and set it RUNNING (once)."""
        run = self.open()
        if not self.started:
            start_kwargs: dict[str, Any] = {"terminated": self.terminated}
            if self.system_metrics:
                start_kwargs["system_metrics"] = self.system_metrics
            run.start(**start_kwargs)
            self.started, self.stopped = True, False
            if not self.announced and not is_quiet(self.quiet):
                announce(self.client, int(run.id), self.experiment_ref, self.note)
            self.announced = True
            # SIGTERM now raises sqltrack.Terminated in the main thread (exit 143),
            # unless the program has a SIGTERM handler of its own.
            sigterm.register(self, _note_sigterm)
        return run

    def add_args(self, args: Mapping[str, Any]) -> None:
        """Merge ``args`` (made JSON-safe) into the run's args."""
        safe = json_safe(dict(args))
        if safe:
            self.open().add_args(safe)

    def join(self, run_id: int) -> Any:
        """On a rank other than zero: open run ``run_id`` (rank zero made and started it)
        without touching its status, and sample this rank's machine into it when
        ``system_metrics`` is on. Undone by :meth:`leave`."""
        self.run_id_ref = int(run_id)
        run = self.open()
        if self.system_metrics:
            run.start_system_metrics(self.system_metrics)
        return run

    def leave(self) -> None:
        """The end on a rank other than zero: buffered rows written, sampling stopped,
        an own client closed; the run's status is rank zero's to set."""
        run, client = self.run, self.client
        if run is None:
            return
        try:
            run.stop_system_metrics()
            run.flush()
        finally:
            if self.given_client is None:
                self.run = self.client = None
                client.close()

    def log(self, metrics: Mapping[str, Any], step: int, progress: float = 0.0,
            record_names: bool = True) -> None:
        """Write one row: names mapped to columns, values as :func:`metric_value`.
        ``record_names``: keep new original names in the run's extras (rank zero only:
        the ranks would overwrite each other's mapping)."""
        values = {}
        for name, value in metrics.items():
            value = metric_value(value)
            if value is not None:
                values[name] = value
        if not values:
            return
        columns = self.names.columns(values)
        run = self.open()
        if self.names.changed and record_names:
            run.add_extras({EXTRAS_KEY: dict(self.names.originals)})
            self.names.changed = False
        progress = min(1.0, max(0.0, float(progress))) if math.isfinite(progress) else 0.0
        run.add_metrics(columns, step=int(step), progress=progress)

    def flush(self) -> None:
        if self.run is not None:
            self.run.flush()

    def stop(self, status: str) -> None:
        """Stop the run with ``status`` (buffered rows written first); close an own client."""
        run, client = self.run, self.client
        sigterm.deregister(self)
        if run is None:
            return
        try:
            run.stop(status)
        finally:
            self.started, self.stopped = False, True
            if self.given_client is None:
                self.run = self.client = None
                client.close()
