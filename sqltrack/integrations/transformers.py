"""Hugging Face Transformers: ``SqltrackCallback``, a ``transformers.TrainerCallback``.

    from sqltrack.integrations.transformers import SqltrackCallback

    trainer = Trainer(model, args, train_dataset=data,
                      callbacks=[SqltrackCallback(experiment="bert")])

Needs ``transformers`` (``pip install 'sqltrack[transformers]'``); ``import
sqltrack`` does not import it. Only the world process zero writes metrics. In a
distributed job (``torchrun``; ``torch.distributed`` initialised) every process ends
in the same run: at ``on_train_begin`` process zero gets or creates and starts the run
and broadcasts its id, and with ``system_metrics=`` every process samples its own
process and device into it (rows keyed by rank and host); the other processes never
change the run's status. What it records:

- ``on_train_begin``: the run starts (RUNNING); its ``args`` are the
  ``TrainingArguments`` (``args.to_dict()``, tokens masked as Transformers masks
  them) and ``args["model_config"]``, the model's config (``config.to_dict()``);
- ``on_log``: each log (``loss``, ``learning_rate``, ``grad_norm``, ``epoch``,
  ``eval_*``, the final ``train_runtime`` ...) is one row, ``step`` =
  ``state.global_step`` and ``progress`` = global step / ``state.max_steps`` (or
  epoch / epochs when there is no step count); names mapped by
  ``sqltrack.integrations.names``; buffered (``buffered=False`` to write through);
- ``on_train_end``: the run stops COMPLETED.

Resumed from a checkpoint (``trainer.train(resume_from_checkpoint=...)``, with the same
run: ``run_id=`` an id or ``"SLURM_JOB_ID"``): ``on_train_begin`` sees the restored
``state.global_step`` and rewinds the run to it (``Run.rewind``: rows logged past the
checkpoint move to a run linked ``rewound_from``), so the history equals an
uninterrupted run's (Transformers logs a step after it is taken, so the checkpoint's
step itself is kept).

A crash inside ``trainer.train()`` ends the run FAILED (Ctrl-C: CANCELLED;
SIGTERM: ``terminated``, default CANCELLED, and the process exits with status
143 through ``sqltrack.process.sigterm``): when the Trainer is built with the callback,
the callback wraps that trainer's ``train`` method (``trainer.train``, on the
instance). For a callback added later with ``trainer.add_callback``, call
``callback.watch(trainer)``; otherwise the run is stopped at interpreter exit
with the status of how the program ended (the blocking API's exit handling).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

try:
    import transformers
except ImportError:
    raise ImportError(
        "sqltrack.integrations.transformers needs transformers: "
        "pip install 'sqltrack[transformers]'"
    ) from None

from .common import IntegrationRun, ending_status, find_in_stack
from .distributed import broadcast_run_id

#: Marks a ``train`` method already wrapped by a SqltrackCallback.
_WRAPPED = "__sqltrack_callback__"


class SqltrackCallback(transformers.TrainerCallback):
    """Log a Transformers Trainer's run to sqltrack (see the module docstring).

    ``client``: a ``sqltrack.Client``, or None for one made from ``**settings`` and
    the usual chain (``SQLTRACK_DSN_*``, ``sqltrack.conf``); with nothing configured,
    the local file ``./sqltrack.db``. ``experiment``: name or id. ``run_id``: None (a
    new run), an id, or an environment variable holding one (``"SLURM_JOB_ID"``).
    ``buffered``, ``system_metrics``, ``terminated`` (the status on SIGTERM), ``tags``
    and ``comment`` as their names say; ``quiet=True``: no line on stderr naming the
    run (also ``SQLTRACK_QUIET=1``).
    """

    def __init__(
        self,
        client: Any = None,
        experiment: str | int = "transformers",
        run_id: int | str | None = None,
        *,
        buffered: bool = True,
        system_metrics: bool | float = False,
        terminated: str = "CANCELLED",
        tags: tuple[str, ...] | list[str] = (),
        comment: str | None = None,
        quiet: bool | None = None,
        **settings: Any,
    ) -> None:
        self.tracked = IntegrationRun(
            client, experiment, run_id, buffered=buffered, terminated=terminated,
            system_metrics=system_metrics, tags=tags, comment=comment, settings=settings,
            quiet=quiet,
        )
        self.terminated = terminated

    @property
    def run_id(self) -> int | None:
        """The run's id (None before training began in this process)."""
        return self.tracked.run_id

    # -- crash handling -----------------------------------------------------------
    def watch(self, trainer: Any) -> None:
        """Wrap ``trainer.train`` so that a crash ends the run with its status (once)."""
        train = trainer.train
        if getattr(train, _WRAPPED, None) is self:
            return

        @functools.wraps(train)
        def train_tracked(*args: Any, **kwargs: Any) -> Any:
            try:
                return train(*args, **kwargs)
            except BaseException as error:
                if self.tracked.started:
                    self.tracked.stop(ending_status(error, "COMPLETED", "FAILED", "CANCELLED",
                                                    self.terminated))
                elif self.tracked.opened:  # another process of a distributed job
                    self.tracked.leave()
                raise

        setattr(train_tracked, _WRAPPED, self)
        trainer.train = train_tracked

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = find_in_stack(transformers.Trainer)
        if trainer is not None:
            self.watch(trainer)

    # -- the run ------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            run_id = broadcast_run_id(None)  # process zero's run (None: no process group)
            if run_id is not None and self.tracked.system_metrics:
                self.tracked.join(run_id)
            elif run_id is not None:
                self.tracked.run_id_ref = run_id
            return
        try:
            run = self.tracked.start()
            if state.global_step > 0:  # resumed from a checkpoint: the history ends there
                run.rewind(int(state.global_step))
        except BaseException:
            broadcast_run_id(None, failed=True)  # the other processes raise, not wait
            raise
        broadcast_run_id(int(run.id))
        recorded: dict[str, Any] = dict(args.to_dict())
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            recorded["model_config"] = config.to_dict()
        self.tracked.add_args(recorded)

    def on_log(self, args: Any, state: Any, control: Any,
               logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if state.max_steps and state.max_steps > 0:
            progress = state.global_step / state.max_steps
        elif state.epoch is not None and state.num_train_epochs:
            progress = state.epoch / state.num_train_epochs
        else:
            progress = 0.0
        self.tracked.log(logs, state.global_step, progress)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.tracked.started:
            self.tracked.stop("COMPLETED")
        elif not state.is_world_process_zero:
            self.tracked.leave()


__all__ = ["SqltrackCallback"]
