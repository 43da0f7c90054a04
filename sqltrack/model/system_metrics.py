"""System metrics: the machine sampled every N seconds while a run is tracked.

Opt-in (``run.track(system_metrics=True)``, ``system_metrics=`` on the Lightning
logger, the Transformers callback and the wandb-style ``init``; a number is the
interval in seconds, ``True`` means :data:`DEFAULT_INTERVAL`). A task on the
client's event loop takes a sample at once and then every interval, and is
cancelled when the run stops. Each sample is one row per reading in the
``system_metrics`` table: ``(run_id, time, name, value, rank, host)``, keyed by
``(run_id, rank, host, name, time)``.

Ranks and nodes: every process of a distributed job that tracks the run samples
its own process and device(s) into the same run, under its ``rank`` (the global
rank: ``torch.distributed`` when initialised, else ``RANK``, else ``SLURM_PROCID``,
else 0; see :func:`current_rank`) and ``host`` (``socket.gethostname()``). Readings
of the whole machine (``cpu_percent``, ``system_memory_*``) are then stored once per
rank of a node. Per rank, min/mean/max across ranks in SQL::

    SELECT name, time, MIN(value), AVG(value), MAX(value) FROM system_metrics
    WHERE run_id = 7 GROUP BY name, time ORDER BY name, time;
    -- per node: ... GROUP BY host, name, time

Readings (names as stored):

- with ``psutil`` (``pip install 'sqltrack[system]'``): ``cpu_percent`` (the
  machine), ``process_cpu_percent``, ``process_rss_bytes``,
  ``system_memory_used_bytes``, ``system_memory_percent``;
- without it, what the standard library has: ``load_average_1m`` and
  ``process_max_rss_bytes``;
- with NVML (``pip install 'sqltrack[nvml]'``, i.e. ``nvidia-ml-py``) and an
  NVIDIA driver, per GPU ``i`` of this rank (:func:`own_gpus`: in a distributed job
  the GPU of its ``LOCAL_RANK`` among ``CUDA_VISIBLE_DEVICES``, else every GPU of
  the machine; ``i`` is NVML's index): ``gpu{i}_utilization_percent``,
  ``gpu{i}_memory_used_bytes``, ``gpu{i}_memory_percent``, ``gpu{i}_power_watts``.
  Without the package, the driver or a GPU there are simply no GPU readings
  (logged once at debug level); a reading that fails is left out of its sample.

A sample that cannot be written (say, the server is away) is dropped with a
warning; training goes on.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from contextlib import suppress
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: Seconds between two samples unless told otherwise.
DEFAULT_INTERVAL = 10.0
log = logging.getLogger("sqltrack")


def _int_env(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    try:
        return int(text) if text else None
    except ValueError:
        return None


def current_rank() -> int:
    """This process's global rank: ``torch.distributed`` when it is initialised (never
    imported here), else ``RANK``, else ``SLURM_PROCID``, else 0."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        with suppress(Exception):
            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank())
    for name in ("RANK", "SLURM_PROCID"):
        value = _int_env(name)
        if value is not None:
            return value
    return 0


def own_gpus(count: int, environ: Any = None) -> list[int]:
    """NVML indexes (of ``count`` GPUs) this rank uses: when ``LOCAL_RANK`` is set (and
    ``WORLD_SIZE``, if set, is above 1), the GPU of ``LOCAL_RANK`` among the visible ones
    (``CUDA_VISIBLE_DEVICES``, when it lists numbers); else every visible GPU."""
    env = os.environ if environ is None else environ
    visible = list(range(count))
    text = env.get("CUDA_VISIBLE_DEVICES")
    if text is not None:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if all(p.isdigit() for p in parts):
            visible = [int(p) for p in parts if int(p) < count]
    local = env.get("LOCAL_RANK", "").strip()
    world = env.get("WORLD_SIZE", "").strip()
    if local.isdigit() and not (world.isdigit() and int(world) <= 1):
        index = int(local)
        return [visible[index]] if index < len(visible) else []
    return visible


def interval_of(system_metrics: bool | float) -> float | None:
    """The sampling interval for a ``system_metrics=`` option (None: off)."""
    if system_metrics is False or system_metrics is None:
        return None
    if system_metrics is True:
        return DEFAULT_INTERVAL
    interval = float(system_metrics)
    if not interval > 0 or interval != interval or interval == float("inf"):
        raise ValueError(
            f"system_metrics interval must be a positive number, not {system_metrics!r}"
        )
    return interval


class _Nvml:
    """The GPUs NVML reports; no GPUs when NVML is not there (fail soft)."""

    def __init__(self) -> None:
        self.module: Any = None
        self.handles: list[Any] = []
        self.indexes: list[int] = []
        try:
            pynvml: Any = importlib.import_module("pynvml")  # the nvidia-ml-py package

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self.indexes = own_gpus(count)
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in self.indexes]
            self.module = pynvml
        except Exception as error:  # noqa: BLE001 - no package, no driver, no GPU
            log.debug("sqltrack: no GPU metrics (%s: %s)", type(error).__name__, error)

    def read(self, out: dict[str, float]) -> None:
        nvml = self.module
        for i, handle in zip(self.indexes, self.handles, strict=True):
            with suppress(Exception):
                out[f"gpu{i}_utilization_percent"] = float(
                    nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                )
            with suppress(Exception):
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                out[f"gpu{i}_memory_used_bytes"] = float(memory.used)
                out[f"gpu{i}_memory_percent"] = 100.0 * memory.used / memory.total
            with suppress(Exception):
                out[f"gpu{i}_power_watts"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0

    def close(self) -> None:
        if self.module is not None:
            with suppress(Exception):
                self.module.nvmlShutdown()
            self.module, self.handles = None, []


class Sampler:
    """Reads the machine: :meth:`sample` returns ``{name: value}`` (see the module doc)."""

    def __init__(self) -> None:
        psutil: Any = None
        with suppress(ImportError):
            psutil = importlib.import_module("psutil")
        self.psutil: Any = psutil
        self.process: Any = None
        if psutil is not None:  # the first cpu_percent() call only starts the count
            self.process = psutil.Process()
            psutil.cpu_percent(interval=None)
            self.process.cpu_percent(interval=None)
        self.nvml = _Nvml()

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        psutil = self.psutil
        if psutil is not None:
            out["cpu_percent"] = float(psutil.cpu_percent(interval=None))
            with suppress(Exception):
                out["process_cpu_percent"] = float(self.process.cpu_percent(interval=None))
                out["process_rss_bytes"] = float(self.process.memory_info().rss)
            memory = psutil.virtual_memory()
            out["system_memory_used_bytes"] = float(memory.used)
            out["system_memory_percent"] = float(memory.percent)
        else:
            with suppress(OSError, AttributeError):
                out["load_average_1m"] = float(os.getloadavg()[0])
            with suppress(ImportError):
                import resource

                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB (bytes on macOS)
                scale = 1 if sys.platform == "darwin" else 1024
                out["process_max_rss_bytes"] = float(rss * scale)
        self.nvml.read(out)
        return out

    def close(self) -> None:
        self.nvml.close()


_INSERT = "INSERT INTO system_metrics (run_id, time, name, value, rank, host) VALUES "
_ROW = "(%s, %s, %s, %s, %s, %s)"


def current_host() -> str:
    """The node's name, as stored in ``system_metrics.host``."""
    import socket

    return socket.gethostname()


async def write_sample(
    client: AsyncClient, run_id: int, values: dict[str, float], time: datetime | None = None,
    rank: int = 0, host: str = "",
) -> None:
    """Write one sample: a row per reading at ``time`` (default now, UTC), of ``rank``
    on ``host``."""
    if not values:
        return
    stamp = (time or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat()
    params: list[Any] = []
    for name, value in values.items():
        params += [run_id, stamp, name, value, rank, host]
    sql = _INSERT + ", ".join([_ROW] * len(values)) + " ON CONFLICT DO NOTHING"
    await client.query(sql, params)


class SystemMetrics:
    """Samples the machine on the running event loop every ``interval`` seconds for a run.

    ``start()`` (in a coroutine) takes the first sample at once, ``await stop()``
    ends the task. ``rank`` / ``host``: what the rows say (default :func:`current_rank`,
    :func:`current_host`).
    """

    def __init__(self, client: AsyncClient, run_id: int, interval: float = DEFAULT_INTERVAL,
                 sampler: Sampler | None = None, rank: int | None = None,
                 host: str | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.rank = current_rank() if rank is None else rank
        self.host = current_host() if host is None else host
        self.interval = interval_of(interval) or DEFAULT_INTERVAL
        self.sampler = sampler or Sampler()
        self.task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.samples = 0

    def start(self) -> SystemMetrics:
        if self.task is None:
            self._stopping = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._sample_forever())
        return self

    async def _sample_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await write_sample(self.client, self.run_id, self.sampler.sample(),
                                   rank=self.rank, host=self.host)
                self.samples += 1
            except Exception as error:  # noqa: BLE001 - a lost sample must not stop training
                log.warning("sqltrack: system metrics of run %s not written (%s: %s)",
                            self.run_id, type(error).__name__, error)
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def stop(self) -> None:
        """Stop sampling; a write under way finishes first (it is not cancelled midway)."""
        task, self.task = self.task, None
        if task is not None:
            self._stopping.set()
            try:
                await task
            except asyncio.CancelledError:
                task.cancel()
                raise
        self.sampler.close()
