"""Small helpers shared by the tests."""

from __future__ import annotations

import json
from typing import Any


def json_value(value: Any) -> Any:
    """A JSON column as Python: PostgreSQL returns objects, SQLite returns text."""
    return json.loads(value) if isinstance(value, str) else value
