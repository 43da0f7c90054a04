"""What the ``sqltrack`` command prints: tables, JSON, one run in detail, the target line.

Nothing here does I/O on the database; every text that may hold connection
settings goes through ``sqltrack.environment.mask_passwords``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from .. import config as _config
from ..environment import MASKED, mask_passwords
from ..read.queries import jsonable
from ..read.summary import flat_summary

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient
    from ..config import Settings

PROG = "sqltrack"


def one_line(error: BaseException) -> str:
    """An error's text on one line (its type name when it has no text)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m07s``, ``2h05m00s``, ``1d02h03m``."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    sign, total = ("-", -total) if total < 0 else ("", total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{sign}{minutes}m{secs:02d}s"
    return f"{sign}{secs}s"


def cell(value: Any) -> str:
    """One value as table text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return " ".join(str(value).split())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows aligned in columns under a header; numbers right-aligned."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(
            isinstance(r[i], (int, float)) and not isinstance(r[i], bool) or r[i] is None
            for r in rows
        )
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        columns = zip(values, widths, numeric, strict=True)
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in columns).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in texts)])


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Print ``value`` as indented JSON."""
    print(json.dumps(jsonable(value), indent=2, ensure_ascii=False, default=str),
          file=out or sys.stdout)


def _show_mapping(title: str, mapping: dict[str, Any]) -> list[str]:
    if not mapping:
        return [f"{title:<10} -"]
    lines = [title]
    width = max(len(str(k)) for k in mapping)
    for key, value in mapping.items():
        text = json.dumps(jsonable(value), ensure_ascii=False, default=str)
        lines.append(f"  {str(key):<{width}}  {text}")
    return lines


def _show_links(run: dict[str, Any]) -> list[str]:
    if not run["links"]:
        return ["links      -"]
    lines = ["links"]
    for link in run["links"]:
        if link["from"] == run["id"]:
            lines.append(f"  --{link['kind']}--> run {link['to']}")
        else:
            lines.append(f"  <--{link['kind']}-- run {link['from']}")
    return lines


def format_run(run: dict[str, Any]) -> str:
    """The text of ``sqltrack show``."""
    fields = [
        ("experiment", f"{run['experiment']} (id {run['experiment_id']})"),
        ("status", run["status"]), ("created", cell(run["created"])),
        ("started", cell(run["started"])), ("updated", cell(run["updated"])),
        ("duration", format_duration(run["duration_seconds"])),
        ("comment", cell(run["comment"])), ("tags", cell(run["tags"])),
    ]
    lines = [f"run {run['id']}"] + [f"{k:<10} {v or '-'}" for k, v in fields]
    lines += _show_mapping("args", run["args"])
    keys = ", ".join(run["env_keys"]) or "-"
    lines += textwrap.wrap(keys, 88, initial_indent="env keys   ", subsequent_indent=" " * 11)
    lines += _show_mapping("extras", run["extras"])
    summary = flat_summary(run["extras"])
    if summary:
        lines += _show_mapping("summary", summary)
    lines += _show_links(run)
    if not run["metrics"]:
        lines.append("metrics    -")
    else:
        lines.append("metrics")
        rows = [[m["metric"], m["count"], m["min"], m["max"], m["last"]] for m in run["metrics"]]
        metrics = table(["metric", "count", "min", "max", "last"], rows)
        lines += ["  " + line for line in metrics.splitlines()]
    return "\n".join(lines)


def _masked(settings: Settings) -> Settings:
    """``settings`` with every secret value masked: what the dialect's descriptions see."""
    params = {k: MASKED if k in _config.SECRET_KEYS else v for k, v in settings.params.items()}
    return replace(settings, params=params)


def describe(client: AsyncClient) -> str:
    """Where the client connects, without secrets."""
    return mask_passwords(client.dialect.describe(_masked(client.settings)))


def target_line(client: AsyncClient) -> str:
    """One line naming the database a command works on: engine, host/database or file, schema.

    Defaults are spelled out (the file's absolute path, libpq's local socket, the
    ``public`` schema) so a newcomer sees which database was picked for them.
    """
    shown = client.dialect.describe_spelled_out(_masked(client.settings))
    return mask_passwords(f"{PROG}: database: {shown}")
