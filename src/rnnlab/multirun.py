"""A job's side of a sweep: which multirun it belongs to, what the launcher wrote there
(``sweep.json``), and where it records how it ended (``outcome.json``).

Training reads these; the sweep's launching side (:mod:`rnnlab.sweep`) writes ``sweep.json``
and reads the outcomes. Kept apart so that a run depends on this small contract, not on the
sweep's machinery.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SWEEP_FILE = "sweep.json"
OUTCOME_FILE = "outcome.json"
OUTCOMES = ("finished", "diverged", "skipped", "failed", "interrupted", "not_started")


def sweep_dir() -> Path | None:
    """The sweep dir of the multirun this process runs a job of (or launches); None outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir)


def in_multirun() -> bool:
    return sweep_dir() is not None


def sweep_context() -> dict[str, Any] | None:
    """The sweep this process's job belongs to (parent run id, ...), or None outside a sweep."""
    where = sweep_dir()
    if where is None:
        return None
    path = where / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def record_outcome(outcome: str, run_id: str | None = None, detail: str = "") -> None:
    """In a sweep's job: write how this job ended where the launching process will read it."""
    from hydra.core.hydra_config import HydraConfig

    if sweep_context() is None:
        return
    assert outcome in OUTCOMES, outcome
    path = Path(HydraConfig.get().runtime.output_dir) / OUTCOME_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"outcome": outcome, "run_id": run_id, "detail": detail[:2000]}))
