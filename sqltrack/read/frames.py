"""Columns of Python values -> a pandas or polars DataFrame, with types from metric kinds.

pandas and polars are optional (the ``pandas`` and ``polars`` extras) and imported
only here, inside the functions, so ``import sqltrack`` never imports either.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

#: Supported DataFrame libraries -> the extra that installs each.
BACKENDS = {"pandas": "pandas", "polars": "polars"}


def check_backend(backend: str) -> str:
    """``backend`` when it is a supported DataFrame library, else ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use 'pandas' or 'polars'")
    return backend


def import_backend(backend: str) -> Any:
    """The pandas or polars module; ImportError naming the extra that installs it."""
    check_backend(backend)
    try:
        if backend == "pandas":
            import pandas as module
        else:
            import polars as module
    except ImportError as error:
        raise ImportError(
            f"DataFrames with backend={backend!r} need {backend}, which is not installed: "
            f"pip install 'sqltrack[{BACKENDS[backend]}]'"
        ) from error
    return module


def make_frame(
    columns: dict[str, list[Any]], kinds: dict[str, str | None], backend: str
) -> Any:
    """A DataFrame of ``columns`` (name -> values) in ``backend``.

    ``kinds`` gives a column's type where known (``int``, ``float``, ``bool``,
    ``str``, ``datetime``, as for metric columns); other columns are inferred.
    Missing values (None) stay missing: nullable integers and booleans in pandas,
    nulls in polars.
    """
    module = import_backend(backend)
    if backend == "pandas":
        return _pandas_frame(module, columns, kinds)
    return _polars_frame(module, columns, kinds)


_PANDAS_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean"}


def _pandas_frame(pd: Any, columns: dict[str, list[Any]], kinds: dict[str, str | None]) -> Any:
    data = {}
    for name, values in columns.items():
        kind = kinds.get(name)
        if kind in _PANDAS_DTYPES:
            series = pd.Series(values, dtype=_PANDAS_DTYPES[kind])
        elif kind == "datetime":
            series = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
        else:
            series = pd.Series(values, dtype=object) if _has_containers(values) else (
                pd.Series(values)
            )
        data[name] = series
    return pd.DataFrame(data, columns=list(columns))


def _polars_dtype(pl: Any, kind: str | None) -> Any:
    return {
        "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "str": pl.String,
        "datetime": pl.Datetime("us", "UTC"),
    }.get(kind or "")


def _polars_frame(pl: Any, columns: dict[str, list[Any]], kinds: dict[str, str | None]) -> Any:
    series = []
    for name, values in columns.items():
        dtype = _polars_dtype(pl, kinds.get(name))
        if dtype is None and _family(values) is None:
            # Containers (JSON objects) or values of mixed types (a JSON key that is a
            # number in one run and text in another): kept as the Python values they
            # are, rather than cast by a guess (polars would turn 1 into "1").
            dtype = pl.Object
        series.append(pl.Series(name, values, dtype=dtype, strict=False))
    return pl.DataFrame(series)


def _has_containers(values: list[Any]) -> bool:
    return any(isinstance(v, (dict, list)) for v in values)


def _family(values: list[Any]) -> str | None:
    """The one kind of scalar in ``values`` (ints and floats together), else None."""
    families = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            families.add("bool")
        elif isinstance(value, (int, float)):
            families.add("number")
        elif isinstance(value, (str, datetime)):
            families.add(type(value).__name__)
        else:
            return None
    return families.pop() if len(families) == 1 else "null" if not families else None
