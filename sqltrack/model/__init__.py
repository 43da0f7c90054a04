"""Experiments, runs and their links: the ``experiment_*`` / ``run_*`` coroutines."""
