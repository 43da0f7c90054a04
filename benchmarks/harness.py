"""The measuring loop and the results table shared by every workload.

A ``Case`` is one thing to measure: a callable that sets itself up (untimed), does
its work once, times only that work, cleans up and returns its sample (seconds, or
whatever the workload needs). ``measure`` runs a list of cases in interleaved
rounds, so a case and its raw-driver baseline see the same machine noise; each
round starts with a different case, so no case always runs first.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NA = "n/a"
DASH = "—"


@dataclass(frozen=True)
class Target:
    """A goal: ``ratio <= limit`` (``at_most``) or ``ratio >= limit``.

    With a ``unit`` the goal is on the case's own value (in that unit), not on a ratio:
    ``Target(5, unit="ms")`` is "at most 5 ms".
    """

    limit: float
    at_most: bool = True
    unit: str | None = None

    def __str__(self) -> str:
        bound = f"{'≤' if self.at_most else '≥'} {self.limit:g}"
        return f"{bound} {self.unit}" if self.unit else f"{bound}x"

    def met(self, ratio: float) -> bool:
        return ratio <= self.limit if self.at_most else ratio >= self.limit


@dataclass
class Case:
    """One measured thing. ``skip`` (a reason) marks it as not runnable here.

    ``baseline`` names the case it is compared with (ratio = this / baseline),
    ``target`` is the goal for that ratio, ``also`` names further baselines shown
    for information.
    """

    name: str
    run: Callable[[], Any] | None
    skip: str | None = None
    baseline: str | None = None
    target: Target | None = None
    also: tuple[str, ...] = ()


@dataclass
class Row:
    """One line of a results table, already formatted."""

    case: str
    value: str
    baseline: str = DASH
    ratio: str = DASH
    target: str = DASH
    met: str = DASH


@dataclass
class Section:
    """One workload's table, with a sentence on how to read it.

    ``counted``: whether its targets count in the Targets table (the tables of cases
    timed alone in fresh processes are shown for comparison and do not count).
    """

    title: str
    note: str
    rows: list[Row] = field(default_factory=list)
    counted: bool = True


@dataclass
class Isolated:
    """A workload's cases for timing each alone in a fresh process (``run.py --isolated``):
    the cases (as the interleaved run builds them), the figure of one case's samples,
    how to print it, and what it is."""

    cases: list[Case]
    value: Callable[[list[Any]], float]
    fmt: Callable[[float], str]
    unit: str


def measure(
    cases: list[Case], rounds: int, loop: asyncio.AbstractEventLoop
) -> dict[str, list[Any]]:
    """Run the runnable cases ``rounds`` times, interleaved; the samples of each case.

    A case that raises is reported and marked (``skip = "failed: ..."``), and
    leaves the samples; the other cases go on.
    """
    runnable = [c for c in cases if c.skip is None and c.run is not None]
    samples: dict[str, list[Any]] = {c.name: [] for c in runnable}
    for number in range(rounds):
        shift = number % max(len(runnable), 1)
        for case in runnable[shift:] + runnable[:shift]:
            if case.skip is None:
                run_once(case, loop, samples)
    return samples


def run_once(case: Case, loop: asyncio.AbstractEventLoop, samples: dict[str, list]) -> None:
    gc.collect()
    try:
        result = case.run()
        if inspect.isawaitable(result):
            result = loop.run_until_complete(result)
    except Exception as error:  # noqa: BLE001 - reported in the table and on stderr
        case.skip = f"failed: {type(error).__name__}: {error}"
        samples.pop(case.name, None)
        traceback.print_exc()
        return
    samples[case.name].append(result)


def median(values: list[float]) -> float:
    return statistics.median(values)


def table_rows(
    cases: list[Case], values: dict[str, float], fmt: Callable[[float], str]
) -> list[Row]:
    """Rows of a table: each case's value, compared with its baseline(s) when it has one."""
    rows: list[Row] = []
    for case in cases:
        if case.name not in values:
            reason = case.skip or "not implemented yet"
            target = str(case.target or DASH)
            rows.append(Row(case.name, f"{NA} ({reason})", case.baseline or DASH, NA, target, NA))
            continue
        value = values[case.name]
        if case.baseline is None:
            if case.target is not None and case.target.unit:
                met = "yes" if case.target.met(value) else "**NO**"
                rows.append(Row(case.name, fmt(value), DASH, DASH, str(case.target), met))
            else:
                rows.append(Row(case.name, fmt(value), "(baseline)"))
            continue
        rows.append(compare(case.name, value, fmt, case.baseline, values, case.target))
        rows.extend(compare(case.name, value, fmt, other, values, None) for other in case.also)
    return rows


def compare(
    name: str,
    value: float,
    fmt: Callable[[float], str],
    baseline: str,
    values: dict[str, float],
    target: Target | None,
) -> Row:
    """One comparison row: ratio = value / the baseline's value."""
    base = values.get(baseline)
    if base is None:
        return Row(name, fmt(value), baseline, NA, str(target or DASH), NA if target else DASH)
    ratio = value / base
    met = DASH if target is None else ("yes" if target.met(ratio) else "**NO**")
    return Row(name, fmt(value), baseline, f"{ratio:.2f}x", str(target or DASH), met)


def combine(runs: list[list[Section]]) -> list[Section]:
    """The tables of several full runs as one: each figure as ``run 1 / run 2 / ...``, and
    a target met only when it is met in every run (else ``**NO** (k of n)``)."""
    if len(runs) == 1:
        return runs[0]
    combined = []
    for sections in zip(*runs, strict=True):
        first = sections[0]
        if any(s.title != first.title or len(s.rows) != len(first.rows) for s in sections):
            raise RuntimeError(f"the runs' tables of {first.title!r} differ in shape")
        rows = []
        for cells in zip(*(s.rows for s in sections), strict=True):
            base = cells[0]
            if any(r.case != base.case for r in cells):
                raise RuntimeError(f"the runs' rows differ: {[r.case for r in cells]}")
            rows.append(Row(base.case, " / ".join(r.value for r in cells), base.baseline,
                            _joined([r.ratio for r in cells]), base.target,
                            _met_all([r.met for r in cells])))
        combined.append(Section(first.title, first.note + f" Figures of {len(runs)} full runs "
                                "(run 1 / run 2 / ...); a target is met only when it is met "
                                "in every run.", rows, first.counted))
    return combined


def _joined(values: list[str]) -> str:
    return values[0] if all(v == values[0] for v in values) else " / ".join(values)


def _met_all(values: list[str]) -> str:
    if all(v == DASH for v in values):
        return DASH
    if NA in values:
        return NA
    met = sum(v == "yes" for v in values)
    return "yes" if met == len(values) else f"**NO** ({met} of {len(values)})"


def spread(text: str) -> str:
    """``"1.10x / 1.30x / 1.20x"`` -> ``"1.10x–1.30x (1.10x / 1.30x / 1.20x)"``."""
    parts = [p.strip() for p in text.split(" / ")]
    if len(parts) < 2:
        return text
    try:
        numbers = [float(p.split()[0].rstrip("x").replace(",", "")) for p in parts]
    except ValueError:
        return text
    low, high = parts[numbers.index(min(numbers))], parts[numbers.index(max(numbers))]
    return f"{low}–{high} ({text})"


def summary(sections: list[Section]) -> str:
    """One table of every row that has a target: what it is, the figure, met or not."""
    lines = ["## Targets", "",
             "Every row below that has a target, from the tables that follow (with several "
             "runs: the range, then each run's figure).", "",
             "| workload | case | measured | target | met? |", "|---|---|---|---|---|"]
    count = met = 0
    for section in sections:
        if not section.counted:
            continue
        for row in section.rows:
            if row.target == DASH:
                continue
            count += 1
            met += row.met == "yes"
            measured = spread(row.ratio if row.ratio not in (DASH, NA) else row.value)
            against = f" of {row.baseline}" if row.ratio not in (DASH, NA) else ""
            lines.append(f"| {section.title} | {row.case} | {measured}{against} | "
                         f"{row.target} | {row.met} |")
    lines += ["", f"{met} of {count} targets met.", ""]
    return "\n".join(lines)


def render(sections: list[Section]) -> str:
    """Markdown tables, one per section."""
    lines: list[str] = []
    header = ("case", "median", "baseline", "ratio", "target", "met?")
    for section in sections:
        lines += [f"## {section.title}", "", section.note, ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for row in section.rows:
            cells = (row.case, row.value, row.baseline, row.ratio, row.target, row.met)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
