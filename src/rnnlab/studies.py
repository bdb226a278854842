"""A committed study opened in ``mlflow ui``: its data loaded into a local MLflow store.

Every committed study carries its runs as data (``experiments/<study>/data/``, written by
``src/report.py --export``; see :mod:`rnnlab.report.source`). :func:`load` turns that data back
into MLflow runs, so a reader sees the study in the UI in seconds without training anything:
each run with its params, tags, final metrics, the histories the comparison view charts and
the CSV artifacts the report draws (so that a study continued in this store exports them again),
its status and times, each sweep's jobs under their parent run, and the saved comparison view
of each sweep (:mod:`rnnlab.views`); the study's REPORT.md and figures are logged to the newest
parent under ``report/`` (not for a snapshot of a study still running: no report rests on it
yet). The run ids are new (MLflow makes them); each run keeps its original
id in the tag ``exported_run_id``, and the ids that tags point at (parent, sweep) and a tuning's
trials name (``run_id``) are mapped.
A final metric logged as NaN (a diverged run's gradient norms) is absent: in the data's frame
NaN also means "not logged", and the two cannot be told apart.

A tuning's Optuna studies are restored beside the store (``optuna.db``, where a tuning looks
for them), so that a study exported unfinished (``report.py --export --partial``) continues on
another machine: rerun its command against the new store.

The store is built in a temporary file and moved into place only when complete, and reused
as long as the data has not changed (a digest of the data files is an experiment tag).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rnnlab import paths
from rnnlab import runs as tags
from rnnlab.report.source import ARTIFACTS, DATA, HISTORIES, RUNS, STUDY
from rnnlab.report.tuning.saved import TRIALS, restore

DIGEST_TAG = "rnnlab.data_digest"
EXPORTED_ID = "exported_run_id"
NEEDED = ("run_id", "status", "start_time")
OPTUNA_DB = "optuna.db"  # beside the store, where a tuning looks for its studies (rnnlab.tune.store)
BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics (100 params, 100 tags) at once


class StudyError(Exception):
    """A study that cannot be opened: one line for the user, nothing written."""


@dataclass
class Opened:
    store: str  # the tracking URI of the local store
    experiment_id: str
    runs: int
    views: list[tuple[str, str]]  # (view key, its name) per sweep or tuning study
    reused: bool
    report_parent: str | None  # the run the report was logged to
    complete: bool = True  # False: a snapshot of a study still running


def studies_with_data() -> list[str]:
    return sorted(p.parent.parent.name for p in (paths.repo_root() / "experiments").glob(f"*/{DATA}/{RUNS}"))


def study_dir(name_or_path: str) -> Path:
    """``long_range_study`` or ``experiments/long_range_study``: the study's folder, checked."""
    p = Path(name_or_path)
    folder = p if p.is_dir() else paths.repo_root() / "experiments" / name_or_path
    known = ", ".join(studies_with_data()) or "none"
    if not folder.is_dir():
        raise StudyError(f"no study '{name_or_path}' (looked for {_shown(folder)}); studies with data: {known}")
    if not (folder / DATA / RUNS).is_file():
        raise StudyError(f"study '{folder.name}' has no data ({_shown(folder / DATA / RUNS)} is missing: the "
                         f"report was written before studies carried their runs); studies with data: {known}")
    return folder


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(paths.repo_root()))
    except ValueError:
        return str(path)


LOADER_VERSION = b"2"  # raised when load() restores more: a store an older load() built is rebuilt


def digest(folder: Path) -> str:
    h = hashlib.sha256(b"loader " + LOADER_VERSION)
    for name in (RUNS, HISTORIES, ARTIFACTS, STUDY, TRIALS):
        f = folder / DATA / name
        if f.is_file():
            h.update(name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def default_store(folder: Path) -> Path:
    """Where a study's store lives: ``.studies/<study>/mlflow.db`` in the repo (git ignores it)."""
    return paths.repo_root() / ".studies" / folder.name / "mlflow.db"


def load(folder: Path, db: Path | None = None) -> Opened:
    """The study's runs in a local sqlite store (built once per version of the data)."""
    from mlflow import MlflowClient

    db = (db or default_store(folder)).absolute()  # a relative --store: an artifact root needs a file URI
    meta = json.loads((folder / DATA / STUDY).read_text()) if (folder / DATA / STUDY).is_file() else {}
    experiment = meta.get("experiment") or folder.name
    want = digest(folder)
    if db.is_file():
        client = MlflowClient(f"sqlite:///{db}")
        exp = client.get_experiment_by_name(experiment)
        if exp is not None and exp.tags.get(DIGEST_TAG) == want:
            if _is_tuning(folder) and not db.with_name(OPTUNA_DB).exists():  # lost since: restored again
                restore(folder, f"sqlite:///{db.with_name(OPTUNA_DB)}", _loaded_ids(client, exp.experiment_id))
            opened = _opened(client, exp.experiment_id, f"sqlite:///{db}", reused=True)
            opened.complete = meta.get("complete", True)
            return opened
        others = [e.name for e in client.search_experiments() if DIGEST_TAG not in e.tags and e.name != "Default"]
        if others:  # a store of someone's runs, not one this module made: never replaced
            raise StudyError(f"{db} is an MLflow store with other runs (experiments {', '.join(sorted(others))}); "
                             "name a new file with --store")
    optuna_db = db.with_name(OPTUNA_DB)
    if optuna_db.exists() and not db.is_file():
        raise StudyError(f"{optuna_db} holds Optuna studies that no store of this module's goes with; "
                         "name a new file with --store")
    runs = _read_runs(folder)
    db.parent.mkdir(parents=True, exist_ok=True)
    artifacts = db.parent / "mlruns"
    for old in (db, artifacts, optuna_db):  # a store this module made for older data: a cache, rebuilt
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    tmp = Path(tempfile.mkdtemp(prefix=".loading-", dir=db.parent))
    try:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        client = MlflowClient(uri)
        exp_id = client.create_experiment(experiment, artifact_location=artifacts.as_uri(),
                                          tags={DIGEST_TAG: want, "mlflow.experimentKind": "custom_model_development"})
        # a tuning's parents name the Optuna store its studies are restored to (the report and
        # a continued tuning open it; the data holds only its file name)
        storage = f"sqlite:///{optuna_db}" if _is_tuning(folder) else None
        ids = _create_runs(client, exp_id, runs, _histories(folder), storage)
        _log_artifacts(client, folder, ids)
        parent = _log_report(client, folder, runs, ids) if meta.get("complete", True) else None
        _write_views(client, exp_id, runs, ids)
        if _is_tuning(folder):  # its Optuna studies, to continue it here
            restore(folder, f"sqlite:///{tmp / OPTUNA_DB}", ids)
            (tmp / OPTUNA_DB).replace(optuna_db)
        (tmp / "mlflow.db").replace(db)  # the store appears only once complete
    except BaseException:
        shutil.rmtree(artifacts, ignore_errors=True)
        if not db.exists():  # no Optuna store without the MLflow store it goes with
            optuna_db.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    opened = _opened(MlflowClient(f"sqlite:///{db}"), exp_id, f"sqlite:///{db}", reused=False)
    opened.report_parent = ids.get(parent) if parent else None
    opened.complete = meta.get("complete", True)
    return opened


def _loaded_ids(client, exp_id: str) -> dict[str, str]:
    """{saved run id: its id in this store} for the runs :func:`load` made."""
    from mlflow.entities import ViewType

    found = client.search_runs([exp_id], run_view_type=ViewType.ALL, max_results=50_000)
    return {r.data.tags[EXPORTED_ID]: r.info.run_id for r in found if EXPORTED_ID in r.data.tags}


def _read_runs(folder: Path) -> pd.DataFrame:
    try:
        runs = pd.read_parquet(folder / DATA / RUNS)
    except Exception as e:  # noqa: BLE001 - a damaged file is the user's to fix, in one line
        raise StudyError(f"{_shown(folder / DATA / RUNS)} cannot be read ({type(e).__name__}: {e})") from e
    missing = [c for c in NEEDED if c not in runs.columns]
    if missing or runs.empty:
        raise StudyError(f"{_shown(folder / DATA / RUNS)} lacks what a run needs: "
                         f"{', '.join(missing) if missing else 'it holds no runs'}")
    return runs


def _histories(folder: Path) -> dict[str, pd.DataFrame]:
    path = folder / DATA / HISTORIES
    if not path.is_file():
        return {}
    return {rid: g for rid, g in pd.read_parquet(path).groupby("run_id", sort=False)}


def _ms(t) -> int | None:
    return None if t is None or pd.isna(t) else int(pd.Timestamp(t).value // 1_000_000)


def _values(row: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix) and v is not None
            and not (isinstance(v, float) and math.isnan(v))}


def _is_tuning(folder: Path) -> bool:
    return (folder / DATA / TRIALS).is_file()


def _create_runs(client, exp_id: str, runs: pd.DataFrame, histories: dict[str, pd.DataFrame],
                 storage: str | None = None) -> dict[str, str]:
    """Create every run (sweep parents first, so their jobs can point at them); old id -> new.
    ``storage``: the Optuna store a tuning's parents name (``tune.storage``), where it now is."""
    from mlflow.entities import Param, RunTag

    ids: dict[str, str] = {}
    is_parent = runs.get(f"tags.{tags.SWEEP}", pd.Series(index=runs.index, dtype=object)).astype(str).eq("true")
    is_tuning = runs.get(f"tags.{tags.TUNE_STUDY}", pd.Series(index=runs.index, dtype=object)).notna()
    ordered = pd.concat([runs[is_parent | is_tuning], runs[~(is_parent | is_tuning)]])
    for row in ordered.to_dict("records"):
        start = _ms(row["start_time"]) or 0
        run_tags = {k: str(v) for k, v in _values(row, "tags.").items()}
        run = client.create_run(exp_id, start_time=start, run_name=run_tags.get("mlflow.runName"))
        ids[row["run_id"]] = run.info.run_id
        for key in (tags.PARENT, tags.SWEEP_ID):  # ids of this store, not of the one exported from
            if key in run_tags:
                run_tags[key] = ids.get(run_tags[key], run_tags[key])
        run_tags[EXPORTED_ID] = row["run_id"]
        values = _values(row, "params.")
        if storage and tags.TUNE_STUDY in run_tags and "tune.storage" in values:
            values["tune.storage"] = storage
        params = [Param(k, str(v)) for k, v in values.items()]
        metrics = _metrics(row, histories.get(row["run_id"]), start)
        tag_list = [RunTag(k, v) for k, v in run_tags.items()]
        for i in range(0, max(len(params), len(tag_list)), 100):  # at most 100 params and 100 tags a batch
            client.log_batch(run.info.run_id, params=params[i:i + 100], tags=tag_list[i:i + 100])
        for i in range(0, len(metrics), BATCH):
            client.log_batch(run.info.run_id, metrics=metrics[i:i + BATCH])
        client.set_terminated(run.info.run_id, status=str(row["status"]), end_time=_ms(row.get("end_time")))
    return ids


def _log_artifacts(client, folder: Path, ids: dict[str, str]) -> None:
    """The data's CSV artifacts (``artifacts.parquet``) back on their runs, at their paths: the
    figures of a report exported from this store read them, and a study continued here from a
    snapshot would otherwise lose them for every run the earlier machine finished."""
    path = folder / DATA / ARTIFACTS
    if not path.is_file():
        return
    for rid, artifact, text in pd.read_parquet(path, columns=["run_id", "path", "text"]).itertuples(index=False):
        if rid in ids:
            client.log_text(ids[rid], text, artifact)


def _metrics(row: dict, history: pd.DataFrame | None, start: int) -> list:
    """The run's histories, then each final metric that has none (at the run's last step)."""
    from mlflow.entities import Metric

    out = []
    last_step = 0
    seen = set()
    if history is not None and len(history):
        for key, step, value in zip(history["key"], history["step"], history["value"]):
            out.append(Metric(str(key), float(value), start + int(step), int(step)))
            seen.add(key)
        last_step = int(history["step"].max())
    for key, value in _values(row, "metrics.").items():
        if key not in seen:
            out.append(Metric(key, float(value), start + last_step, last_step))
    return out


def _log_report(client, folder: Path, runs: pd.DataFrame, ids: dict[str, str]) -> str | None:
    """The committed REPORT.md and its figures, on the newest sweep parent (as a sweep logs it)."""
    col = f"tags.{tags.SWEEP}"
    parents = runs[runs[col].astype(str).eq("true")] if col in runs else runs.iloc[:0]
    if parents.empty or not (folder / "REPORT.md").is_file():
        return None
    newest = parents.sort_values("start_time").iloc[-1]["run_id"]
    for f in sorted([folder / "REPORT.md", *folder.glob("*.png")]):
        client.log_artifact(ids[newest], str(f), "report")
    return str(newest)


def _write_views(client, exp_id: str, runs: pd.DataFrame, ids: dict[str, str]) -> None:
    from rnnlab import views

    for old, name in _parents(runs):
        views.for_sweep(client, exp_id, ids[old], name)
    for study in _tuning_studies(runs):
        views.for_tuning(client, exp_id, study)


def _parents(runs: pd.DataFrame) -> Iterator[tuple[str, str]]:
    """The sweeps' parent runs that have runs of their own. A sweep restarted after all its jobs
    had finished skips every one and leaves a parent with none: its view would be empty."""
    col, parent = f"tags.{tags.SWEEP}", "tags.mlflow.parentRunId"
    if col not in runs:
        return
    has_runs = set(runs[parent].dropna()) if parent in runs else set()
    for row in runs[runs[col].astype(str).eq("true")].sort_values("start_time").to_dict("records"):
        if row["run_id"] in has_runs:
            yield row["run_id"], str(row.get("tags.mlflow.runName") or row["run_id"])


def _tuning_studies(runs: pd.DataFrame) -> list[str]:
    col = f"tags.{tags.TUNE_STUDY}"
    if col not in runs:
        return []
    return sorted({str(s).split(":")[0] for s in runs[col].dropna()})


def _opened(client, exp_id: str, uri: str, reused: bool) -> Opened:
    from rnnlab import views

    exp = client.get_experiment(exp_id)
    keys = [(k[len(views.TAG_PREFIX):], views.decode(v)[0]) for k, v in sorted(exp.tags.items())
            if k.startswith(views.TAG_PREFIX)]
    n = len(client.search_runs([exp_id], max_results=50_000))
    return Opened(uri, exp_id, n, keys, reused, None)
