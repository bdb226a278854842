"""Sweeps: a parent MLflow run per Hydra multirun, children for its jobs, and resumption.

``SweepCallback`` (a Hydra callback, wired in ``conf/config.yaml``) runs in the launching
process. Before any job starts it creates the MLflow schema, the experiment and the sweep's
parent run, so parallel jobs never race to create them (a fresh sqlite store otherwise fails
with ``table ... already exists``), and writes the parent's id to ``<sweep dir>/sweep.json``
where every job, in whatever process or machine the launcher put it, finds it.

Every job records how it ended (``outcome.json`` in its own output dir: finished, diverged,
skipped, failed, interrupted, not_started), including a job that failed before its MLflow run
existed. The parent is ended from those records, whichever way the launcher leaves: when the
sweep completes, when Hydra stops on a failed job (it re-raises the first failure only after
every job of the batch ran, and then skips ``on_multirun_end``), on Ctrl-C and on SIGTERM. It ends
FINISHED when every job finished, diverged or was skipped, FAILED when one failed, KILLED when
the sweep was interrupted, always with the ``sweep/*`` counts.

Stopping (the mechanism is in :mod:`rnnlab.interrupts`): Ctrl-C or SIGTERM, to the whole process
group (a terminal) or to the launching process alone (``kill``, a scheduler), asks the sweep to
stop through ``<sweep dir>/stop``. Every
running job, in whatever process, stops at its next step boundary with that step saved and its
run KILLED; a job not yet started is not started; the parent ends KILLED and the command exits
130 (143 for SIGTERM); the same command continues the sweep. A second signal stops at once. Left
to joblib, the first Ctrl-C would reach the launcher as a ``KeyboardInterrupt`` and joblib would
SIGKILL its workers mid-step, leaving their runs RUNNING and their last steps unsaved.

Resumption: every run is tagged with ``config_hash``, a hash of its resolved config without
the bookkeeping keys. A job of a sweep skips its configuration when the experiment already
holds a run with that hash that FINISHED or diverged (a diverged run is a result, and
rerunning the same seed would only diverge again); ``sweep.rerun=true`` runs everything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rnnlab.interrupts import Terminated, handle_stop_signals, stop_path, stopped_by
from rnnlab.multirun import OUTCOME_FILE, OUTCOMES, SWEEP_FILE

# mlflow and rnnlab.tracking (which pulls in Lightning) are imported where used: Hydra builds
# this callback for every command, and a rejected command line must not pay seconds of imports.


def grid(config: DictConfig) -> dict[str, str]:
    """What the sweep varies: the preset's ``hydra.sweeper.params`` with the command line's
    overrides on top (a fixed value there takes a key out of the grid), e.g.
    ``{"cell": "lstm,gru", "seq_len": "25,50"}``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    params = config.hydra.sweeper.get("params") or {}
    merged = {str(k): str(v) for k, v in params.items()}
    for override in parser.parse_overrides(list(config.hydra.overrides.task)):
        typed = override.input_line or ""  # as typed: Hydra cannot render a sweep's value as str
        merged[override.get_key_element()] = typed.split("=", 1)[1]
    return {k: v for k, v in merged.items() if parser.parse_override(f"{k}={v}").is_sweep_override()}


def sweep_name(config: DictConfig, experiment: str) -> str:
    """``long_range cell=rnn,lstm,gru seq_len=25,50``: the preset (or experiment) and the grid."""
    base = config.get("sweep", {}).get("name") or f"sweep-{experiment}"
    return " ".join([base, *(f"{k}={v}" for k, v in grid(config).items())])[:250]


_open: dict[str, Any] | None = None  # the parent run this process created and has not ended


def end_open_sweep(exc: BaseException | None) -> None:
    """End the sweep this process started, if it is still open, after the launcher stopped
    with ``exc``: interrupted (KILLED) or failed (FAILED). Called by ``src/train.py``."""
    if _open is not None:
        interrupted = isinstance(exc, (KeyboardInterrupt, Terminated))
        _end(_open, "interrupted" if interrupted else "failed")


def _end(info: dict[str, Any], how: str) -> None:
    """Count the jobs' outcomes into the parent run and give it its final status."""
    global _open
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    _open = None
    counts = dict.fromkeys(OUTCOMES, 0)
    for path in Path(info["sweep_dir"]).glob(f"*/{OUTCOME_FILE}"):
        counts[json.loads(path.read_text())["outcome"]] += 1
    if how == "interrupted":
        status = "KILLED"
    else:
        status = "FAILED" if counts["failed"] or how == "failed" else "FINISHED"
    client = MlflowClient(info["tracking_uri"])
    parent = info["parent_run_id"]
    if how == "interrupted":
        counts["interrupted"] += _end_orphans(client, info, stopped_by() or "SIGINT")
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(f"sweep/{k}", v, now, 0) for k, v in counts.items()])
    mode = report_mode(info.get("report", REPORT_MODES[0]))
    reported = how != "interrupted" and mode != "false" and counts["finished"] + counts["diverged"] > 0
    if reported and mode == "wait":
        reported = _attach_comparison(info)
    client.set_terminated(parent, status)
    print(f"sweep {status}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
          f" (parent MLflow run {parent})", flush=True)
    if reported and mode == "background":
        reported = _comparison_in_background(info)
    print_links(client, info["ui"], info["experiment_id"], parent, info.get("name") or parent, report=reported)


def _end_orphans(client, info: dict[str, Any], signame: str) -> int:
    """A job killed before it could end its run (a second Ctrl-C: joblib SIGKILLs its workers)
    leaves it RUNNING; it ends KILLED here, and the same command continues it from its last
    periodic checkpoint."""
    from rnnlab import runs

    query = f"tags.{runs.SWEEP_ID} = '{info['parent_run_id']}' and attributes.status = 'RUNNING'"
    orphans = [r.info.run_id for r in client.search_runs([info["experiment_id"]], query)
               if r.info.run_id != info["parent_run_id"]]
    for run_id in orphans:
        client.set_tag(run_id, runs.STATUS_REASON, "interrupted")
        client.set_tag(run_id, runs.STOPPED_BY, signame)
        client.set_terminated(run_id, "KILLED")
    return len(orphans)


def _end_orphaned_parents(client, exp_id: str, name: str, params: dict, successor: str) -> None:
    """The same sweep started again (same name and grid) after a kill no handler saw (a session's
    end, SIGKILL): the earlier parent, still RUNNING with its process gone (:func:`runs.is_orphan`),
    ends KILLED (``status_reason=orphaned``). Its jobs' runs are ended as the new sweep reaches
    their configurations (rnnlab.run)."""
    from rnnlab import runs

    query = f"tags.{runs.SWEEP} = 'true' and attributes.status = 'RUNNING'"
    try:
        same = [r for r in client.search_runs([exp_id], query) if r.info.run_id != successor
                and r.info.run_name == name and r.data.tags.get(runs.SWEEP_PARAMS) == json.dumps(params)]
        n = runs.end_orphans(client, same, successor)
    except Exception as e:  # housekeeping: it must not stop the sweep it was done for
        print(f"sweep {name}: could not check earlier parent runs for orphans ({type(e).__name__}: {e})", flush=True)
        return
    if n:
        print(f"sweep {name}: ended KILLED {n} earlier parent run(s) that a killed process left RUNNING", flush=True)


def print_links(client, ui: str, experiment_id: str, parent: str, name: str, report: bool = True) -> None:
    """The links to open after a sweep, the comparison view first (see rnnlab.views). A view
    that cannot be written is one line, then the plain links."""
    from rnnlab import tracking, views

    try:
        key = views.for_sweep(client, experiment_id, parent, name)
    except Exception as e:  # the sweep stands without its view
        print(f"sweep: no comparison view in the MLflow UI ({type(e).__name__}: {e})", flush=True)
        print(f"compare the runs, best test/skill first: {tracking.compare_url(ui, experiment_id)}", flush=True)
    else:
        print(f"compare the cells (table, grouped by cell): {views.url(ui, experiment_id, key)}\n"
              f"compare the cells (charts): {views.url(ui, experiment_id, key, charts=True)}", flush=True)
    if report:
        print(f"the sweep's report: {tracking.run_url(ui, experiment_id, parent, 'artifacts/report/REPORT.md')}",
              flush=True)


# sweep.report: how the sweep's comparison report is made when it ends. "background" (the
# default): by a process of its own, after the parent run ended and the command returned, so
# that its figures (seconds of matplotlib and pandas) are off the user's wait; "wait": before
# the parent ends, the command returning after it (what a script that reads the report next
# needs); "false": none. A YAML true is "background" (the key was a boolean before).
REPORT_MODES = ("background", "wait", "false")
REPORT_LOG = "report.log"  # in the sweep dir: what the background report printed
REPORT_DONE = "report.done"  # in the sweep dir, once the background report ended: its exit code


def report_mode(value: object) -> str:
    """``sweep.report`` as one of :data:`REPORT_MODES` (true: background, false: false)."""
    if value is True:
        return "background"
    if value is False or value is None:
        return "false"
    return str(value)


def _comparison_in_background(info: dict[str, Any]) -> bool:
    """Start the comparison report in a process of its own (``python -m rnnlab.sweep_report
    <sweep dir>``, its own session: a Ctrl-C at the prompt does not reach it); say where it
    goes and where its log is. It logs to the ended parent run (artifacts may be added to a
    finished run) and writes ``report.done`` beside its log when it ends."""
    import os
    import subprocess
    import sys

    sweep_dir = Path(info["sweep_dir"])
    (sweep_dir / REPORT_DONE).unlink(missing_ok=True)
    src = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    try:
        with open(sweep_dir / REPORT_LOG, "w") as log:
            subprocess.Popen([sys.executable, "-m", "rnnlab.sweep_report", str(sweep_dir)], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=sweep_dir,
                             start_new_session=True)
    except OSError as e:  # the sweep's outcome stands without its summary
        print(f"sweep: no comparison report ({type(e).__name__}: {e})", flush=True)
        return False
    print(f"sweep: its comparison report is being written in the background, to the parent run's report/ "
          f"(log: {sweep_dir / REPORT_LOG}; sweep.report=wait waits for it)", flush=True)
    return True


def wait_for_report(sweep_dir: Path | str, timeout: float = 300.0) -> int:
    """The exit code of a sweep's background report, once it has ended (for scripts and tests
    that read the report next); TimeoutError if it has not after ``timeout`` seconds."""
    done = Path(sweep_dir) / REPORT_DONE
    deadline = time.monotonic() + timeout
    while not done.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sweep's report has not ended after {timeout:.0f} s: see "
                               f"{Path(sweep_dir) / REPORT_LOG}")
        time.sleep(0.2)
    return int(done.read_text().strip() or 1)


def _attach_comparison(info: dict[str, Any]) -> bool:
    """The comparison of this sweep's runs (REPORT.md: tables per task, baselines, figures of
    the metric against length, training curves, gradient through time) as artifacts of the
    parent run, under ``report/``: the MLflow UI then answers "which cell won" by itself. A
    report that cannot be made is said, and the parent still ends."""
    from rnnlab import report

    try:
        result = report.build(info["experiment"], info["tracking_uri"], Path(info["sweep_dir"]) / "report",
                              sweep_id=info["parent_run_id"], log_to_parent=True)
    except Exception as e:  # the sweep's outcome stands without its summary
        print(f"sweep: no comparison report ({type(e).__name__}: {e})", flush=True)
        return False
    print(f"sweep: comparison of {result.n_runs} runs logged to the parent run under report/ "
          f"({result.report})", flush=True)
    return True


def _warm_up(config: DictConfig) -> None:
    """Under the warm launcher (rnnlab.launcher), its forkserver starts importing the training
    path now, while this process imports MLflow and opens the parent run."""
    launcher = config.hydra.get("launcher") or {}
    if str(launcher.get("_target_", "")).startswith("hydra_plugins.rnnlab_launcher."):
        from rnnlab import launcher as warm

        warm.context(warm.threads_per_job(config.get("threads"), int(launcher.get("n_jobs") or 1)))


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _open
        stop = stop_path(Path(config.hydra.sweep.dir).resolve())
        stop.unlink(missing_ok=True)  # a rerun into the same dir: the last stop was served
        handle_stop_signals(stop.parent, launcher=True)  # before the parent run: it must not stay RUNNING
        _warm_up(config)
        if config.get("tune"):  # a tuning sweep: a parent per arm's study (rnnlab.tune.study)
            return
        from mlflow import MlflowClient

        from rnnlab import runs, tracking

        uri = tracking.tracking_uri(config.tracking)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates the schema, once, here
        task = config.hydra.runtime.choices.get("task", "sweep")
        experiment = runs.experiment_name(config, task)
        exp_id = tracking.get_or_create_experiment(client, experiment, tracking.artifact_root(config.tracking))
        name, params = sweep_name(config, experiment), grid(config)
        parent = client.create_run(exp_id, run_name=name, tags={
            runs.SWEEP: "true", runs.COMMAND: tracking.command_line(), **tracking.git_info(),
            runs.SWEEP_PARAMS: json.dumps(params), **runs.process_tags(),
        })
        run_id = parent.info.run_id
        client.set_tag(run_id, runs.SWEEP_ID, run_id)
        _end_orphaned_parents(client, exp_id, name, params, run_id)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        for stale in sweep_dir.glob(f"*/{OUTCOME_FILE}"):  # a rerun into the same dir counts afresh
            stale.unlink()
        info = {"parent_run_id": run_id, "experiment": experiment, "tracking_uri": uri, "experiment_id": exp_id,
                "name": name,
                "ui": tracking.ui_base(config.tracking),
                "sweep_dir": str(sweep_dir.resolve()),
                "report": report_mode(config.get("sweep", {}).get("report", True))}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(info))
        _open = info
        print(f"sweep {name}: parent MLflow run {run_id} in experiment '{experiment}'", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _open is not None:
            _end(_open, "interrupted" if stopped_by() else "completed")
