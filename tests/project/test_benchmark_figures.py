"""The README's benchmark figures come from ``benchmarks/RESULTS.md``; no figure without a script.

* The README's results block (between ``<!-- results:begin -->`` and
  ``<!-- results:end -->``) quotes rows of RESULTS.md's Targets table verbatim (a
  subset) and its "N of M targets met." line.
* The README's Benchmarks section states no ratio, time or rate outside that block.
* ``benchmarks/PROFILE.md``: every section with figures names
  ``benchmarks/profile_hot_path.py`` (the script that produces them), and nothing is
  from scripts run by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
PROFILE = ROOT / "benchmarks" / "PROFILE.md"
#: A figure: a ratio (1.2x), a time (3 ms, 4 µs, 2 s) or a rate (1,000 rows/s).
FIGURE = re.compile(r"\d[\d,.]*\s*(?:x\b|ms\b|µs\b|rows/s)")


def table_rows(text: str) -> list[tuple[str, ...]]:
    """The cells of every markdown table row (header and rule lines left out)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        if cells[:2] != ("workload", "case"):
            rows.append(cells)
    return rows


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def results_targets() -> tuple[set[tuple[str, ...]], str]:
    text = RESULTS.read_text(encoding="utf-8")
    targets = section(text, "## Targets")
    met = [line for line in targets.splitlines() if line.endswith("targets met.")]
    assert len(met) == 1, "RESULTS.md has no 'N of M targets met.' line"
    return set(table_rows(targets)), met[0]


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- results:begin -->\n(.*?)<!-- results:end -->", text, re.S)
    assert match, "README has no results block (<!-- results:begin --> ... end)"
    return match.group(1)


def test_readme_rows_are_rows_of_results_md():
    rows, _ = results_targets()
    quoted = table_rows(readme_block())
    assert quoted, "the README's results block holds no rows"
    for row in quoted:
        assert row in rows, f"README row not in RESULTS.md's Targets table: {' | '.join(row)}"


def test_readme_quotes_the_targets_met_line():
    _, met = results_targets()
    lines = [line for line in readme_block().splitlines() if "targets met" in line]
    assert lines == [met], (lines, met)


def test_no_benchmark_figure_outside_the_results_block():
    text = section(README.read_text(encoding="utf-8"), "## Benchmarks")
    outside = re.sub(r"<!-- results:begin -->.*?<!-- results:end -->", "", text, flags=re.S)
    figures = FIGURE.findall(outside)
    assert not figures, f"figures in README's Benchmarks section no script output gives: {figures}"


def test_profile_figures_name_their_script():
    text = PROFILE.read_text(encoding="utf-8")
    assert "run by hand" not in text.replace("Tables of scripts run by hand", "")
    assert (ROOT / "benchmarks" / "profile_hot_path.py").is_file()
    for part in re.split(r"\n(?=## )", text)[1:]:
        title = part.splitlines()[0]
        if FIGURE.search(part) or "\n|" in part:
            assert "python benchmarks/profile_hot_path.py" in part, (
                f"PROFILE.md section {title!r} has figures but names no script that gives them"
            )
