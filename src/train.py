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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)  # before the heavy imports: a typo fails in a second
        from rnnlab.run import train

        summary = train(cfg)
    except ConfigError as e:
        if _in_multirun():  # let Hydra record the failed job and go on with the others
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if summary.lines():
        print("\n".join(summary.lines()), flush=True)
    return summary.val


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


if __name__ == "__main__":
    main()
