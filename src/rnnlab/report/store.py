"""Everything the report reads from MLflow: the store and experiment checks, the runs, the sweep
parents, metric histories and CSV artifacts. The only step that needs a tracking server.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from mlflow.entities import Run

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class ReportError(Exception):
    """A problem the user must fix (unknown experiment, no runs): one line, no traceback."""


def check_store(tracking_uri: str) -> None:
    """A sqlite store must exist already: opening a mistyped path would create an empty one."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise ReportError(f"no MLflow store at {path} (from --tracking-uri / MLFLOW_TRACKING_URI "
                              f"{tracking_uri}); train something first or point at the right file")


def find_experiment(client, name: str):
    """The experiment called ``name``; a ReportError naming the ones that exist otherwise."""
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"no experiment named '{name}' in {client.tracking_uri}; existing: "
                          + (", ".join(names) if names else "none"))
    return exp


def load_runs(tracking_uri: str, experiment: str, sweep_id: str | None = None) -> pd.DataFrame:
    """Every run of the experiment (or of one sweep) as ``mlflow.search_runs`` returns them."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = find_experiment(client, experiment)
    mlflow.set_tracking_uri(tracking_uri)
    flt = f"tags.sweep_id = '{sweep_id}'" if sweep_id else ""
    raw = mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=flt, output_format="pandas")
    return raw


def fetch_histories(client, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Metric histories (``get_metric_history``) as a long frame: run_id, key, step, value."""
    rows = [(rid, k, m.step, m.value) for rid in run_ids for k in keys
            for m in client.get_metric_history(rid, k)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def fetch_csv(client, run_ids: Iterable[str], artifact: str) -> pd.DataFrame:
    """The CSV artifact ``artifact`` (e.g. ``data/loss_by_pos.csv``) of each run that has it, as
    one frame with a ``run_id`` column; runs without it (a diverged run, another task) are skipped."""
    folder = artifact.rsplit("/", 1)[0] if "/" in artifact else None
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for rid in run_ids:
            if not any(a.path == artifact for a in client.list_artifacts(rid, folder)):
                continue
            path = client.download_artifacts(rid, artifact, tmp)
            frames.append(pd.read_csv(path).assign(run_id=rid))
            os.remove(path)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])


def fetch_grad_flow(client, run_ids: Iterable[str]) -> pd.DataFrame:
    """``diagnostics/grad_flow.csv`` of each run that has it (a diverged run may not)."""
    cols = ["run_id", "step", "position", "distance_from_readout", "grad_input_norm", "grad_hidden_norm"]
    gf = fetch_csv(client, run_ids, "diagnostics/grad_flow.csv")
    return gf[cols] if len(gf) else pd.DataFrame(columns=cols)


def parent_text(run: Run) -> str:
    """A sweep parent as the header names it: its name and, once it ended, its wall time
    (what a study cost)."""
    if run.info.end_time is None or run.info.status == "RUNNING":
        return f"{run.info.run_name}, still running"
    seconds = (run.info.end_time - run.info.start_time) / 1000
    return f"{run.info.run_name}, {run.info.status}, wall time {seconds / 60:.1f} min"


def parent_runs(client, sweep_ids: Iterable[str]) -> dict[str, Run]:
    """The sweep parent runs that exist (id -> run)."""
    out: dict[str, Run] = {}
    for sid in sweep_ids:
        try:
            run = client.get_run(sid)
        except Exception:  # noqa: BLE001 - a deleted or foreign parent: report without it
            continue
        out[sid] = run
    return out
