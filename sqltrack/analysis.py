"""``sqltrack.analysis``: DataFrame helpers (metrics_frame, runs_frame, ...);
the public name of ``sqltrack.read.analysis``.

This name is that module itself (not a copy), so its functions and settings are
the same objects under both names.
"""

import sys
from typing import TYPE_CHECKING

from sqltrack.read import analysis as _module

if TYPE_CHECKING:  # what type checkers see here is that module's API
    from sqltrack.read.analysis import *  # noqa: F403

sys.modules[__name__] = _module
