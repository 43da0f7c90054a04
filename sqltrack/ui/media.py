"""Runs' media files (the wandb-style module's ``Image``, ``Audio``, ``Video``) for the page.

A run's references are ``extras["media"]`` (see ``sqltrack.integrations.wandb_media``);
the files are served from one folder only, ``<root>/sqltrack-media/<run id>/``, and only
by a plain file name whose suffix is a known image, audio or video type. ``extras`` is
anyone's data, so a reference's path is never opened as it is: a name with a folder
part, a link leading out of the run's folder, or a type a browser could run (HTML, SVG)
is not served.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: The folder under the root that holds each run's media folder (as the wandb module writes).
MEDIA_DIR = "sqltrack-media"
#: What is served, by suffix: types a browser shows but never runs.
MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
    ".mp4": "video/mp4", ".webm": "video/webm",
}
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def default_root(client: AsyncClient) -> str:
    """Where the wandb module puts media by default: beside a SQLite file; for a server
    database the current folder."""
    path = client.dialect.database_path(client.settings)
    return os.path.dirname(os.path.abspath(path)) if path is not None else os.getcwd()


def media_file(root: str | os.PathLike[str], run_id: int, name: str) -> tuple[Path, str] | None:
    """``(path, content type)`` of run ``run_id``'s media file ``name``, or None when it
    is not one to serve (see the module's docstring)."""
    kind = MEDIA_TYPES.get(os.path.splitext(name)[1].lower())
    if kind is None or not _FILE_NAME.fullmatch(name):
        return None
    folder = (Path(root) / MEDIA_DIR / str(run_id)).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        return None
    return path, kind
