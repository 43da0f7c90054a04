"""Markers that tell ``tools/gen_sync.py`` how to write a blocking method.

They do nothing at run time (each returns the function itself, so the async
call costs the same); the generator reads them in the source (AST).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def sync_fast_path(nowait: str) -> Callable[[F], F]:
    """The blocking method first calls the plain method ``nowait`` (same arguments) in
    the calling thread, and crosses to the loop only when it returns False.

    Buffered ``add_metrics`` hands its row over this way, without a thread round trip.
    """

    def mark(function: F) -> F:
        return function

    del nowait
    return mark
