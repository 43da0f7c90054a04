"""Min/max bucket downsampling: long metric series cut to a few thousand points.

The series is split into equal buckets of consecutive points; each bucket keeps
its lowest and its highest point (in x order), and the first and last points
of the series are always kept. So the curve keeps every spike and dip, its
global minimum and maximum, and its ends, in at most ``max_points`` points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def downsample(
    xs: Sequence[Any], ys: Sequence[float], max_points: int
) -> tuple[list[Any], list[float]]:
    """``(xs, ys)`` reduced to at most ``max_points`` points, extremes preserved.

    ``ys`` are finite numbers in x order; ``max_points`` is at least 4. A series
    that already fits is returned whole.
    """
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, not {max_points}")
    count = len(ys)
    if count <= max_points:
        return list(xs), list(ys)
    inner = count - 2  # points between the first and the last
    buckets = (max_points - 2) // 2
    keep = [0]
    for bucket in range(buckets):
        start = 1 + bucket * inner // buckets
        stop = 1 + (bucket + 1) * inner // buckets
        if start >= stop:
            continue
        segment = ys[start:stop]
        low = start + segment.index(min(segment))
        high = start + segment.index(max(segment))
        keep.extend((low, high) if low < high else (high, low) if high < low else (low,))
    keep.append(count - 1)
    return [xs[i] for i in keep], [ys[i] for i in keep]
