"""Runs in the store: the tags rnnlab writes, and every lookup of a run by its configuration.

A run's identity is its ``config_hash`` tag (:func:`config_hash`), in the experiment
:func:`experiment_name` picks. A sweep skips a configuration that already has a result, a
killed run continues from its checkpoint, a tuner asks whether a trial has run, and a report
groups runs by the tags that say what they are (cell, task, length, clip, seed): all read
the names defined here and only here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Iterable, Iterator

from omegaconf import DictConfig

from rnnlab.config import BOOKKEEPING, ConfigError, plain

# Tag keys: written by rnnlab.run, rnnlab.sweep and the tuner, read by the report, the views
# and these lookups. First what a run is (a tuning study's parent: cell, task, seq_len)...
CELL, TASK, SEQ_LEN, CLIP, SEED = "cell", "task", "seq_len", "clip", "seed"
COMMAND = "command"  # the command line that made it
# ...then how it ran and ended.
CONFIG_HASH = "config_hash"
CODE_HASH = "code_hash"  # a digest of src/ and conf/: runs with one code hash ran the same code
CHECKPOINT_DIR = "checkpoint_dir"
DIVERGED = "diverged"  # "true" | "false": a non-finite loss or gradient ended the run
DIVERGED_AT = "diverged_at_step"
LAST_GRAD_NORM = "last_grad_norm"
STATUS_REASON = "status_reason"  # ok | diverged | interrupted | error | orphaned
STOP_REASON = "stop_reason"  # max_steps | solved | diverged: why training ended
STOPPED_BY = "stopped_by"  # SIGINT | SIGTERM, on a KILLED run
ORPHANED_BY = "orphaned_by"  # on a run ended KILLED because its process was gone: who found it
HOST = "host"  # the machine a run's process runs on
PID = "pid"  # that process's id there
ORPHAN_AFTER_S = 900  # a RUNNING run of another machine that logged nothing this long is taken for dead
ERROR = "error"  # "<ExceptionType>: <message>", on a FAILED run
RESUME_COUNT = "resume_count"
WORLD_SIZE = "world_size"  # how many processes trained it (DDP: its ranks); a resume must match
SWEEP = "sweep"  # "true" on a sweep's parent run
SWEEP_ID = "sweep_id"  # the parent's run id, on the parent and on each of its jobs
SWEEP_PARAMS = "sweep_params"
TUNE_STUDY = "tune_study"  # on a tuning study's parent run: the Optuna study's name
TUNE_ROLE = "tune_role"  # on its children: trial | reseed (the best configuration on a fresh seed)
TUNE_TRIAL = "tune_trial"  # on its children: the trial number (a reseed: the best trial's)
TUNE_SPACE = "tune_space"  # on a study's parent: the search space it was given (JSON)
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
MAIN_METRIC = "main_metric"  # the task's model-selection metric, e.g. val/mse...
METRIC_MODE = "metric_mode"  # ...and min | max: a report reads them instead of importing the task


def config_hash(cfg: DictConfig) -> str:
    """Identity of a configuration: what determines the numbers, not where they are logged."""
    kept = {k: v for k, v in plain(cfg).items() if k not in BOOKKEEPING}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def experiment_name(cfg: DictConfig, task_name: str) -> str:
    return cfg.tracking.get("experiment") or task_name


def identity_tags(cfg: DictConfig, task_name: str) -> dict[str, str]:
    """What a run is, as the tags a report groups by and a researcher filters on."""
    return {CELL: cfg.cell.name, TASK: task_name, SEQ_LEN: str(cfg.seq_len), CLIP: str(cfg.clip),
            SEED: str(cfg.seed)}


def clip_label(value) -> str:
    """The ``clip`` tag's value as run names, console lines and reports write it: ``none`` when
    clipping was off, else ``1.0``, ``0.5``, ``1e-05`` (from a config's float or a tag's text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    text = str(value).strip()
    if text.lower() in ("none", "null", "", "nan"):
        return "none"
    try:
        s = f"{float(text):g}"
    except ValueError:
        return text
    return s if any(c in s for c in ".en") else s + ".0"


def metric_name(metric: str) -> str:
    """A metric's name without its split: ``val/bpc`` -> ``bpc`` (the key of ``baseline/bpc``)."""
    return metric.split("/", 1)[1]


def on_split(metric: str, split: str) -> str:
    """The same metric on another split: ``on_split("val/bpc", "test")`` -> ``test/bpc``."""
    return f"{split}/{metric_name(metric)}"


# Tags that describe how an earlier attempt ended; a resumed run drops them.
ENDING_TAGS = (ERROR, STOPPED_BY)


def is_result(run) -> bool:
    """A run whose outcome is known: FINISHED, or diverged (rerunning the same seed would only
    diverge again)."""
    return run.info.status == "FINISHED" or run.data.tags.get(DIVERGED) == "true"


def with_config(client, experiment: str, digest: str) -> Iterator:
    """Runs of this configuration in ``experiment``, newest first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return iter(())
    return iter(client.search_runs([exp.experiment_id], f"tags.{CONFIG_HASH} = '{digest}'",
                                   order_by=["attributes.start_time DESC"]))


def completed(client, experiment: str, digest: str):
    """The newest run of this configuration that has a result, or None."""
    return next((r for r in with_config(client, experiment, digest) if is_result(r)), None)


def process_tags() -> dict[str, str]:
    """Where a run's process runs (``host``, ``pid``): how a later sweep tells a dead run from a
    live one (:func:`is_orphan`)."""
    return {HOST: socket.gethostname(), PID: str(os.getpid())}


def is_orphan(client, run, now_ms: int | None = None) -> bool:
    """Whether a RUNNING run's process is gone. On this machine its pid says (a recycled pid
    reads as alive: the safe side); elsewhere, or for a run from before the tags, it is taken for
    dead once it has logged nothing for :data:`ORPHAN_AFTER_S` (a live job logs every few
    seconds). A run training on another machine is never ended while it still logs."""
    if run.info.status != "RUNNING":
        return False
    host, pid = run.data.tags.get(HOST), run.data.tags.get(PID, "")
    if host == socket.gethostname() and pid.isdigit():
        return not _alive(int(pid))
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return now - last_activity(client, run) > ORPHAN_AFTER_S * 1000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def end_orphans(client, candidates: Iterable, successor: str) -> int:
    """End KILLED those ``candidates`` that are orphans (:func:`is_orphan`): runs left RUNNING
    by a process killed outright (SIGKILL, an out-of-memory kill, a session or machine lost),
    which no handler could end. Each is tagged ``status_reason=orphaned`` and
    ``orphaned_by=<successor>``, the run (or sweep) that found it and does its work again, and
    ends when it last logged; a checkpoint it left stays resumable (KILLED is not a result).
    Returns how many were ended."""
    n = 0
    for run in candidates:
        if not is_orphan(client, run):
            continue
        client.set_tag(run.info.run_id, STATUS_REASON, "orphaned")
        client.set_tag(run.info.run_id, ORPHANED_BY, successor)
        client.set_terminated(run.info.run_id, "KILLED", end_time=last_activity(client, run))
        n += 1
    return n


def last_activity(client, run) -> int:
    """When a run last did anything (ms): the newest point it logged, or a sweep parent's jobs'
    newest; its start where it logged none. An orphan ends then, not when it is found, so that
    its wall time is the time it ran. Histories are read only for runs still RUNNING (an ended
    job's end time says it)."""
    def newest(r) -> int:
        if r.info.status != "RUNNING" and r.info.end_time:
            return r.info.end_time
        points = (m for key in r.data.metrics for m in client.get_metric_history(r.info.run_id, key)[-1:])
        return max((m.timestamp for m in points), default=r.info.start_time)

    if run.data.tags.get(SWEEP) != "true":
        return newest(run)
    jobs = client.search_runs([run.info.experiment_id], f"tags.{SWEEP_ID} = '{run.info.run_id}'", max_results=50000)
    return max((newest(j) for j in jobs if j.info.run_id != run.info.run_id), default=run.info.start_time)


def last_checkpoint(run) -> str | None:
    """``last.ckpt`` of a run, if it is still on this machine's disk."""
    directory = run.data.tags.get(CHECKPOINT_DIR)
    path = os.path.join(directory, "last.ckpt") if directory else None
    return path if path and os.path.exists(path) else None


def resumable(client, experiment: str, digest: str) -> tuple[str, str] | None:
    """The newest unfinished run of this configuration that has a checkpoint, and that checkpoint."""
    for run in with_config(client, experiment, digest):
        ckpt = None if is_result(run) else last_checkpoint(run)
        if ckpt is not None:
            return run.info.run_id, ckpt
    return None


def named(client, run_id: str, digest: str, uri: str) -> tuple[str, str]:
    """``resume=<run id>``: that run and its checkpoint, which must be of this configuration."""
    try:
        run = client.get_run(run_id)
    except Exception:
        raise ConfigError("resume", run_id, f"no such run in {uri}") from None
    if run.data.tags.get(CONFIG_HASH) != digest:
        raise ConfigError("resume", run_id, "that run was made with another configuration "
                          "(resume with the same overrides it was started with)")
    ckpt = last_checkpoint(run)
    if ckpt is None:
        raise ConfigError("resume", run_id, "that run has no checkpoint to resume from")
    return run_id, ckpt
