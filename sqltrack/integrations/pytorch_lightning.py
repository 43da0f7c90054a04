"""``SqltrackLogger`` for the ``pytorch_lightning`` package (``pytorch_lightning.Trainer``).

The same logger as ``sqltrack.integrations.lightning.SqltrackLogger`` (see there),
subclassing ``pytorch_lightning.loggers.Logger``, for programs that import
``pytorch_lightning`` rather than ``lightning.pytorch``.
"""

from __future__ import annotations

from .lightning import logger_class

try:
    SqltrackLogger = logger_class("pytorch_lightning")
except ImportError:
    raise ImportError(
        "sqltrack.integrations.pytorch_lightning needs the pytorch_lightning package: "
        "pip install pytorch_lightning"
    ) from None

__all__ = ["SqltrackLogger"]
