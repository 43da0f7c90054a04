"""Export the metric rows of runs to a csv, jsonl or parquet file.

    rows = await export_runs(client, [3, 4], "curves.parquet")

The file holds ``run_id, step, progress`` and one column per metric with a value
in these runs, by run (in the order given), then step and progress. It appears
complete or not at all: rows go to ``<path>.partial``, which is renamed at the
end (and removed on any error). The ``sqltrack export`` command calls this;
``sqltrack_sync`` users call it through their client's loop. Parquet needs the
``parquet`` extra (pyarrow), imported only when a parquet file is written.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

from . import queries

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

Format = Literal["csv", "jsonl", "parquet"]
#: The file formats, in the order the CLI lists them.
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")
#: Rows between progress lines (when a progress stream is given).
PROGRESS_EVERY = 10_000
_BY_SUFFIX: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


class Writer(Protocol):
    """One open export file: pages of rows in, then closed."""

    def write(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


#: First characters that make a spreadsheet run a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with ``= + - @``, a tab or a
    CR gets a leading ``'``; numbers (and everything else) stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return csv_cell(value)


class CsvWriter:
    """Comma-separated values with a header row."""

    def __init__(self, path: Path, columns: list[str], kinds: list[str | None]) -> None:
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow([csv_cell(c) for c in columns])

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._csv.writerows([_csv_value(v) for v in row] for row in rows)

    def close(self) -> None:
        self._file.close()


class JsonlWriter:
    """One JSON object per line (NaN and infinity as null)."""

    def __init__(self, path: Path, columns: list[str], kinds: list[str | None]) -> None:
        self._file = open(path, "w", encoding="utf-8")
        self._columns = columns

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            record = queries.jsonable(dict(zip(self._columns, row, strict=True)))
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        self._file.close()


class ParquetWriter:
    """Apache Parquet through pyarrow, one row group per page."""

    def __init__(self, path: Path, columns: list[str], kinds: list[str | None]) -> None:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        types = {
            "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
            "str": pa.string(), "datetime": pa.timestamp("us", tz="UTC"),
        }
        self._pa = pa
        self._text = [kind not in types for kind in kinds]
        fields = zip(columns, kinds, strict=True)
        self._schema = pa.schema([(c, types.get(k or "", pa.string())) for c, k in fields])
        self._writer = pq.ParquetWriter(str(path), self._schema)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        arrays = []
        for index, field in enumerate(self._schema):
            values = [row[index] for row in rows]
            if self._text[index]:
                values = [None if v is None else str(v) for v in values]
            arrays.append(self._pa.array(values, type=field.type))
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


WRITERS: dict[Format, type[CsvWriter] | type[JsonlWriter] | type[ParquetWriter]] = {
    "csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter,
}


def export_format(requested: str | None, path: str | os.PathLike[str]) -> Format:
    """The format of an export: as requested, else from the file extension, else csv.

    ValueError for an unknown format; ImportError (saying what to install) for
    parquet without pyarrow.
    """
    if requested is None:
        fmt: Format = _BY_SUFFIX.get(Path(path).suffix.lower(), "csv")
    elif requested in FORMATS:
        fmt = requested
    else:
        raise ValueError(f"unknown export format {requested!r}: use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ImportError(
                "parquet export needs pyarrow, which is not installed: "
                "pip install 'sqltrack[parquet]' (or use --format csv / jsonl)"
            ) from None
    return fmt


async def export_runs(
    client: AsyncClient,
    run_ids: int | Sequence[int],
    path: str | os.PathLike[str],
    format: str | None = None,
    progress: TextIO | None = None,
) -> int:
    """Write the metric rows of runs to ``path``; return the number of rows written.

    ``format``: ``"csv"``, ``"jsonl"`` or ``"parquet"`` (default: from the file
    extension, else csv). ``progress``: a stream (e.g. ``sys.stderr``) that gets
    a line every ``PROGRESS_EVERY`` rows. An unknown run raises RunNotFound and
    writes nothing; a missing folder raises FileNotFoundError.
    """
    fmt = export_format(format, path)
    ids = [run_ids] if isinstance(run_ids, int) else list(dict.fromkeys(run_ids))
    target = Path(path)
    folder = target.absolute().parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist"
        )
    await queries.check_runs(client, ids)
    columns = await queries.export_columns(client, ids) if ids else {}
    names = ["run_id", "step", "progress", *columns]
    kinds: list[str | None] = ["int", "int", "float", *columns.values()]
    partial = target.with_name(target.name + ".partial")
    writer: Writer = WRITERS[fmt](partial, names, kinds)
    total = 0
    try:
        if ids:
            async for rows in queries.metric_rows(client, ids, columns):
                writer.write(rows)
                before, total = total, total + len(rows)
                if progress is not None and total // PROGRESS_EVERY > before // PROGRESS_EVERY:
                    print(f"exported {total} rows ...", file=progress, flush=True)
        writer.close()
        os.replace(partial, target)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return total
