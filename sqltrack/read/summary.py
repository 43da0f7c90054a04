"""A run's summary (wandb's ``run.summary``), flattened for display.

The wandb-style module keeps the summary in ``extras["summary"]``: a metric's last
value, or what ``define_metric(summary=...)`` asked for (``{"max": 0.97, "min": 0.1}``),
plus items the user set. The run page, the runs table and ``sqltrack show`` show it as
one flat ``{key: value}``: a nested object's items become ``"<key>.<item>"`` (one level,
as wandb's table does), everything else is kept as it is.
"""

from __future__ import annotations

from typing import Any

#: The ``extras`` key that holds the summary.
SUMMARY_KEY = "summary"


def flat_summary(extras: Any) -> dict[str, Any]:
    """The summary in ``extras`` as ``{key: value}``, nested objects one level flattened;
    ``{}`` when there is none (or it is not an object)."""
    summary = extras.get(SUMMARY_KEY) if isinstance(extras, dict) else None
    if not isinstance(summary, dict):
        return {}
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict) and value:
            for item, inner in value.items():
                flat[f"{key}.{item}"] = inner
        elif not isinstance(value, dict):
            flat[str(key)] = value
    return flat
