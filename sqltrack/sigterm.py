"""``sqltrack.sigterm``: 0.1.x's SIGTERM callbacks (register, deregister, enable);
the public name of ``sqltrack.process.sigterm``.

This name is that module itself (not a copy), so its functions and settings are
the same objects under both names.
"""

import sys
from typing import TYPE_CHECKING

from sqltrack.process import sigterm as _module

if TYPE_CHECKING:  # what type checkers see here is that module's API
    from sqltrack.process.sigterm import *  # noqa: F403

sys.modules[__name__] = _module
