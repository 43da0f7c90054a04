"""wandb's media and objects for ``sqltrack.wandb``: what maps onto SQL is stored, the rest skipped.

Where each goes (``run`` is the run's id; ``<media>`` its media folder, see
:func:`media_folder`):

- ``Histogram(sequence)`` / ``Histogram(np_histogram=(counts, edges))``: summary
  statistics as metrics of that step, under its name: ``<name>/count``, ``/min``,
  ``/max``, ``/mean``, ``/std``, ``/p05``, ``/p25``, ``/p50``, ``/p75``, ``/p95``
  (columns ``<name>__count`` ...; from bins, the statistics of the bin centres).
- ``Table(columns=, data=)`` (also ``dataframe=``) and the ``plot.*`` charts (their
  table): ``extras["tables"][name] = {"columns": [...], "data": [[...]], "step": n}``,
  the last one logged under that name; see the README for the SQL that lists its rows.
- ``Image``, ``Audio``, ``Video``, ``Html``, ``Object3D``, ``Plotly`` (and a plotly or
  matplotlib figure logged as it is): a file in ``<media>/``, named
  ``<name>_<step>_<index>.<ext>``, and a reference in
  ``extras["media"][name]``: a list of ``{"step", "type", "path", "caption", "size"}``.
  Arrays become PNG (images) and WAV (audio) files; a path is copied. What cannot be
  written (a video array: no encoder here) is skipped with one warning per kind.
- ``Artifact``: ``run.log_artifact(artifact)`` records
  ``extras["artifacts"]``: a list of ``{"name", "type", "description", "metadata",
  "aliases", "size", "digest", "files": [{"name", "path" or "uri", "size", "digest"}]}``
  (SHA-256 of local files; nothing is copied).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import struct
import wave
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The folder (beside the SQLite file, or in ``dir=`` / ``$WANDB_DIR`` / the current
#: folder for a server database) that holds every run's media folder.
MEDIA_DIR = "sqltrack-media"
#: Quantiles of a Histogram kept as metrics.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def media_folder(base: str | os.PathLike[str], run_id: int) -> Path:
    """``<base>/sqltrack-media/<run id>``: where a run's media files go."""
    return Path(base).absolute() / MEDIA_DIR / str(run_id)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "media"


def _array(data: Any) -> Any:
    """``data`` (list, numpy array, torch tensor) as a numpy array."""
    import numpy as np

    detach = getattr(data, "detach", None)
    if callable(detach):
        data = detach().cpu().numpy()
    return np.asarray(data)


class Media:
    """A value that becomes a file next to the run (``kind``, ``extension``)."""

    kind = "file"
    extension = "bin"

    def __init__(self, data_or_path: Any = None, caption: str | None = None) -> None:
        self.data = data_or_path
        self.caption = caption

    def source_path(self) -> Path | None:
        data = self.data
        if isinstance(data, (str, os.PathLike)) and Path(data).is_file():
            return Path(data)
        return None

    def encode(self) -> bytes | None:
        """The file's bytes when made from data; None: it cannot be written here."""
        return None

    def write(self, path_without_extension: Path) -> Path | None:
        """Write the file (copy a path, else encode); None when it cannot be written."""
        source = self.source_path()
        if source is not None:
            target = path_without_extension.with_suffix(source.suffix or f".{self.extension}")
            shutil.copyfile(source, target)
            return target
        content = self.encode()
        if content is None:
            return None
        target = path_without_extension.with_suffix(f".{self.extension}")
        target.write_bytes(content)
        return target


def png(pixels: Any) -> bytes:
    """A PNG file of an image array: HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA), CHW
    accepted; floats in [0, 1] are scaled to 0..255."""
    import numpy as np

    array = _array(pixels)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))  # CHW (torch) -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype.kind == "f":
        scale = 255.0 if array.size and np.nanmax(array) <= 1.0 else 1.0
        array = np.nan_to_num(array * scale)
    array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim not in (2, 3) or array.ndim == 3 and array.shape[-1] not in (3, 4):
        raise ValueError(f"an image is HxW, HxWx3 or HxWx4, not shape {array.shape}")
    height, width = array.shape[:2]
    colour = 0 if array.ndim == 2 else 2 if array.shape[-1] == 3 else 6
    rows = array.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Image(Media):
    """``wandb.Image(data_or_path, caption=)``: a PNG (arrays, tensors, PIL images) or the
    file given."""

    kind = "image"
    extension = "png"

    def __init__(self, data_or_path: Any = None, mode: str | None = None,
                 caption: str | None = None, **ignored: Any) -> None:
        super().__init__(data_or_path, caption)

    def encode(self) -> bytes | None:
        data = self.data
        if hasattr(data, "save") and hasattr(data, "mode"):  # a PIL image
            buffer = io.BytesIO()
            data.save(buffer, format="PNG")
            return buffer.getvalue()
        if hasattr(data, "savefig"):  # a matplotlib figure
            buffer = io.BytesIO()
            data.savefig(buffer, format="png")
            return buffer.getvalue()
        return png(data)


class Audio(Media):
    """``wandb.Audio(data_or_path, sample_rate=, caption=)``: a WAV file (16-bit) or the
    file given."""

    kind = "audio"
    extension = "wav"

    def __init__(self, data_or_path: Any = None, sample_rate: int | None = None,
                 caption: str | None = None) -> None:
        super().__init__(data_or_path, caption)
        self.sample_rate = sample_rate

    def encode(self) -> bytes | None:
        import numpy as np

        if self.sample_rate is None:
            raise ValueError("wandb.Audio of an array needs sample_rate=")
        samples = _array(self.data).astype(np.float64)
        channels = 1 if samples.ndim == 1 else samples.shape[1]
        ints = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as file:
            file.setnchannels(channels)
            file.setsampwidth(2)
            file.setframerate(int(self.sample_rate))
            file.writeframes(ints.tobytes())
        return buffer.getvalue()


class Video(Media):
    """``wandb.Video(data_or_path, caption=, fps=, format=)``: the file given is copied;
    an array cannot be encoded here (skipped with a warning)."""

    kind = "video"
    extension = "mp4"

    def __init__(self, data_or_path: Any = None, caption: str | None = None,
                 fps: int | None = None, format: str | None = None,  # noqa: A002
                 **ignored: Any) -> None:
        super().__init__(data_or_path, caption)
        if format:
            self.extension = format


class Html(Media):
    """``wandb.Html(data)``: HTML text, an open file or a path, as an ``.html`` file."""

    kind = "html"
    extension = "html"

    def __init__(self, data: Any = None, inject: bool = True, **ignored: Any) -> None:
        super().__init__(data)

    def source_path(self) -> Path | None:
        data = self.data
        if isinstance(data, os.PathLike) or (
            isinstance(data, str) and "<" not in data and Path(data).is_file()
        ):
            return Path(data)
        return None

    def encode(self) -> bytes | None:
        data = self.data
        if hasattr(data, "read"):
            data = data.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)


class Object3D(Media):
    """``wandb.Object3D(data_or_path)``: a 3D file (``.obj``, ``.glb``, ...) is copied; a
    point array (N x 3, 4 or 6) becomes ``.pts.json``."""

    kind = "object3d"
    extension = "pts.json"

    def __init__(self, data_or_path: Any = None, caption: str | None = None,
                 **ignored: Any) -> None:
        super().__init__(data_or_path, caption)

    def encode(self) -> bytes | None:
        if isinstance(self.data, dict):  # wandb's {"type": "lidar/beta", "points": ...}
            return json.dumps(self.data, default=lambda v: _array(v).tolist()).encode()
        return json.dumps(_array(self.data).tolist()).encode()


class Plotly(Media):
    """``wandb.Plotly(figure)`` (or a plotly figure logged as it is): the figure's JSON."""

    kind = "plotly"
    extension = "plotly.json"

    def encode(self) -> bytes | None:
        to_json = getattr(self.data, "to_json", None)
        if callable(to_json):
            return str(to_json()).encode("utf-8")
        return json.dumps(self.data, default=str).encode("utf-8")


class Histogram:
    """``wandb.Histogram(sequence)`` or ``Histogram(np_histogram=(counts, edges))``:
    stored as summary statistics (see :meth:`statistics`)."""

    kind = "histogram"
    #: The range of the values (the first and last edge); NaN for no values.
    low: float
    high: float

    def __init__(self, sequence: Any = None, np_histogram: Any = None,
                 num_bins: int = 64) -> None:
        import numpy as np

        if np_histogram is not None:
            counts, edges = (np.asarray(v, dtype=float) for v in np_histogram)
            if len(edges) != len(counts) + 1:
                raise ValueError("np_histogram must be (counts, edges) with one more edge")
            self.values = (edges[:-1] + edges[1:]) / 2
            self.weights = counts
            self.low, self.high = (float(edges[0]), float(edges[-1])) if len(edges) else (0, 0)
        else:
            values = _array(sequence if sequence is not None else []).astype(float).ravel()
            self.values = values[np.isfinite(values)]
            self.weights = np.ones_like(self.values)
            self.low = float(self.values.min()) if self.values.size else math.nan
            self.high = float(self.values.max()) if self.values.size else math.nan
        self.num_bins = num_bins

    def statistics(self) -> dict[str, float]:
        """``count``, ``min``, ``max``, ``mean``, ``std`` and the :data:`QUANTILES`."""
        import numpy as np

        count = float(self.weights.sum())
        stats = {"count": count, "min": self.low, "max": self.high}
        if count <= 0:
            return stats
        order = np.argsort(self.values)
        values, weights = self.values[order], self.weights[order]
        mean = float(np.average(values, weights=weights))
        stats["mean"] = mean
        stats["std"] = float(math.sqrt(np.average((values - mean) ** 2, weights=weights)))
        cumulative = np.cumsum(weights) / count
        for q in QUANTILES:
            index = min(int(np.searchsorted(cumulative, q)), len(values) - 1)
            stats[f"p{round(q * 100):02d}"] = float(values[index])
        return stats


class Table:
    """``wandb.Table(columns=, data=, dataframe=)``: rows stored in the run's extras."""

    kind = "table"

    def __init__(self, columns: Sequence[str] | None = None, data: Any = None,
                 rows: Any = None, dataframe: Any = None, **ignored: Any) -> None:
        if dataframe is not None:
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.values.tolist()
        data = [list(row) for row in (data if data is not None else rows or [])]
        if columns is None:
            columns = [f"c{i}" for i in range(len(data[0]) if data else 0)]
        self.columns = list(columns)
        self.data = data

    def add_data(self, *values: Any) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"a row of this table has {len(self.columns)} values")
        self.data.append(list(values))

    def add_column(self, name: str, data: Sequence[Any]) -> None:
        self.columns.append(name)
        for row, value in zip(self.data, data, strict=True):
            row.append(value)

    def get_column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.data]


class Chart:
    """A ``wandb.plot.*`` chart: its table (stored as a Table) and how it is drawn."""

    kind = "chart"

    def __init__(self, kind: str, table: Table, fields: dict[str, Any]) -> None:
        self.chart = kind
        self.table = table
        self.fields = fields


class _Plot:
    """``wandb.plot``: each chart keeps its data as a table (``extras["tables"]``)."""

    @staticmethod
    def _chart(kind: str, table: Table, **fields: Any) -> Chart:
        return Chart(kind, table, {k: v for k, v in fields.items() if v is not None})

    def line(self, table: Table, x: str, y: str, stroke: Any = None,
             title: str | None = None, **ignored: Any) -> Chart:
        return self._chart("line", table, x=x, y=y, title=title)

    def scatter(self, table: Table, x: str, y: str, title: str | None = None,
                **ignored: Any) -> Chart:
        return self._chart("scatter", table, x=x, y=y, title=title)

    def bar(self, table: Table, label: str, value: str, title: str | None = None,
            **ignored: Any) -> Chart:
        return self._chart("bar", table, label=label, value=value, title=title)

    def histogram(self, table: Table, value: str, title: str | None = None,
                  **ignored: Any) -> Chart:
        return self._chart("histogram", table, value=value, title=title)

    def line_series(self, xs: Sequence[Any], ys: Sequence[Sequence[Any]],
                    keys: Sequence[str] | None = None, title: str | None = None,
                    xname: str | None = None, **ignored: Any) -> Chart:
        keys = list(keys or [f"line_{i}" for i in range(len(ys))])
        shared = not xs or not isinstance(xs[0], (list, tuple))
        data = [[key, x, y] for key, series, i in zip(keys, ys, range(len(ys)), strict=False)
                for x, y in zip(xs if shared else xs[i], series, strict=False)]
        return self._chart("line_series", Table(["lineKey", "lineVal", "step"], [
            [k, y, x] for k, x, y in data]), title=title, xname=xname)

    def confusion_matrix(self, probs: Any = None, y_true: Any = None, preds: Any = None,
                         class_names: Sequence[str] | None = None, title: str | None = None,
                         **ignored: Any) -> Chart:
        if preds is None and probs is not None:
            preds = [int(_array(p).argmax()) for p in probs]
        truth, predicted = list(y_true or []), list(preds or [])
        counts: dict[tuple[Any, Any], int] = {}
        for t, p in zip(truth, predicted, strict=False):
            counts[(t, p)] = counts.get((t, p), 0) + 1
        names = list(class_names) if class_names else None

        def label(i: Any) -> Any:
            return names[i] if names and isinstance(i, int) and i < len(names) else i

        rows = [[label(t), label(p), n] for (t, p), n in sorted(counts.items(), key=str)]
        return self._chart("confusion_matrix", Table(["Actual", "Predicted", "nPredictions"],
                                                     rows), title=title)


plot = _Plot()


def file_entry(path: Path, name: str | None = None) -> dict[str, Any]:
    """Name, absolute path, size and SHA-256 of a local file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return {"name": name or path.name, "path": str(path.absolute()),
            "size": path.stat().st_size, "digest": "sha256:" + digest.hexdigest()}


class Artifact:
    """``wandb.Artifact(name, type)``: a reference (files, directories, URIs), recorded with
    ``run.log_artifact`` in the run's ``extras["artifacts"]``; nothing is copied."""

    kind = "artifact"

    def __init__(self, name: str, type: str, description: str | None = None,  # noqa: A002
                 metadata: dict[str, Any] | None = None, **ignored: Any) -> None:
        self.name, self.type = name, type
        self.description = description
        self.metadata = dict(metadata or {})
        self.files: list[dict[str, Any]] = []

    def add_file(self, local_path: str | os.PathLike[str], name: str | None = None,
                 **ignored: Any) -> dict[str, Any]:
        entry = file_entry(Path(local_path), name)
        self.files.append(entry)
        return entry

    def add_dir(self, local_path: str | os.PathLike[str], name: str | None = None,
                **ignored: Any) -> None:
        root = Path(local_path)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            self.add_file(path, f"{name}/{relative}" if name else relative)

    def add_reference(self, uri: str, name: str | None = None, **ignored: Any) -> None:
        local = uri[len("file://"):] if uri.startswith("file://") else None
        if local is not None and Path(local).is_file():
            entry = file_entry(Path(local), name)
            entry["uri"] = uri
            self.files.append(entry)
        else:
            self.files.append({"name": name or uri.rstrip("/").rsplit("/", 1)[-1],
                               "uri": uri, "size": None, "digest": None})

    def record(self, aliases: Sequence[str] | None = None) -> dict[str, Any]:
        """What the run's ``extras["artifacts"]`` holds for this artifact."""
        digest = hashlib.sha256()
        for entry in self.files:
            digest.update(f"{entry['name']}\0{entry.get('digest') or entry.get('uri')}\n"
                          .encode("utf-8", "surrogatepass"))
        sizes = [entry["size"] for entry in self.files]
        return {"name": self.name, "type": self.type, "description": self.description,
                "metadata": self.metadata, "aliases": list(aliases or ["latest"]),
                "size": sum(sizes) if None not in sizes else None,
                "digest": "sha256:" + digest.hexdigest(), "files": list(self.files)}


def as_media(value: Any) -> Media | None:
    """A figure logged as it is (plotly, matplotlib) as Media; None for anything else."""
    if isinstance(value, Media):
        return value
    module = type(value).__module__
    if module.startswith("plotly"):
        return Plotly(value)
    if module.startswith("matplotlib") and hasattr(value, "savefig"):
        return Image(value)
    return None


__all__ = ["MEDIA_DIR", "Artifact", "Audio", "Chart", "Histogram", "Html", "Image", "Media",
           "Object3D", "Plotly", "Table", "Video", "as_media", "media_folder", "plot", "png"]
