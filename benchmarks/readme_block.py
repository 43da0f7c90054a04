#!/usr/bin/env python3
"""Copy the Targets table of ``benchmarks/RESULTS.md`` into the README's results block.

    python benchmarks/readme_block.py

The README quotes the table and its "N of M targets met." line verbatim between
``<!-- results:begin -->`` and ``<!-- results:end -->``
(``tests/project/test_benchmark_figures.py`` checks that); run this after
``run.py`` writes a new ``RESULTS.md``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
README = HERE.parent / "README.md"
BLOCK = re.compile(r"(<!-- results:begin -->\n).*?(<!-- results:end -->)", re.S)


def targets_table(results: str) -> str:
    """The lines of the Targets section that make the table and the met line."""
    start = results.index("## Targets")
    end = results.find("\n## ", start + 1)
    section = results[start:] if end < 0 else results[start:end]
    lines = [line for line in section.splitlines()
             if line.startswith("|") or line.endswith("targets met.")]
    table = [line for line in lines if line.startswith("|")]
    met = [line for line in lines if line.endswith("targets met.")]
    return "\n".join(table) + "\n\n" + "\n".join(met) + "\n"


def main() -> int:
    readme = README.read_text(encoding="utf-8")
    if not BLOCK.search(readme):
        print("README.md has no results block", file=sys.stderr)
        return 1
    block = targets_table(RESULTS.read_text(encoding="utf-8"))
    README.write_text(BLOCK.sub(lambda m: m.group(1) + block + m.group(2), readme),
                      encoding="utf-8")
    print(f"README.md: results block rebuilt from {RESULTS.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
