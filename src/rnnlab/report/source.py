"""Where a report's runs come from: an MLflow store, or a study's committed data.

A report reads three things: the runs (``mlflow.search_runs``' frame: one row per run, with
its ``params.*``, ``tags.*`` and ``metrics.*``), some metric histories and some CSV artifacts.
:class:`Store` reads them from MLflow, :class:`Saved` from ``experiments/<study>/data/`` (Parquet),
and :class:`Recorder` wraps a store to remember every history and artifact the report asked for,
so that :func:`export` writes exactly what regenerating the report needs, and a report built
from the data is the report built from the store.

The data folder:

* ``runs.parquet``: every run of the experiment, sweep parents included, as ``search_runs``
  returns them, less the columns that name this machine (``artifact_uri``, checkpoint paths);
* ``histories.parquet``: ``run_id, key, step, value`` of the histories the report and the
  study's comparison views draw;
* ``artifacts.parquet``: ``run_id, path, text``: the CSV artifacts the figures draw (of the
  gradient profile, only its last probe, the one drawn);
* ``study.json``: the experiment's name, the sweep if the report is of one, and whether the
  study is complete (a snapshot of one still running is not, and no report rests on it).

Tuning experiments add ``trials.parquet`` (see :mod:`rnnlab.report.tuning.saved`).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from rnnlab.report.store import ReportError, check_store, find_experiment

DATA = "data"  # the folder beside REPORT.md
RUNS, HISTORIES, ARTIFACTS, STUDY = "runs.parquet", "histories.parquet", "artifacts.parquet", "study.json"
PRIVATE = ("artifact_uri", "experiment_id", "tags.checkpoint_dir")  # this machine's paths and ids
HISTORY_COLUMNS = ["run_id", "key", "step", "value"]


def _frame(texts: dict[str, str]) -> pd.DataFrame:
    """CSV texts by run id as one frame with a ``run_id`` column."""
    frames = [pd.read_csv(io.StringIO(text)).assign(run_id=rid) for rid, text in texts.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])


class Store:
    """An experiment (optionally one sweep) in an MLflow store."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_id: str | None = None):
        from mlflow import MlflowClient

        check_store(tracking_uri)  # before any client: one would create a missing sqlite store
        self.tracking_uri, self.experiment, self.sweep_id = tracking_uri, experiment, sweep_id
        self.client = MlflowClient(tracking_uri)

    def runs(self) -> pd.DataFrame:
        import mlflow

        exp = find_experiment(self.client, self.experiment)
        mlflow.set_tracking_uri(self.tracking_uri)
        flt = f"tags.sweep_id = '{self.sweep_id}'" if self.sweep_id else ""
        return mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=flt, output_format="pandas")

    def histories(self, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
        """Metric histories (``get_metric_history``) as a long frame: run_id, key, step, value."""
        rows = [(rid, k, m.step, m.value) for rid in run_ids for k in keys
                for m in self.client.get_metric_history(rid, k)]
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)

    def csv(self, run_ids: Iterable[str], artifact: str) -> pd.DataFrame:
        """The CSV artifact ``artifact`` (e.g. ``data/loss_by_pos.csv``) of each run that has it, as
        one frame with a ``run_id`` column; runs without it (a diverged run, another task) are skipped."""
        return _frame(self.texts(run_ids, artifact))

    def texts(self, run_ids: Iterable[str], artifact: str) -> dict[str, str]:
        folder = artifact.rsplit("/", 1)[0] if "/" in artifact else None
        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            for rid in run_ids:
                if not any(a.path == artifact for a in self.client.list_artifacts(rid, folder)):
                    continue
                path = self.client.download_artifacts(rid, artifact, tmp)
                out[rid] = Path(path).read_text()
                os.remove(path)
        return out


class Saved:
    """A study's committed data: ``<folder>/data/*.parquet`` (see the module's docstring)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.data = self.folder / DATA
        if not (self.data / RUNS).is_file():
            raise ReportError(f"{self.folder}: no study data ({DATA}/{RUNS}); export it from the study's store "
                              f"with `python src/report.py --experiment <name> --tracking-uri <store> --export "
                              f"--out {self.folder}`")
        self.meta = json.loads((self.data / STUDY).read_text()) if (self.data / STUDY).is_file() else {}
        self.experiment = self.meta.get("experiment") or self.folder.name
        self.sweep_id = self.meta.get("sweep_id")
        self._histories: pd.DataFrame | None = None
        self._artifacts: pd.DataFrame | None = None

    def runs(self) -> pd.DataFrame:
        return pd.read_parquet(self.data / RUNS)

    def histories(self, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
        if self._histories is None:
            path = self.data / HISTORIES
            self._histories = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=HISTORY_COLUMNS)
        h = self._histories
        ids, ks = list(run_ids), list(keys)
        order = {(r, k): i for i, (r, k) in enumerate((r, k) for r in ids for k in ks)}
        got = h[h["run_id"].isin(ids) & h["key"].isin(ks)]
        if got.empty:
            return pd.DataFrame(columns=HISTORY_COLUMNS)
        rank = [order[(r, k)] for r, k in zip(got["run_id"], got["key"])]  # the store's order: run, key, step
        return got.assign(_rank=rank).sort_values(["_rank", "step"], kind="stable")[HISTORY_COLUMNS].reset_index(
            drop=True)

    def csv(self, run_ids: Iterable[str], artifact: str) -> pd.DataFrame:
        return _frame(self.texts(run_ids, artifact))

    def texts(self, run_ids: Iterable[str], artifact: str) -> dict[str, str]:
        if self._artifacts is None:
            path = self.data / ARTIFACTS
            self._artifacts = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["run_id", "path",
                                                                                                   "text"])
        a = self._artifacts[self._artifacts["path"] == artifact]
        by_run = dict(zip(a["run_id"], a["text"]))
        return {rid: by_run[rid] for rid in run_ids if rid in by_run}


# An absolute path of two names or more, ended by a space, comma, bracket or quote (a swept list's
# values each), wherever it starts: after `=`, a space, a list's `[` or `,`, a URI's `sqlite:///`.
ABSOLUTE_PATH = r"(?<![\w.~-])/(?:[^/\s,\[\]\"']+/)+([^/\s,\[\]\"']+)"


def public(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs less what names the machine that ran them: :data:`PRIVATE` columns, an
    absolute interpreter path at the head of the command line (``.venv/bin/python`` stays), the
    folder of a tuning's Optuna store (``sqlite:///optuna.db`` stays), and the folders of any other
    absolute path in the command or a param (``hydra.run.dir=…/run3``, ``task.corpus=…/plays.txt``:
    its name stays; a path with a space in it keeps the names after the space)."""
    runs = runs.drop(columns=[c for c in PRIVATE if c in runs.columns])
    if "tags.command" in runs:
        runs = runs.assign(**{"tags.command": runs["tags.command"].str.replace(
            r"^/\S*?/((?:\.venv[^/\s]*/bin/)?python[\d.]*)(?=\s)", r"\1", regex=True)})
    # any other absolute path, in the command or a param (task.corpus): its last name alone
    named = [c for c in runs.columns if c == "tags.command" or (c.startswith("params.") and c != "params.tune.storage")]
    for c in named:
        if runs[c].dtype == object or pd.api.types.is_string_dtype(runs[c]):
            runs[c] = runs[c].str.replace(ABSOLUTE_PATH, r"…/\1", regex=True)
    if "params.tune.storage" in runs:  # the Optuna store beside the MLflow one: its file name alone
        runs = runs.assign(**{"params.tune.storage": runs["params.tune.storage"].str.replace(
            r"^(sqlite:///)/\S*/([^/\s]+)$", r"\1\2", regex=True)})
    return runs


def _trimmed(path: str, text: str) -> str:
    """What of an artifact the report reads: of the gradient-through-time profile (every probe,
    about 230 KB a run at T = 400), its last probe, which is all the report draws."""
    if path != "diagnostics/grad_flow.csv":
        return text
    gf = pd.read_csv(io.StringIO(text))
    return gf[gf["step"] == gf["step"].max()].to_csv(index=False) if len(gf) else text


class Recorder:
    """A :class:`Store` that remembers every history and artifact read through it."""

    def __init__(self, store: Store):
        self.store = store
        self.tracking_uri, self.experiment, self.sweep_id = store.tracking_uri, store.experiment, store.sweep_id
        self.client = store.client
        self.read_histories: list[pd.DataFrame] = []
        self.read_texts: list[tuple[str, str, str]] = []
        self._runs: pd.DataFrame | None = None

    def runs(self) -> pd.DataFrame:
        if self._runs is None:
            self._runs = self.store.runs()
        return self._runs.copy()

    def histories(self, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
        h = self.store.histories(run_ids, keys)
        self.read_histories.append(h)
        return h

    def csv(self, run_ids: Iterable[str], artifact: str) -> pd.DataFrame:
        return _frame(self.texts(run_ids, artifact))

    def texts(self, run_ids: Iterable[str], artifact: str) -> dict[str, str]:
        texts = self.store.texts(run_ids, artifact)
        self.read_texts += [(rid, artifact, text) for rid, text in texts.items()]
        return texts

    def save(self, folder: Path, extra_histories: pd.DataFrame | None = None, complete: bool = True) -> list[Path]:
        """Write what was read (plus ``extra_histories``, e.g. what the UI's views chart) to
        ``folder/data/``; the runs less :data:`PRIVATE` columns. ``complete=False`` marks a
        snapshot of a study still running (no report rests on it; it lets another machine
        continue the study: ``open_study.py --store`` rebuilds a store its sweeps resume in)."""
        data = Path(folder) / DATA
        data.mkdir(parents=True, exist_ok=True)
        runs = public(self.runs())
        hist = pd.concat([*self.read_histories, *([extra_histories] if extra_histories is not None else [])],
                         ignore_index=True)
        hist = (hist.drop_duplicates(["run_id", "key", "step"], keep="first") if len(hist)
                else pd.DataFrame(columns=HISTORY_COLUMNS))
        arts = pd.DataFrame([(rid, path, _trimmed(path, text)) for rid, path, text in self.read_texts],
                            columns=["run_id", "path", "text"]).drop_duplicates(["run_id", "path"])
        written = [data / RUNS, data / HISTORIES, data / ARTIFACTS, data / STUDY]
        runs.to_parquet(written[0], index=False, compression="zstd")
        hist.astype({"step": "int64", "value": "float64"}).to_parquet(written[1], index=False, compression="zstd")
        arts.to_parquet(written[2], index=False, compression="zstd")
        meta = {"experiment": self.experiment, "sweep_id": self.sweep_id, "complete": complete}
        written[3].write_text(json.dumps(meta, indent=1) + "\n")
        return written
