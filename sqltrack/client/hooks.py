"""What a client must finish before it is gone: its close hooks and its open runs.

An ``AsyncClient`` keeps one :class:`ClientHooks`. Write-behind buffers register
a close hook (``client.on_close(buffer)``): ``client.close()`` awaits each
hook's ``close()``. Runs register while they are started and not stopped
(``run_opened`` / ``run_stopped``): at interpreter exit they get their exit
status (``sqltrack.process.exits``, the blocking API's process policy). Nothing here
imports the rest of sqltrack, so any layer may use it.
"""

from __future__ import annotations

from typing import Protocol


class CloseHook(Protocol):
    """Something ``client.close()`` finishes, e.g. a run's metric buffer."""

    def __len__(self) -> int:
        """Rows (or items) still waiting to be written."""
        ...

    def rebind(self) -> None:
        """Move to the running loop (at exit, when the original loop is gone)."""
        ...

    def abandon(self) -> None:
        """In a forked child: leave what is pending to the parent."""
        ...

    async def close(self) -> None:
        """Write what is pending and detach; raise a pending write error."""
        ...


class OpenRun(Protocol):
    """A started run: stopped with its exit status if the program ends first."""

    @property
    def id(self) -> int: ...

    @property
    def terminated_status(self) -> str: ...

    async def stop(self, status: str = ...) -> object: ...


class ClientHooks:
    """The close hooks and open runs of one client, in registration order."""

    __slots__ = ("_hooks", "_runs")

    def __init__(self) -> None:
        self._hooks: dict[CloseHook, None] = {}
        self._runs: dict[int, OpenRun] = {}

    # -- close hooks ----------------------------------------------------------
    def on_close(self, hook: CloseHook) -> None:
        """``await hook.close()`` when the client closes (registered once)."""
        self._hooks[hook] = None

    def discard(self, hook: CloseHook) -> None:
        """Forget ``hook`` (it closed itself, or was replaced)."""
        self._hooks.pop(hook, None)

    def close_hooks(self) -> list[CloseHook]:
        """The registered close hooks (a copy: closing one unregisters it)."""
        return list(self._hooks)

    def pending(self) -> int:
        """Items the close hooks still have to write."""
        return sum(len(hook) for hook in self._hooks)

    def clear_hooks(self) -> list[CloseHook]:
        """Forget every close hook and return them (a forked child drops the parent's)."""
        hooks, self._hooks = list(self._hooks), {}
        return hooks

    # -- open runs --------------------------------------------------------------
    def run_opened(self, run: OpenRun) -> None:
        """``run`` started: it is stopped with its exit status if the program ends first."""
        self._runs[run.id] = run

    def run_stopped(self, run: OpenRun) -> None:
        """``run`` was stopped: nothing to do for it at exit."""
        self._runs.pop(run.id, None)

    def open_runs(self) -> list[OpenRun]:
        """Runs started and not stopped, in the order they started."""
        return list(self._runs.values())

    def forget_runs(self) -> None:
        """Forget the open runs (a forked child: they are the parent's to stop)."""
        self._runs.clear()
