"""MLflow tracking: one run per training job, owned by rnnlab from creation to final status.

rnnlab creates the run itself (after the config and data have been validated, so a bad
command line never leaves a run behind), hands its id to Lightning's ``MLFlowLogger`` for
metrics, and sets the final status itself: FINISHED, or FAILED with the reason as tags.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from omegaconf import DictConfig, OmegaConf

from rnnlab import paths, runs
from rnnlab.tracking_lost import TrackingLost

# Every function here takes the ``tracking`` node of the config (conf/tracking/), not the
# whole experiment: what is tracked is the caller's business.


def tracking_uri(tcfg: DictConfig) -> str:
    return tcfg.get("uri") or paths.default_tracking_uri()


def artifact_root(tcfg: DictConfig) -> str | None:
    """Where new experiments keep artifacts; None lets a tracking server use its own store."""
    root = tcfg.get("artifact_root")
    if root:
        return Path(root).resolve().as_uri()
    uri = tracking_uri(tcfg)
    return None if uri.startswith(("http://", "https://")) else paths.default_artifact_root(uri)


def preflight(tcfg: DictConfig) -> None:
    """Fail before training, with one clear line, when the tracking store or the artifact
    directory cannot be written or the tracking server cannot be reached."""
    from rnnlab.config import ConfigError

    uri = tracking_uri(tcfg)
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as e:
            raise ConfigError("tracking.uri", uri, f"cannot reach the MLflow server ({type(e).__name__}); "
                              "start it (make server) or unset MLFLOW_TRACKING_URI") from None
        return
    if uri.startswith("sqlite:///"):
        _require_writable("tracking.uri", uri, Path(uri[len("sqlite:///"):]).parent)
    elif uri.startswith("file:") or "://" not in uri:
        _require_writable("tracking.uri", uri, Path(uri.removeprefix("file://")))
    local_root = artifact_root(tcfg) or paths.default_artifact_root(uri)  # not None: the store is local
    _require_writable("tracking.artifact_root", tcfg.get("artifact_root") or local_root.removeprefix("file://"),
                      Path(local_root.removeprefix("file://")))


def require_space(tcfg: DictConfig, n_bytes_params: int, checkpoint_dir: str) -> None:
    """Fail before training when a disk cannot hold what the run will write: ``last.ckpt`` and
    ``best.ckpt`` (weights plus optimizer state, about 3x the weights for Adam, each written
    through a temporary copy) and, in the artifact store, the best checkpoint and the plots."""
    from rnnlab.config import ConfigError

    checkpoint = 3 * n_bytes_params + (1 << 20)
    needs = {"hydra.run.dir": (checkpoint_dir, 3 * checkpoint)}
    root = artifact_root(tcfg)
    if root is not None and root.startswith("file://"):
        needs["tracking.artifact_root"] = (root.removeprefix("file://"), checkpoint + (2 << 20))
    by_device: dict[int, list[tuple[str, str, int]]] = {}
    for key, (directory, n) in needs.items():
        existing = _existing_ancestor(Path(directory))
        by_device.setdefault(existing.stat().st_dev, []).append((key, directory, n))
    for entries in by_device.values():
        need = sum(n for _, _, n in entries)
        key, directory, _ = entries[0]
        free = shutil.disk_usage(_existing_ancestor(Path(directory))).free
        if free < need:
            raise ConfigError(key, directory, f"only {free / 1e6:.2f} MB free there; this run writes about "
                              f"{need / 1e6:.2f} MB of checkpoints and artifacts")


def _existing_ancestor(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _require_writable(key: str, value: str, directory: Path) -> None:
    from rnnlab.config import ConfigError

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".rnnlab-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(key, value, f"cannot write to {directory} ({e.strerror})") from None


# MLflow 3's UI opens an experiment in its GenAI mode (traces) unless told otherwise. The mode
# comes from the browser (this URL parameter, else localStorage), not from the store; the
# experiment tag is the documented kind and is set too.
WORKFLOW = "workflowType=machine_learning"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


DEFAULT_UI = "http://127.0.0.1:5000"  # make ui's address (conf/tracking/mlflow.yaml: ui_url)


def ui_base(tcfg: DictConfig) -> str:
    """Where the MLflow UI for this store is: the tracking server itself, else ``make ui``'s."""
    uri = tracking_uri(tcfg)
    return (uri if uri.startswith(("http://", "https://")) else str(tcfg.get("ui_url") or "")).rstrip("/")


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?{WORKFLOW}"


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page; ``tab`` e.g. ``artifacts/report/metric_vs_length.png``."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{'/' + tab if tab else ''}?{WORKFLOW}"


def compare_url(base: str, experiment_id: str, metric: str = "test/skill") -> str:
    """The runs table sorted by ``metric``, best first. Sorting also lists a sweep's jobs
    flat: the default view nests them, collapsed, under their parent, and then its charts
    show only the parent's own metrics."""
    key = f"metrics.%60{metric.replace('/', '%2F')}%60"  # metrics.`test/skill`, URL-encoded
    return f"{experiment_url(base, experiment_id)}&orderByKey={key}&orderByAsc=false"


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name``; tolerant of another process creating it at the same time."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if not set(EXPERIMENT_KIND) <= set(exp.tags):  # made before rnnlab set the kind
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
    except mlflow.exceptions.MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@functools.lru_cache(maxsize=1)
def git_info() -> dict[str, str]:
    """The commit of the code this process runs: read once, at the first run of the process,
    so that a sweep's long-lived worker processes do not report a HEAD that moved on since
    they loaded their code."""
    root = paths.repo_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        commit = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


CODE_SUFFIXES = (".py", ".yaml")


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """A digest of the code this process runs (every ``.py`` under ``src/`` and ``.yaml`` under
    ``conf/``, by relative path and content), read once per process like :func:`git_info`.
    Two runs with the same code hash ran the same code, whatever the commits or the state of
    the working tree; a study states one."""
    digest = hashlib.sha256()
    src = Path(__file__).resolve().parents[1]
    for root in (src, paths.config_dir()):
        for f in sorted(root.rglob("*")):
            if f.suffix in CODE_SUFFIXES and f.is_file() and "__pycache__" not in f.parts:
                digest.update(f"{root.name}/{f.relative_to(root).as_posix()}\0".encode())
                digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


class Run:
    """An MLflow run for one training job: a new one, or (``resume_id``) one being resumed."""

    def __init__(self, tcfg: DictConfig, experiment: str, name: str, tags: dict[str, Any],
                 resume_id: str | None = None, attach_id: str | None = None):
        """``attach_id``: a DDP worker process (rank > 0) uses rank 0's run and writes nothing."""
        self.uri = tracking_uri(tcfg)
        self.client = MlflowClient(self.uri)
        mlflow.set_tracking_uri(self.uri)
        self.experiment_name = experiment
        self.experiment_id = get_or_create_experiment(self.client, experiment, artifact_root(tcfg))
        self.name = name
        self.resumed = resume_id is not None
        logged: dict[str, set[int]] = {}
        if attach_id is not None:
            self.id = attach_id
        elif resume_id is None:
            all_tags = {"mlflow.runName": self.name, "mlflow.source.name": "src/train.py", **tags}
            self.id = self.client.create_run(self.experiment_id, run_name=self.name,
                                             tags={k: str(v) for k, v in all_tags.items()}).info.run_id
        else:
            self.id = resume_id
            previous = self.client.get_run(resume_id)
            for key in previous.data.metrics:
                logged[key] = {m.step for m in self.client.get_metric_history(resume_id, key)}
            self.client.update_run(resume_id, status="RUNNING")
            self.set_tags({runs.RESUME_COUNT: int(previous.data.tags.get(runs.RESUME_COUNT, 0)) + 1})
            for key in runs.ENDING_TAGS:  # how the last attempt ended no longer describes the run
                if key in previous.data.tags:
                    self.client.delete_tag(resume_id, key)
        asynchronous = tcfg.get("async_logging", True)
        if asynchronous:  # read by MLflow's logging thread: gather points, write them together
            os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = str(tcfg.get("async_buffer_s", 2))
        from rnnlab.run_logger import RunLogger  # Lightning: not for a sweep's parent process

        self.logger = RunLogger(experiment_name=self.experiment_name, tracking_uri=self.uri,
                                run_id=self.id, synchronous=not asynchronous, logged=logged)
        self.url = run_url(ui_base(tcfg), self.experiment_id, self.id)
        self.checkpoint_dir: str | None = None  # set once training starts

    def log_config(self, cfg: DictConfig, params: dict[str, Any]) -> None:
        """``params`` (cut at MLflow's length limit), and the whole resolved config as a file."""
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params a call
            self.client.log_batch(self.id, params=items[i:i + 100])
        self.client.log_text(self.id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.logger.log_metrics(metrics, step)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.id, path, artifact_path)

    def flush(self) -> None:
        """Wait until every point logged so far is in the store; :class:`TrackingLost` if not."""
        mlflow.flush_async_logging()
        self.logger.raise_if_lost()

    def end(self, status: str) -> None:
        self.flush()
        self.client.set_terminated(self.id, status)

    def reachable(self) -> bool:
        """Whether the store still answers (a server's health check; a local store: yes)."""
        if not self.uri.startswith(("http://", "https://")):
            return True
        import requests

        try:
            return requests.get(self.uri.rstrip("/") + "/health", timeout=3).ok
        except requests.RequestException:
            return False

    def lost(self, cause: BaseException) -> TrackingLost:
        """The error for a run whose store went away: what happened, where the checkpoints are
        and the command that continues this same MLflow run."""
        last = os.path.join(self.checkpoint_dir, "last.ckpt") if self.checkpoint_dir else None
        kept = (f"its checkpoints are kept in {self.checkpoint_dir}" if last and os.path.exists(last)
                else "it had not written a checkpoint yet")
        return TrackingLost(
            f"lost the MLflow tracking store {self.uri} during run {self.id} ({cause}); training stopped "
            f"and {kept}. Once the store is back, continue the same run with:\n"
            f"  {resume_command(self.id)}")


def python_command() -> str:
    """How to call this interpreter again: ``python`` when that name finds it on PATH, else
    its path (``.venv/bin/python`` after ``make train``, relative when under the working dir),
    so that a printed command runs with the packages this run had."""
    found = shutil.which("python")
    if found and os.path.abspath(found) == os.path.abspath(sys.executable):
        return "python"
    here = os.path.abspath(sys.executable)
    relative = os.path.relpath(here)
    return relative if not relative.startswith("..") else here


def command_line() -> str:
    return " ".join([python_command(), *(shlex.quote(a) for a in sys.argv)])


def resume_command(run_id: str) -> str:
    """This process's command line, continuing ``run_id``."""
    args = [shlex.quote(a) for a in sys.argv if not a.startswith("resume=")]
    return " ".join([python_command(), *args, f"resume={run_id}"])


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {uri}   (or: make ui)"
    return f"open {uri}" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"


def machine(cuda: bool = False) -> dict[str, str]:
    """The processor a run computed on (``cuda``: and its GPU), tagged when the run starts: the
    machine of its first process (a resume continues where its checkpoint is, normally the same
    machine). Float results repeat bit for bit only on the same kernels, and torch picks its CPU
    kernels by the instruction set it finds (AVX2, AVX512, ...): the same run on two machines can
    differ in the fourth decimal (a committed study's LSTM seeds did), so a study run on several
    machines says which runs ran where."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:  # not Linux
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tags = {"env/cpu": f"{model}, {torch.backends.cpu.get_cpu_capability()}, {cpus} cpus"}
    if cuda:
        tags["env/gpu"] = torch.cuda.get_device_name()
    return tags


RESUMED = " → "  # a tag's values over a run's processes: "first → second"


def resumed_elsewhere(started: dict[str, str], now: dict[str, str]) -> dict[str, str]:
    """The tags a resumed run rewrites because this process differs from the one before it.

    A resume keeps the tags of the process that started the run, and its numbers equal an
    uninterrupted run's only with the same code, packages and processor. Where this process
    runs other code (``code_hash``), other packages (``version/*``) or another processor
    (``env/*``), the tag becomes ``"<before> → <now>"``: the report's code-hash row and any
    ``search_runs`` filter on the old value then count the run apart instead of vouching for
    it. The processor tags read as a family: on a run that has ``env/cpu``, a missing ``env/gpu``
    is ``none`` (no GPU), on either side. Other tags the run never had (a run from before them)
    are left alone."""
    family = "env/" if "env/cpu" in started else None
    changed = {}
    for key in now.keys() | {k for k in started if family and k.startswith(family)}:
        in_family = family is not None and key.startswith(family)
        before = started.get(key, "none" if in_family else None)
        value = now.get(key, "none")
        if before is not None and before.split(RESUMED)[-1] != value:
            changed[key] = before + RESUMED + value
    return dict(sorted(changed.items()))


def env_versions() -> dict[str, str]:
    import hydra
    import numpy
    import pytorch_lightning
    import torch

    return {"version/torch": torch.__version__, "version/lightning": pytorch_lightning.__version__,
            "version/hydra": hydra.__version__, "version/mlflow": mlflow.__version__,
            "version/numpy": numpy.__version__, "version/python": sys.version.split()[0]}
