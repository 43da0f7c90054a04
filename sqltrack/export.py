"""``sqltrack.export``: exporting runs to files (export_runs);
the public name of ``sqltrack.read.export``.

This name is that module itself (not a copy), so its functions and settings are
the same objects under both names.
"""

import sys
from typing import TYPE_CHECKING

from sqltrack.read import export as _module

if TYPE_CHECKING:  # what type checkers see here is that module's API
    from sqltrack.read.export import *  # noqa: F403

sys.modules[__name__] = _module
