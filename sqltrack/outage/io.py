"""Local file work off the event loop, and the one-line notices of the exit path."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def offload(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a worker thread (a spool write must not stall an async training
    loop); at interpreter exit, when no new thread may start, here and now."""
    try:
        return await asyncio.to_thread(func, *args)
    except RuntimeError as error:
        if "interpreter shutdown" not in str(error):
            raise
        return func(*args)


def warn(line: str) -> None:
    """One line on stderr (the exit path of a script: no logging set up, no traceback)."""
    with contextlib.suppress(Exception):
        sys.stderr.write(f"sqltrack: {line}\n")
        sys.stderr.flush()
