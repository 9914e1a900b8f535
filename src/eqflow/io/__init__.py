"""What a run reads and writes, and how it survives: atomic writes, the cache, checkpoints, run
folders, metrics.json, the loggers and W&B runs, signals. Imports nothing of eqflow above
:mod:`eqflow.errors`."""
