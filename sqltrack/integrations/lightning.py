"""PyTorch Lightning: ``SqltrackLogger``, a ``lightning.pytorch.loggers.Logger``.

    from sqltrack.integrations.lightning import SqltrackLogger

    trainer = lightning.pytorch.Trainer(max_epochs=10, logger=SqltrackLogger(experiment="mnist"))

This module needs the ``lightning`` package (``pip install 'sqltrack[lightning]'``);
with only the older ``pytorch_lightning`` package installed it falls back to
that. ``sqltrack.integrations.pytorch_lightning.SqltrackLogger`` is the same
logger for ``pytorch_lightning.Trainer`` explicitly. Only what is installed is
supported; neither is imported by ``import sqltrack``.

What it records (rank zero, unless told otherwise; see "Ranks" below):

- ``name`` is the experiment, ``version`` the run id (an int); ``save_dir`` is the
  ``save_dir=`` given, else the trainer's ``default_root_dir`` (so ``trainer.log_dir``
  is that folder), ``root_dir`` is ``<save_dir>/<experiment>`` and ``log_dir``
  ``<save_dir>/<experiment>/version_<run id>``: Lightning's checkpoints go to
  ``<log_dir>/checkpoints``, as with its own loggers; the run is created and set
  RUNNING when the trainer sets up;
- ``log_hyperparams``: a dict, ``Namespace`` or nested config (OmegaConf,
  dataclasses) becomes the run's ``args`` (JSON-safe);
- ``log_metrics(metrics, step)``: ``add_metrics`` with ``step`` = Lightning's
  global step and ``progress`` = step / the steps the whole fit will take
  (``trainer.estimated_stepping_batches``, from max epochs / max steps; 0 when
  unbounded); names mapped by ``sqltrack.integrations.names``, originals in the
  run's ``extras["metric_names"]``; buffered (``buffered=False`` to write through),
  flushed by ``finalize``; ``save()`` (called after every log) does nothing;
- ``finalize(status)``: ``"success"`` -> COMPLETED, ``"failed"`` -> FAILED, or
  CANCELLED for Ctrl-C, or ``terminated`` (default CANCELLED) for SIGTERM, and
  ``"finished"`` (Lightning's Slurm auto-requeue) -> REQUEUED.

SIGTERM during training (a cluster pre-empting the job) raises
``sqltrack.Terminated`` in the training loop via ``sqltrack.process.sigterm`` (unless
the program installed a SIGTERM handler of its own before the trainer set up);
the run gets the ``terminated`` status and the process exits with status 143.
``run_id="SLURM_JOB_ID"`` continues the same run when a requeued job starts again.

Resumed from a checkpoint (``trainer.fit(..., ckpt_path=...)``): rank zero rewinds
the run to the checkpoint (``Run.rewind``: its rows logged past the checkpoint's
step move to a run linked ``rewound_from``) before training goes on, so the run's
history is that of an uninterrupted fit. The checkpoint's step is read with the
strategy's ``checkpoint_io`` (the checkpoint is read once more on rank zero); rows
are logged at Lightning's step of the batch, so the rows kept are those with a step
below the checkpoint's ``global_step``.

Ranks (DDP on any number of processes, ``ddp`` and ``ddp_spawn``): every rank's
logger ends in the same run. When Lightning sets up (``log_graph``, called on every
rank once the processes are up, before training) rank zero gets or creates and
starts the run, rewinds it when resuming, and broadcasts its id with the strategy;
the other ranks use that id (no race, no second run; ``logger.version`` is the id on
every rank). By default only rank zero writes metrics. ``system_metrics=`` samples
every rank's own process and device into the run (rows keyed by rank and host); the
ranks other than zero never change the run's status. ``per_rank=`` (metric names or
``fnmatch`` patterns; True: every metric) makes every rank write those metrics under
``<name>/rank<r>`` (``sqltrack.integrations.names.rank_name``; column
``<name>__rank<r>``), into the rank-zero row of the same step. This needs Lightning's
``enable_autolog_hparams`` (the default), which calls ``log_graph``.
``system_metrics=True`` (or an interval in seconds) samples the machine while
training (``sqltrack.model.system_metrics``).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import weakref
from argparse import Namespace
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .common import IntegrationRun, ending_status, find_in_stack
from .distributed import per_rank_patterns, ranked

log = logging.getLogger("sqltrack")


def _resumed_step(trainer: Any) -> int | None:
    """The last step of the history a fit resumed from a checkpoint keeps (rows are
    logged at the batch's step, so the checkpoint's ``global_step`` minus one); None
    when the trainer does not resume a fit."""
    path = getattr(trainer, "ckpt_path", None)
    if not path or getattr(getattr(trainer, "state", None), "fn", None) != "fit":
        return None
    checkpoint = trainer.strategy.checkpoint_io.load_checkpoint(path)
    step = checkpoint.get("global_step") if isinstance(checkpoint, Mapping) else None
    return int(step) - 1 if isinstance(step, int) else None

#: Lightning's finalize() status -> the run status (``"failed"`` is refined by how it failed).
STATUSES = {"success": "COMPLETED", "failed": "FAILED", "finished": "REQUEUED"}


def logger_class(namespace: str) -> type:
    """The SqltrackLogger class for a Lightning namespace (``"lightning.pytorch"`` or
    ``"pytorch_lightning"``): one implementation for both packages."""
    pl = importlib.import_module(namespace)
    base = importlib.import_module(f"{namespace}.loggers.logger")
    rank_zero_only: Any = importlib.import_module(f"{namespace}.utilities").rank_zero_only
    rank_zero_experiment: Callable[[Callable[..., Any]], Callable[..., Any]] = (
        base.rank_zero_experiment)
    only_rank_zero: Callable[[Callable[..., Any]], Callable[..., Any]] = rank_zero_only
    trainer_class = pl.Trainer
    logger_base: Any = base.Logger

    class SqltrackLogger(logger_base):  # type: ignore[misc] # Lightning's class, found at run time
        __doc__ = _LOGGER_DOC

        def __init__(
            self,
            client: Any = None,
            experiment: str | int = "lightning_logs",
            run_id: int | str | None = None,
            *,
            buffered: bool = True,
            system_metrics: bool | float = False,
            terminated: str = "CANCELLED",
            tags: tuple[str, ...] | list[str] = (),
            comment: str | None = None,
            quiet: bool | None = None,
            save_dir: str | os.PathLike[str] | None = None,
            per_rank: bool | Sequence[str] = (),
            **settings: Any,
        ) -> None:
            super().__init__()
            self.per_rank = per_rank_patterns(per_rank)
            self._warned_unshared = False
            self._save_dir = None if save_dir is None else os.fspath(save_dir)
            self.tracked = IntegrationRun(
                client, experiment, run_id, buffered=buffered, terminated=terminated,
                system_metrics=system_metrics, tags=tags, comment=comment, settings=settings,
                quiet=quiet,
            )
            self.terminated = terminated
            self._trainer: Any = None
            self._steps: tuple[Any, float] | None = None

        def __getstate__(self) -> dict[str, Any]:
            """Picklable (``ddp_spawn``): without the trainer reference (found again)."""
            state = dict(self.__dict__)
            state.update(_trainer=None, _steps=None)
            return state

        # -- what Lightning asks ----------------------------------------------------
        @property
        def name(self) -> str:
            """The experiment (its name, or its id when given one)."""
            return str(self.tracked.experiment_ref)

        @property
        def version(self) -> int | None:
            """The run id (rank zero opens the run; other ranks know it only when given)."""
            known = self.tracked.run_id
            if known is None and rank_zero_only.rank == 0:
                return int(self.experiment.id)
            return known

        @property
        def save_dir(self) -> str | None:
            """``save_dir=``, else the trainer's ``default_root_dir`` (None before a trainer)."""
            if self._save_dir is not None:
                return self._save_dir
            return getattr(self._note_trainer(), "default_root_dir", None)

        @property
        def root_dir(self) -> str | None:
            """``<save_dir>/<experiment>``."""
            save_dir = self.save_dir
            return None if save_dir is None else os.path.join(save_dir, self.name)

        @property
        def log_dir(self) -> str | None:
            """``<save_dir>/<experiment>/version_<run id>``: checkpoints go to its
            ``checkpoints`` folder (Lightning's ModelCheckpoint, as with its own loggers)."""
            root = self.root_dir
            if root is None:
                return None
            version = self.version
            return None if version is None else os.path.join(root, f"version_{version}")

        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            """The ``sqltrack.Run`` (started on first use, not again after ``finalize``)."""
            self._note_trainer()
            return self.tracked.open() if self.tracked.stopped else self.tracked.start()

        @only_rank_zero
        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            self._note_trainer()
            if isinstance(params, Namespace):
                params = vars(params)
            if not isinstance(params, Mapping):
                params = {"hparams": params}
            self.tracked.start()
            self.tracked.add_args(params)

        def log_graph(self, model: Any, input_array: Any = None) -> None:
            """Lightning calls this on every rank once the processes are up, before
            training: the ranks agree on the run (rank zero makes it and, for a fit
            resumed from a checkpoint, rewinds it; then broadcasts its id)."""
            trainer = self._note_trainer()
            if trainer is None:
                return
            rank = rank_zero_only.rank
            world = int(getattr(trainer, "world_size", 1) or 1)
            if world <= 1:  # one process: the run opens on first use, as before
                resumed = _resumed_step(trainer)
                if resumed is not None:
                    self.experiment.rewind(resumed)
                return
            run_id: int | None = None
            if rank == 0:
                try:
                    run = self.experiment
                    resumed = _resumed_step(trainer)
                    if resumed is not None:
                        run.rewind(resumed)
                    run_id = int(run.id)
                except BaseException:
                    trainer.strategy.broadcast(None, src=0)  # the others raise, not wait
                    raise
            run_id = trainer.strategy.broadcast(run_id, src=0)
            if run_id is None:
                raise RuntimeError("rank zero could not open the shared run (see its error)")
            if rank != 0 and not self.tracked.opened:
                if self.per_rank or self.tracked.system_metrics:
                    self.tracked.join(run_id)
                else:
                    self.tracked.run_id_ref = int(run_id)

        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            """Rank zero writes the metrics (those of ``per_rank`` as ``<name>/rank0``);
            the other ranks only their ``per_rank`` metrics, as ``<name>/rank<r>``."""
            trainer = self._note_trainer()
            if step is None:
                step = getattr(trainer, "global_step", 0)
            rank = int(rank_zero_only.rank)
            world = int(getattr(trainer, "world_size", 1) or 1)
            values = ranked(metrics, self.per_rank, rank, world, self.tracked.names)
            if rank == 0:
                self.tracked.start()
                self.tracked.log(values, step, self._progress(trainer, step))
            elif values:
                if not self.tracked.opened:
                    if not self._warned_unshared:
                        self._warned_unshared = True
                        log.warning("sqltrack: rank %s does not know the run (Lightning "
                                    "did not call log_graph: enable_autolog_hparams=False?); "
                                    "its per-rank metrics are not logged", rank)
                    return
                self.tracked.log(values, step, self._progress(trainer, step),
                                 record_names=False)

        def save(self) -> None:
            """Nothing to do: Lightning calls this after every log (rows are buffered)."""

        def finalize(self, status: str) -> None:
            """Rank zero stops the run with the status of how training ended; the other
            ranks write what they buffered and stop sampling (the status is rank zero's)."""
            if rank_zero_only.rank != 0:
                self.tracked.leave()
                return
            if not self.tracked.opened:
                return
            final = STATUSES.get(status, "COMPLETED")
            if status == "failed":
                final = ending_status(sys.exc_info()[1], "FAILED", "FAILED", "CANCELLED",
                                      self.terminated)
            self.tracked.stop(final)

        # -- helpers ----------------------------------------------------------------
        def _note_trainer(self) -> Any:
            """The trainer driving this logger (found once in the calling frames)."""
            trainer = self._trainer() if self._trainer is not None else None
            if trainer is None:
                trainer = find_in_stack(trainer_class)
                if trainer is not None:
                    self._trainer = weakref.ref(trainer)
            return trainer

        def _progress(self, trainer: Any, step: int) -> float:
            """step / the optimizer steps of the whole fit; 0 when unknown or unbounded."""
            if trainer is None:
                return 0.0
            if self._steps is None or self._steps[0] is not trainer:
                if getattr(getattr(trainer, "state", None), "fn", None) != "fit":
                    return 0.0
                try:
                    total = float(trainer.estimated_stepping_batches)
                except Exception:  # noqa: BLE001 - no progress rather than no metrics
                    total = math.inf
                self._steps = (trainer, total)
            total = self._steps[1]
            return step / total if math.isfinite(total) and total > 0 else 0.0

    SqltrackLogger.__module__ = f"sqltrack.integrations.{namespace.split('.')[0]}"
    SqltrackLogger.__qualname__ = "SqltrackLogger"
    return SqltrackLogger


_LOGGER_DOC = """Log a Lightning Trainer's run to sqltrack (see the module docstring).

``client``: a ``sqltrack.Client``, or None for one made from ``**settings`` and the
usual chain (``SQLTRACK_DSN_*``, ``sqltrack.conf``); with nothing configured, the
local file ``./sqltrack.db``. ``experiment``: name or id.
``run_id``: None (a new run), an id, or an environment variable holding one
(``"SLURM_JOB_ID"``). ``buffered``, ``system_metrics``, ``terminated`` (the status
on SIGTERM), ``tags`` and ``comment`` as their names say; ``quiet=True``: no line on
stderr naming the run (also ``SQLTRACK_QUIET=1``); ``save_dir``: the folder of
``log_dir`` and the checkpoints (default: the trainer's ``default_root_dir``);
``per_rank``: metric names (or ``fnmatch`` patterns; True: all) that every rank of a
DDP job logs, as ``<name>/rank<r>`` (see the module docstring).
"""

try:
    SqltrackLogger = logger_class("lightning.pytorch")
except ImportError:
    try:
        SqltrackLogger = logger_class("pytorch_lightning")
    except ImportError:
        raise ImportError(
            "sqltrack.integrations.lightning needs Lightning: pip install 'sqltrack[lightning]'"
        ) from None

__all__ = ["STATUSES", "SqltrackLogger", "logger_class"]
