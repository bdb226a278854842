"""A tuning study as committed data: its runs and its Optuna trials written to
``<study>/data/``, and read back as the same arms the MLflow store gives, so that the report
regenerates on a machine without the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rnnlab.report.source import DATA, HISTORIES, HISTORY_COLUMNS, RUNS, STUDY, public
from rnnlab.report.store import ReportError
from rnnlab.report.tuning.arms import ArmResult
from rnnlab.report.tuning.loading import from_runs, load

TRIALS = "trials.parquet"  # a tuning study's Optuna trials, beside its runs in data/


def load_saved(folder: Path) -> list[ArmResult]:
    """The arms of a committed tuning study, from its data folder (see :func:`export`)."""
    data = Path(folder) / DATA
    if not (data / TRIALS).is_file():
        raise ReportError(f"{folder}: no tuning data ({DATA}/{TRIALS})")
    meta = json.loads((data / STUDY).read_text()) if (data / STUDY).is_file() else {}
    everything = [_as_run(r) for r in pd.read_parquet(data / RUNS).to_dict("records")]
    trials = pd.read_parquet(data / TRIALS)
    return from_runs(meta.get("experiment") or Path(folder).name, everything,
                 lambda arm: _study(arm.study, trials[trials["study"] == arm.study], arm.mode))


def export_(tracking_uri: str, experiment: str, folder: Path, complete: bool = True,
            protocols: list[str] | None = None) -> list[Path]:
    """Write a tuning experiment's runs and its Optuna trials to ``folder/data/``, so that
    :func:`load_saved` reads the same arms :func:`load` does (``complete=False``: a snapshot
    of a study still running). ``protocols``: the folders, beside ``folder``, of the tuning
    studies whose protocols its page compares (see :func:`protocol_studies`)."""
    import mlflow
    import optuna
    from optuna.distributions import distribution_to_json

    arms = load(tracking_uri, experiment)
    rows, studies = [], {}
    for arm in arms:
        study = optuna.load_study(study_name=arm.study, storage=arm.storage)
        studies[arm.study] = {"direction": study.direction.name, "user_attrs": study.user_attrs}
        for t in study.get_trials(deepcopy=False):
            rows.append({"study": arm.study, "number": t.number, "state": t.state.name, "value": t.value,
                         "params": json.dumps(t.params),  # in the study's order: the page lists them so
                         "distributions": json.dumps({k: distribution_to_json(d) for k, d in t.distributions.items()},
                                                     sort_keys=True),
                         "user_attrs": json.dumps(t.user_attrs, sort_keys=True, default=str),
                         "system_attrs": json.dumps(t.system_attrs, sort_keys=True, default=str),
                         "start": t.datetime_start, "complete": t.datetime_complete})
    # The runs after the trials: a snapshot of a study still running names no run it lacks (a
    # trial told meanwhile is RUNNING here; a run it finished meanwhile is done on resume).
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=50_000, output_format="pandas")
    data = Path(folder) / DATA
    data.mkdir(parents=True, exist_ok=True)
    history = _histories(tracking_uri, runs, {a.main_metric for a in arms})
    runs = public(runs)
    runs.to_parquet(data / RUNS, index=False, compression="zstd")
    pd.DataFrame(rows).to_parquet(data / TRIALS, index=False, compression="zstd")
    history.to_parquet(data / HISTORIES, index=False, compression="zstd")
    meta = {"experiment": experiment, "sweep_id": None, "complete": complete,
            **({"protocols": protocols} if protocols else {}),
            "optuna_studies": studies}  # direction and signature: what restore() needs to continue them
    (data / STUDY).write_text(json.dumps(meta, indent=1) + "\n")
    return [data / RUNS, data / TRIALS, data / HISTORIES, data / STUDY]


def _histories(tracking_uri: str, runs: pd.DataFrame, keys: set[str]) -> pd.DataFrame:
    """Every run's history of the arms' main metric: a trial is scored on each run's best value
    of it (rnnlab.tune.scoring), and a trial a snapshot holds unjudged, asked again on another
    machine, is scored there on the runs it finished here (skipped as done): from their whole
    history, not their last value."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    rows = [(rid, m.key, m.step, m.value) for rid in runs.get("run_id", []) for key in sorted(keys)
            for m in client.get_metric_history(rid, key)]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS).astype({"step": "int64", "value": "float64"})


def _as_run(row: dict):
    """A row of ``search_runs``' frame as the few fields of an MLflow ``Run`` the report reads."""
    from types import SimpleNamespace

    def part(prefix: str, numeric: bool = False) -> dict:
        items = ((k[len(prefix):], v) for k, v in row.items() if k.startswith(prefix))
        return {k: float(v) for k, v in items if v is not None and v == v} if numeric else \
            {k: str(v) for k, v in items if v is not None and v == v}

    def ms(time) -> int:
        return int(pd.Timestamp(time).value // 1_000_000) if time is not None and not pd.isna(time) else 0

    return SimpleNamespace(info=SimpleNamespace(run_id=row["run_id"], status=row["status"],
                                                start_time=ms(row.get("start_time")), end_time=ms(row.get("end_time"))),
                           data=SimpleNamespace(tags=part("tags."), params=part("params."),
                                                metrics=part("metrics.", numeric=True)))


def _study(name: str, trials: pd.DataFrame, mode: str = "min", storage: str | None = None,
           user_attrs: dict | None = None, ids: dict[str, str] | None = None):
    """An Optuna study holding the saved trials, numbered as they were, in the direction the
    arm was tuned (``mode``: its best trial is the highest of a ``max`` metric): in memory for
    a report, or in ``storage`` for a tuning to continue from (:func:`restore`). ``ids`` maps
    the saved run ids to those of the store the runs were loaded into (a trial's ``run_id``)."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(study_name=name, storage=storage, direction="maximize" if mode == "max" else "minimize")
    for key, value in (user_attrs or {}).items():
        study.set_user_attr(key, value)
    for t in (trials.sort_values("number").to_dict("records") if len(trials) else []):
        state = TrialState[t["state"]]
        done = state == TrialState.COMPLETE
        trial = create_trial(
            state=state, value=float(t["value"]) if done else None, params=json.loads(t["params"]),
            distributions={k: json_to_distribution(v) for k, v in json.loads(t["distributions"]).items()},
            user_attrs=_mapped(json.loads(t["user_attrs"]), ids or {}),
            # a grid's point (grid_id) and a re-asked trial's parameters (fixed_params) live here
            system_attrs=json.loads(t.get("system_attrs") or "{}"))
        for when in ("start", "complete"):  # as they were, not when restored
            if t.get(when) is not None and not pd.isna(t[when]) and (when == "start" or state.is_finished()):
                setattr(trial, f"datetime_{when}", pd.Timestamp(t[when]).to_pydatetime())
        study.add_trial(trial)
    return study


def _mapped(attrs: dict, ids: dict[str, str]) -> dict:
    """A trial's user attributes with its run id(s) (one per tuning seed) those of the store."""
    if "run_id" in attrs:
        rid = attrs["run_id"]
        attrs["run_id"] = [ids.get(r, r) for r in rid] if isinstance(rid, list) else ids.get(rid, rid)
    return attrs


def restore(folder: Path, storage: str, ids: dict[str, str] | None = None) -> list[str]:
    """A snapshot's Optuna studies written to ``storage``, as the tuning that exported them
    left them, so that rerunning its command there continues it: finished trials stay done,
    a stopped one (RUNNING) is asked again, the sampler draws trial n as it would have (it is
    seeded by the trial's number; see rnnlab.tune.store.sampler). ``ids``: {saved run id: its
    id in the store the runs were loaded into}, so that each trial names its run there.
    Returns the studies' names."""
    data = Path(folder) / DATA
    meta = json.loads((data / STUDY).read_text()) if (data / STUDY).is_file() else {}
    studies = meta.get("optuna_studies", {})
    trials = pd.read_parquet(data / TRIALS)
    names = sorted(set(trials["study"] if len(trials) else []) | set(studies))
    modes = _modes(data)
    for name in names:
        info = studies.get(name, {})
        if "direction" in info:
            mode = "max" if info["direction"] == "MAXIMIZE" else "min"
        elif name in modes:  # data exported before the direction was: the parent run's metric_mode
            mode = modes[name]
        else:
            raise ReportError(f"{data}: no direction for the Optuna study '{name}' (neither in {STUDY} nor "
                              "on a parent run): export the study again")
        _study(name, trials[trials["study"] == name] if len(trials) else trials, mode, storage,
               info.get("user_attrs"), ids)  # none yet: an export taken before the first trial was asked
    return names


def _modes(data: Path) -> dict[str, str]:
    """{study name: min | max} from the tuning parents' tags in the saved runs."""
    from rnnlab import runs as tags

    study, mode = f"tags.{tags.TUNE_STUDY}", f"tags.{tags.METRIC_MODE}"
    runs = pd.read_parquet(data / RUNS)
    if study not in runs or mode not in runs:
        return {}
    parents = runs[runs[study].notna() & runs[mode].notna()]
    return {str(s): str(m) for s, m in zip(parents[study], parents[mode])}


def protocol_studies(folder: Path) -> list[Path]:
    """The committed tuning studies whose protocols this study's page compares: the folders
    its ``data/study.json`` names (``protocols``), beside it (``experiments/<name>``)."""
    meta_path = Path(folder) / DATA / STUDY
    names = json.loads(meta_path.read_text()).get("protocols", []) if meta_path.is_file() else []
    found = []
    for name in names:
        sibling = Path(folder).parent / name
        if not (sibling / DATA / TRIALS).is_file():
            raise ReportError(f"{meta_path} compares protocols with '{name}': no tuning data in {sibling / DATA} "
                              f"(tuning studies with data beside it: {', '.join(_tuning_studies(folder)) or 'none'})")
        found.append(sibling)
    return found


def exported_as(parent: Path, experiment: str, tracking_uri: str) -> Path:
    """The committed study, among ``parent``'s folders, that holds ``experiment``'s data, and
    holds all of it: a page linked to a sibling's data must regenerate from that data."""
    import mlflow

    folders = [f for f in sorted(Path(parent).glob(f"*/{DATA}/{TRIALS}"))
               if json.loads((f.parent / STUDY).read_text()).get("experiment") == experiment]
    if not folders:
        raise ReportError(f"--protocols {experiment}: no exported study of it in {parent} (tuning studies with "
                          f"data there: {', '.join(_tuning_studies(Path(parent) / '_')) or 'none'}); export it "
                          "first (make export-study TUNE=<its preset>)")
    folder = folders[0].parent.parent
    mlflow.set_tracking_uri(tracking_uri)
    stored = mlflow.search_runs(experiment_names=[experiment], max_results=50_000)
    saved = pd.read_parquet(folder / DATA / RUNS, columns=["run_id", "status"])
    ended = {(r, s) for r, s in zip(stored["run_id"], stored["status"])}
    if not json.loads((folder / DATA / STUDY).read_text()).get("complete", True) or \
            ended != set(zip(saved["run_id"], saved["status"])):
        new = len(ended - set(zip(saved["run_id"], saved["status"])))
        raise ReportError(f"--protocols {experiment}: {folder / DATA} is not all of it ({len(saved)} runs exported, "
                          f"{len(stored)} in the store, {new} new or changed since): export it again first")
    return folder


def _tuning_studies(folder: Path) -> list[str]:
    """The folders beside ``folder`` that hold a tuning study's data."""
    return sorted(p.parent.parent.name for p in Path(folder).parent.glob(f"*/{DATA}/{TRIALS}")
                  if p.parent.parent != Path(folder))
