"""Metric rows: names and kinds, the row layout, the column cache, the writer (held,
inline, combined, retried), write combining and the write-behind buffer.

Deliberately empty: ``sqltrack.metrics.rows`` is a leaf the engines import, and
importing it must not load the rest.
"""
