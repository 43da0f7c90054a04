"""Shared by the tests of every folder: raw reads, child processes, fault trials, PgBouncer,
restarts while logging, the `sqltrack ui` server of the browser tests.

Imported as ``support.<module>`` (``tests/`` is on ``sys.path``: ``pythonpath`` in
pyproject.toml); ``fault_runner.py`` also runs as a script.
"""
