"""Run your own clean-up when the process gets SIGTERM (a cluster pre-empting the job).

``register(key, func)`` adds ``func`` (called with no arguments) under ``key``;
``deregister(key)`` removes it (an unknown key is ignored); registering a key
again replaces its function and keeps its place. ``register(func)`` uses the
function itself as key and returns it, so it also works as a decorator.

On SIGTERM the callbacks run once, in the main thread, in the order they were
registered; an exception in one is logged (logger ``sqltrack``) and the next one
still runs. Then:

* inside ``run.track()`` (blocking or ``async with``, the main thread): the run
  gets its ``terminated`` status and the process exits with status 143
  (``sqltrack.Terminated``, a SystemExit, so ``finally`` blocks run);
* elsewhere, once ``register`` or ``enable`` installed the handler: Terminated is
  raised where the main thread is, so the process exits with status 143 through
  the normal exit path; the blocking API then stops runs left open by
  ``run.start()`` with their ``terminated`` status.

``register`` installs that handler when SIGTERM has its default action (or
sqltrack's own handling); a program's own SIGTERM handler is kept, and the
callbacks then run only inside ``track()``. ``enable()`` (as in sqltrack 0.1.x)
installs it in any case. Both work from the main thread only (Python delivers
signals there); from another thread, ``register`` only records the callback.

In an async program the callbacks run in the event loop's thread: they must not
wait for that loop (no blocking sqltrack calls there). A second SIGTERM while
the callbacks or the clean-up run ends the process at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar, overload

from . import signals

__all__ = ["deregister", "enable", "register"]

F = TypeVar("F", bound=Callable[[], object])


@overload
def register(key: F) -> F: ...
@overload
def register(key: Hashable, func: Callable[[], object]) -> Callable[[], object]: ...
def register(key: Any, func: Callable[[], object] | None = None) -> Callable[[], object]:
    """Run ``func()`` on SIGTERM (see the module docstring); ``register(func)`` also works."""
    if func is None:
        if not callable(key):
            raise TypeError(f"register(key, func) needs a callable func, not {key!r} alone")
        func = key
    elif not callable(func):
        raise TypeError(f"SIGTERM callback must be callable, not {func!r}")
    signals.callbacks[key] = func
    signals.install_on_sigterm(replace=False)
    return func


def deregister(key: Hashable) -> None:
    """Forget the callback registered under ``key`` (nothing happens if there is none)."""
    signals.callbacks.pop(key, None)


def enable() -> None:
    """Make SIGTERM run the callbacks and exit with status 143, replacing any handler."""
    if not signals.install_on_sigterm(replace=True):
        raise RuntimeError("sqltrack.process.sigterm.enable() must be called from the main thread")
