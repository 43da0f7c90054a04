"""Who a run is on the page, and how runs are grouped and their curves aggregated.

Identity: a run's colour is a function of its id (``color_of``), so the runs table's
swatch and every chart of the compare page draw a run in the same colour whatever
else is shown. Its display name is its name, else the args that differ across the
runs shown (``display_name``), else ``run <id>``.

Groups: runs are grouped by ``group_key`` (an arg, an extras key, the wandb-style
``group``, the tags or the status). ``aggregate`` draws one line per group: at every
step where some run of the group has a point (after the database's downsampling),
each run's curve is linearly interpolated within its own step range; the mean over
the runs that cover that step, with a band of their min–max or of mean ± std.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from .api import BadRequest

#: Colours of runs (and groups), as the page's charts draw them (plotly's default ten).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
#: Differing args named in a display name at most.
NAME_ARGS = 3
#: Bands a group's line may carry.
BANDS = ("minmax", "std")


def color_of(run_id: int) -> str:
    """The run's colour: the same on the runs table and on every chart."""
    return PALETTE[run_id % len(PALETTE)]


def text_of(value: Any) -> str:
    """A JSON value as a name: text as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def differing_args(args: Sequence[Mapping[str, Any]]) -> list[str]:
    """The arg keys whose values differ across ``args`` (one mapping per run), sorted."""
    if len(args) < 2:
        return []
    keys = sorted({key for one in args for key in one})
    return [key for key in keys
            if len({text_of(one[key]) if key in one else "\0missing" for one in args}) > 1]


def display_name(run_id: int, name: str | None, args: Mapping[str, Any],
                 differing: Sequence[str]) -> str:
    """The run's name, else ``k=v`` of the first differing args, else ``run <id>``."""
    if name:
        return name
    shown = [f"{key}={text_of(args[key])}" for key in differing if key in args][:NAME_ARGS]
    return " ".join(shown) if shown else f"run {run_id}"


def parse_group(text: str | None) -> str | None:
    """A group spec: ``args.<key>``, ``extras.<key>``, ``group``, ``tags`` or ``status``."""
    if not text:
        return None
    text = text.strip()
    head, _, rest = text.partition(".")
    if text in ("group", "tags", "status") or (head in ("args", "extras") and rest):
        return text
    raise BadRequest(f"unknown group {text!r}: use args.<key>, extras.<key>, group, tags or "
                     "status")


def parse_band(text: str | None) -> str:
    """``minmax`` (default) or ``std``."""
    if not text:
        return "minmax"
    if text not in BANDS:
        raise BadRequest(f"band must be one of {', '.join(BANDS)}, not {text!r}")
    return text


def group_key(spec: str, status: str, tags: Sequence[str], args: Mapping[str, Any],
              extras: Mapping[str, Any]) -> str:
    """The run's group under ``spec`` as text (``"(none)"`` when it has no value)."""
    head, _, rest = spec.partition(".")
    if spec == "status":
        return status
    if spec == "tags":
        return ", ".join(sorted(tags)) or "(none)"
    source = args if head == "args" else extras
    key = "group" if spec == "group" else rest
    if key not in source or source[key] is None:
        return "(none)"
    return text_of(source[key])


def _interpolate(steps: list[float], ys: list[float], at: float) -> float | None:
    """The curve's value at step ``at`` (linear between points), None outside its range."""
    if not steps or at < steps[0] or at > steps[-1]:
        return None
    index = bisect_left(steps, at)
    if steps[index] == at:
        return ys[index]
    x0, x1, y0, y1 = steps[index - 1], steps[index], ys[index - 1], ys[index]
    return y0 + (y1 - y0) * (at - x0) / (x1 - x0)


def aggregate(curves: Sequence[tuple[Sequence[float], Sequence[float]]],
              band: str) -> dict[str, list[float]]:
    """One line over several curves ``(steps, ys)``: ``step``, ``mean``, ``low``, ``high``
    and ``count`` (runs covering each step); see the module doc."""
    prepared = []
    for steps, ys in curves:
        pairs = sorted({float(s): float(y) for s, y in zip(steps, ys, strict=True)}.items())
        prepared.append(([s for s, _ in pairs], [y for _, y in pairs]))
    at_steps = sorted({s for steps, _ in prepared for s in steps})
    out: dict[str, list[float]] = {"step": [], "mean": [], "low": [], "high": [], "count": []}
    for at in at_steps:
        values = [v for steps, ys in prepared
                  if (v := _interpolate(steps, ys, at)) is not None]
        mean = math.fsum(values) / len(values)
        if band == "std":
            spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
            low, high = mean - spread, mean + spread
        else:
            low, high = min(values), max(values)
        out["step"].append(at)
        out["mean"].append(mean)
        out["low"].append(low)
        out["high"].append(high)
        out["count"].append(len(values))
    return out
