"""The one error both sides of tracking raise: :mod:`rnnlab.tracking` (the run's lifecycle) and
:mod:`rnnlab.run_logger` (Lightning's logger on that run). Its own module, so that the logger
need not import tracking, which imports the logger: no cycle."""

from __future__ import annotations


class TrackingLost(RuntimeError):
    """The tracking store stopped taking writes in the middle of a run (a server went away, a
    disk filled up). Training stops; the local checkpoints stay where they are, and
    :meth:`rnnlab.tracking.Run.lost` says how to continue into the same MLflow run once the
    store is back."""
