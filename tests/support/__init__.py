"""Shared by the tests of every folder: raw reads, child processes, fault trials, PgBouncer.

Imported as ``support.<module>`` (``tests/`` is on ``sys.path``: ``pythonpath`` in
pyproject.toml); ``fault_runner.py`` also runs as a script.
"""
