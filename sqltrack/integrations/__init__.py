"""Integrations with training frameworks, each importing its framework only when used.

- ``sqltrack.integrations.lightning``: ``SqltrackLogger`` for ``lightning.pytorch``
  (``sqltrack.integrations.pytorch_lightning`` for the ``pytorch_lightning`` package);
- ``sqltrack.integrations.transformers``: ``SqltrackCallback`` for Hugging Face ``Trainer``;
- ``sqltrack.integrations.wandb`` (also ``sqltrack.wandb``): a wandb-style module;
- ``sqltrack.model.system_metrics``: system metrics sampled while a run is tracked;
- ``sqltrack.integrations.names``: the one mapping of framework metric names to columns.

Importing ``sqltrack`` imports none of these.
"""
