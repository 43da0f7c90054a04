"""``import sqltrack.wandb as wandb``: the wandb-style API (``sqltrack.integrations.wandb``).

This name is that module itself (not a copy), so ``wandb.run``, ``wandb.config``
and ``wandb.summary`` follow ``init()``. See its docstring for what is covered.
"""

import sys

from sqltrack.integrations import wandb as _wandb

sys.modules[__name__] = _wandb
