"""Sweeps: a parent MLflow run per Hydra multirun, children for its jobs, and resumption.

``SweepCallback`` (a Hydra callback, wired in ``conf/config.yaml``) runs in the launching
process. Before any job starts it creates the MLflow schema, the experiment and the sweep's
parent run, so parallel jobs never race to create them (a fresh sqlite store otherwise fails
with ``table ... already exists``), and writes the parent's id to ``<sweep dir>/sweep.json``
where every job, in whatever process or machine the launcher put it, finds it.

Resumption: every run is tagged with ``config_hash``, a hash of its resolved config without
the bookkeeping keys. A job of a sweep skips its configuration when the experiment already
holds a run with that hash that FINISHED or diverged (a diverged run is a result, and
rerunning the same seed would only diverge again); ``sweep.rerun=true`` runs everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# mlflow and rnnlab.tracking (which pulls in Lightning) are imported where used: Hydra builds
# this callback for every command, and a rejected command line must not pay seconds of imports.
BOOKKEEPING = ("tracking", "sweep", "threads", "hydra", "resume")
SWEEP_FILE = "sweep.json"


def config_hash(cfg: DictConfig) -> str:
    """Identity of a configuration: what determines the numbers, not where they are logged."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    kept = {k: v for k, v in resolved.items() if k not in BOOKKEEPING}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def experiment_name(cfg: DictConfig, task_name: str) -> str:
    return cfg.tracking.get("experiment") or task_name


def completed_run(client, experiment: str, digest: str):
    """A FINISHED or diverged run of this configuration in ``experiment``, if there is one."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for run in client.search_runs([exp.experiment_id], f"tags.config_hash = '{digest}'",
                                  order_by=["attributes.start_time DESC"]):
        if run.info.status == "FINISHED" or run.data.tags.get("diverged") == "true":
            return run
    return None


def sweep_context() -> dict[str, Any] | None:
    """The sweep this process's job belongs to (parent run id, ...), or None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    path = Path(HydraConfig.get().sweep.dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else {}


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        from rnnlab import tracking

        uri = tracking.tracking_uri(config)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates the schema, once, here
        task = config.hydra.runtime.choices.get("task", "sweep")
        experiment = experiment_name(config, task)
        exp_id = tracking.get_or_create_experiment(client, experiment, tracking.artifact_root(config))
        name = config.get("sweep", {}).get("name") or f"sweep-{experiment}"
        parent = client.create_run(exp_id, run_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", tags={
            "sweep": "true", "command": tracking.command_line(), **tracking.git_info(),
            "sweep_params": json.dumps(OmegaConf.to_container(config.hydra.sweeper.params, resolve=False)
                                       if config.hydra.sweeper.get("params") else {}),
        })
        run_id = parent.info.run_id
        client.set_tag(run_id, "sweep_id", run_id)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(
            {"parent_run_id": run_id, "experiment": experiment, "tracking_uri": uri}))
        print(f"sweep {name}: parent MLflow run {run_id} in experiment '{experiment}'", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / SWEEP_FILE
        if not path.exists():
            return
        from mlflow import MlflowClient

        info = json.loads(path.read_text())
        client = MlflowClient(info["tracking_uri"])
        parent = info["parent_run_id"]
        children = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                                  f"tags.sweep_id = '{parent}'")
                    if r.info.run_id != parent]
        counts = {"finished": 0, "diverged": 0, "failed": 0}
        for run in children:
            if run.data.tags.get("diverged") == "true":
                counts["diverged"] += 1
            elif run.info.status == "FINISHED":
                counts["finished"] += 1
            else:
                counts["failed"] += 1
        for k, v in counts.items():
            client.log_metric(parent, f"sweep/{k}", v)
        client.set_terminated(parent, "FINISHED")
        print("sweep done: " + ", ".join(f"{v} {k}" for k, v in counts.items())
              + " (configurations already done in this experiment were skipped)", flush=True)
