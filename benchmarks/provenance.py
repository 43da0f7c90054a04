"""Where a results file comes from: the commit measured, and whether the tree was clean.

A committed results file (``RESULTS.md``, ``PEERS.md``) is written only from a clean
tree, so the commit it names is the code it measured. ``--allow-dirty`` (local use)
writes to a ``*.local.md`` file beside it instead, which git ignores, never to the
committed file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit() -> str | None:
    """The full hash of HEAD, or None outside a git checkout."""
    return _git("rev-parse", "HEAD")


def dirty_paths() -> list[str]:
    """Tracked or untracked files that differ from HEAD (``git status --porcelain``)."""
    out = _git("status", "--porcelain", "--untracked-files=normal")
    if out is None:
        return ["(not a git checkout: the commit cannot be named)"]
    return [line[3:] for line in out.splitlines() if line.strip()]


def git_state() -> str:
    """The measured tree's commit, short (``-dirty`` when it had uncommitted changes)."""
    return _git("describe", "--always", "--dirty", "--abbrev=12") or "unknown"


def local_path(path: Path) -> Path:
    """``RESULTS.md`` -> ``RESULTS.local.md`` (the file a dirty or partial run writes)."""
    return path.with_name(path.stem + ".local" + path.suffix)


def output_for(path: Path, committed: Path, allow_dirty: bool, partial: str | None) -> Path:
    """Where a run may write its results, or SystemExit saying why it may not.

    ``committed`` is the file the repository keeps; a run writes it only from a clean
    tree and when it is a full run (``partial`` is None, else the reason it is not).
    ``--allow-dirty`` sends a dirty or partial run to the ``.local`` file instead.
    """
    if path.resolve() != committed.resolve():
        return path
    dirty = dirty_paths()
    reasons = ([f"the tree has uncommitted changes ({', '.join(dirty[:5])}"
                f"{' ...' if len(dirty) > 5 else ''})"] if dirty else [])
    if partial:
        reasons.append(partial)
    if not reasons:
        return path
    if allow_dirty:
        return local_path(committed)
    raise SystemExit(
        f"refusing to write {committed.name}: {'; '.join(reasons)}. Commit first and run "
        f"the full set, or pass --allow-dirty to write {local_path(committed).name} instead"
    )
