"""``import sqltrack.wandb as wandb``: the wandb-style API (``sqltrack.integrations.wandb``).

This name is that module itself (not a copy), so ``wandb.run``, ``wandb.config``
and ``wandb.summary`` follow ``init()``. See its docstring for what is covered.
"""

import sys
from typing import TYPE_CHECKING

from sqltrack.integrations import wandb as _wandb

if TYPE_CHECKING:  # what type checkers see here is that module's API
    from sqltrack.integrations.wandb import *  # noqa: F403

sys.modules[__name__] = _wandb
