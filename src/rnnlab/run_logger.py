"""The Lightning side of tracking: Lightning's MLflow logger on a run :mod:`rnnlab.tracking`
owns. A module of its own so that the sweep's parent process, which only creates and ends
MLflow runs, never imports Lightning (seconds per sweep; the jobs import it anyway)."""

from __future__ import annotations

import time

from mlflow.entities import Metric
from pytorch_lightning.loggers import MLFlowLogger

from rnnlab.tracking_lost import TrackingLost


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger on a run rnnlab owns: ``finalize`` leaves the status alone
    (Lightning finalizes after ``fit`` and again after ``test``; the run is only finished when
    rnnlab says so).

    Metrics go out as one ``log_batch`` per call, asynchronously by default. A write that
    failed in MLflow's background thread is only logged there as an error; this logger looks
    at the outcome of earlier writes (without waiting for them) on every call and raises
    :class:`TrackingLost` at the first failed one, so a run whose server went away stops
    instead of training on with its metrics dropped.

    ``logged`` (key -> the steps already in the store) makes a resumed run continue each
    metric's history without duplicates or gaps: of the steps replayed between the checkpoint
    and the moment the first process died, those the store holds are dropped and the others
    logged. Which steps reached the store is not a prefix: MLflow writes asynchronous batches
    from a pool of threads, so a batch of step 54 can land before one of step 49 and a kill in
    between leaves a gap (seen in CI); hence a set per key, not the last step. Replayed steps
    are bit-identical on CPU, so what is logged again equals what was lost.
    """

    def __init__(self, *args, logged: dict[str, set[int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.logged = logged or {}
        self._in_flight: list = []  # RunOperations of asynchronous writes not yet seen to land

    def log_metrics(self, metrics, step=None) -> None:
        step = step or 0
        if self.logged:
            metrics = {k: v for k, v in metrics.items() if step not in self.logged.get(k, ())}
        if not metrics:
            return
        self.raise_if_lost()
        now = int(time.time() * 1000)
        batch = [Metric(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items()]
        try:
            ops = self.experiment.log_batch(run_id=self.run_id, metrics=batch, **self._log_batch_kwargs)
        except Exception as e:  # a synchronous write failed
            raise TrackingLost(f"{type(e).__name__}: {e}") from e
        if ops is not None:
            self._in_flight.append(ops)

    def raise_if_lost(self) -> None:
        """Raise :class:`TrackingLost` if an earlier asynchronous write is known to have failed."""
        pending, failed = [], None
        for ops in self._in_flight:
            futures = getattr(ops, "_operation_futures", [])  # mlflow's RunOperations: no public poll
            if not all(f.done() for f in futures):
                pending.append(ops)
            elif failed is None:
                failed = next((f.exception() for f in futures if f.exception() is not None), None)
        self._in_flight = pending
        if failed is not None:
            raise TrackingLost(f"{type(failed).__name__}: {failed}") from failed

    def log_hyperparams(self, params) -> None:
        """Nothing: rnnlab logs the whole resolved config itself (:meth:`Run.log_config`); the
        LightningModule's hyperparameters are a part of it under other names."""

    def finalize(self, status: str = "success") -> None:
        """Nothing: pending async writes are flushed once, when rnnlab ends the run (each
        flush waits up to a second for MLflow's queue thread)."""
