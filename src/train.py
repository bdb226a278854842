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
from rnnlab.config import ConfigError, validate  # noqa: E402

EXIT_BAD_INPUT, EXIT_TRACKING_LOST = 2, 3


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)  # before the heavy imports: a typo fails in a second
        from rnnlab.run import train

        summary = train(cfg)
    except Exception as e:
        code = EXIT_BAD_INPUT if isinstance(e, ConfigError) else \
            EXIT_TRACKING_LOST if _is_tracking_lost(e) else None
        if code is None or _in_multirun():  # in a sweep, Hydra records the job and goes on
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(code)
    if summary.lines():
        print("\n".join(summary.lines()), flush=True)
    return summary.val


def _is_tracking_lost(e: Exception) -> bool:
    tracking = sys.modules.get("rnnlab.tracking")  # not imported: cannot have been raised
    return tracking is not None and isinstance(e, tracking.TrackingLost)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


if __name__ == "__main__":
    main()
