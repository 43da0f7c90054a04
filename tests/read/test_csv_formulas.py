"""CSV cells a spreadsheet would run (``= + - @``, tab, CR first) get a leading ``'``, in
``sqltrack export`` and the web page's SQL CSV; numbers stay numbers."""

from __future__ import annotations

import csv

import pytest

from sqltrack.read.export import CsvWriter, csv_cell

CELLS = [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+1+1", "'+1+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"), ("a=b", "a=b"),
    (-3, -3), (-0.5, -0.5), (7, 7),
]


@pytest.mark.parametrize(("value", "cell"), CELLS)
def test_csv_cell(value, cell):
    assert csv_cell(value) == cell


def test_export_writer_escapes_cells_and_keeps_numbers(tmp_path):
    path = tmp_path / "x.csv"
    writer = CsvWriter(path, ["step", "=name"], [None, None])
    writer.write([[-1, "=HYPERLINK(\"u\")"], [2, "@x"]])
    writer.close()
    rows = list(csv.reader(path.open(newline="")))
    assert rows == [["step", "'=name"], ["-1", "'=HYPERLINK(\"u\")"], ["2", "'@x"]]


def test_sql_page_csv_escapes_cells():
    pytest.importorskip("starlette")
    from types import SimpleNamespace

    from sqltrack.ui.features import csv_text

    text = csv_text(SimpleNamespace(columns=["a", "-b"], rows=[(-1.5, "=1+1"), (None, "ok")]))
    assert list(csv.reader(text.splitlines())) == [["a", "'-b"], ["-1.5", "'=1+1"], ["", "ok"]]
