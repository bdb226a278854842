"""The report's checks of an MLflow store and experiment, and what it reads off the runs frame
whatever its source: the sweep parents and the gradient profiles.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

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


def fetch_grad_flow(source, run_ids: Iterable[str]) -> pd.DataFrame:
    """``diagnostics/grad_flow.csv`` of each run that has it (a diverged run may not), from a
    report source (:mod:`rnnlab.report.source`)."""
    cols = ["run_id", "step", "position", "distance_from_readout", "grad_input_norm", "grad_hidden_norm"]
    gf = source.csv(run_ids, "diagnostics/grad_flow.csv")
    return gf[cols] if len(gf) else pd.DataFrame(columns=cols)


def parent_text(name: str, status: str, start: pd.Timestamp, end: pd.Timestamp | None) -> str:
    """A sweep parent as the header names it: its name and, once it ended, its wall time
    (what a study cost)."""
    if end is None or pd.isna(end) or status == "RUNNING":
        return f"{name}, still running"
    return f"{name}, {status}, wall time {(end - start).total_seconds() / 60:.1f} min"


def parent_texts(raw: pd.DataFrame, sweep_ids: Iterable[str]) -> dict[str, str]:
    """The sweep parent runs among ``raw`` (``search_runs``' frame), id -> :func:`parent_text`."""
    if raw.empty or "tags.sweep" not in raw:
        return {}
    parents = raw[raw["tags.sweep"].astype(str).str.lower().eq("true")].set_index("run_id")
    end = parents["end_time"] if "end_time" in parents else pd.Series(pd.NaT, index=parents.index)
    return {sid: parent_text(str(parents.at[sid, "tags.mlflow.runName"]), str(parents.at[sid, "status"]),
                             parents.at[sid, "start_time"], end.get(sid))
            for sid in sweep_ids if sid in parents.index}
