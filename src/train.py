"""Train one configuration: ``python src/train.py cell=gru seq_len=200 clip=null``.

A thin Hydra entry point over :func:`rnnlab.run.train`; ``-m`` runs a sweep.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works without `pip install -e .` too

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import rnnlab.paths  # noqa: E402,F401  (registers the ${root:} and ${cores:} resolvers)
from rnnlab import sweep  # noqa: E402
from rnnlab.config import ConfigError, validate  # noqa: E402

EXIT_BAD_INPUT, EXIT_TRACKING_LOST = 2, 3  # interrupted: 128 + the signal (130 Ctrl-C, 143 SIGTERM)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)  # before the heavy imports: a typo fails in a second
        from rnnlab.run import train

        summary = train(cfg)
    except BaseException as e:
        sweep.record_outcome(_outcome(e), getattr(e, "run_id", None), f"{type(e).__name__}: {e}")
        code = _exit_code(e)
        if code is None or _in_multirun():  # in a sweep, Hydra records the job and goes on
            raise
        print(f"error: {e}" if code in (EXIT_BAD_INPUT, EXIT_TRACKING_LOST) else str(e), file=sys.stderr)
        sys.exit(code)
    if summary is None:  # a DDP worker process: rank 0 reports
        return None
    sweep.record_outcome(summary.outcome, summary.run_id)
    print("\n".join(summary.lines()), flush=True)
    return summary.val


def _exit_code(e: BaseException) -> int | None:
    """The exit code for an error we explain in one line; None: let it raise."""
    if isinstance(e, ConfigError):
        return EXIT_BAD_INPUT
    run = sys.modules.get("rnnlab.run")  # not imported: cannot have been raised
    if run is not None and isinstance(e, run.Interrupted):
        return e.exit_code
    tracking = sys.modules.get("rnnlab.tracking")
    if tracking is not None and isinstance(e, tracking.TrackingLost):
        return EXIT_TRACKING_LOST
    return None


def _outcome(e: BaseException) -> str:
    return "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


if __name__ == "__main__":
    try:
        main()
    except BaseException as stopped:  # a failed job, Ctrl-C, SIGTERM: the sweep's parent run still ends
        sweep.end_open_sweep(stopped)
        raise
