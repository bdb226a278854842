"""Shared fixtures: every test trains into its own throwaway MLflow store and output dir."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one pytest worker per core: each test, and every run it starts, gets one
    # thread (several oneDNN thread pools on the same cores slow each other down many times).
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow end-to-end tests first, each module's together (their module fixtures are set up
    once): pytest-xdist hands tests out in this order, so minutes-long tests start while the
    fast ones are still queued to fill the gaps, rather than one ending last on a worker while
    the others idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept within


# Small and fast; any test can add or override keys.
TINY = ["cell.hidden_size=16", "batch_size=8", "seq_len=20", "trainer.max_steps=6",
        "trainer.val_check_interval=3", "trainer.log_every_n_steps=2",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", "model.embed_dim=8",
        "checkpoint.min_interval_s=0"]

# A run long enough to be stopped mid-way: last.ckpt at the end of each 40-step epoch (however
# little time it took: min_interval_s=0), a validation (and a progress line, "step     60 |")
# every 20 steps.
LONG = ["task=adding", "cell=gru", "seq_len=20", "trainer.max_steps=120", "trainer.val_check_interval=20",
        "trainer.log_every_n_steps=5", "task.batches_per_epoch=40", "task.val_size=64", "task.test_size=64",
        "checkpoint.min_interval_s=0"]

# Exploding gradients as Pascanu et al. (2013) describe them: a tanh RNN, so the forward pass is
# bounded (|h| <= 1) whatever the weights, with recurrent weights at spectral radius 2, where
# backpropagation through 100 steps multiplies the gradient up (1e2 to 1e5 at initialisation,
# growing with T). Unclipped SGD at lr 1 takes steps that large, the head's weights run away
# and the loss overflows; clipped to norm 1, each step moves the weights by at most lr * clip,
# so the loss stays bounded and nothing is left to chance. Checked over seeds 0-7 with 1 and 2
# threads in a loop of the same model: unclipped runs go non-finite at step 11 or 12, clipped
# runs stay finite over 40 steps with a largest pre-clip norm of 3e6, far from overflow.
EXPLODING = ["task=adding", "cell=rnn", "cell.nonlinearity=tanh", "cell.spectral_radius=2.0",
             "optim.name=sgd", "optim.lr=1.0", "seq_len=100", "cell.hidden_size=32", "batch_size=16",
             "task.val_size=64", "task.test_size=64", "trainer.max_steps=30", "model.embed_dim=16",
             "trainer.val_check_interval=10"]


def warm_train(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float, capture_output: bool = True,
               text: bool = True) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd)`` for ``python src/train.py ...``, in a process forked from rnnlab's
    warm forkserver (:mod:`rnnlab.launcher`): train.py's main with its argv, environment, cwd,
    stdout, stderr and exit code, without the interpreter's start and imports (about 9 s a run
    on 2 cores, the suite's largest fixed cost). Tests of the cold path (imports, signals to a
    process group) start real processes."""
    from rnnlab import launcher, warm

    script, argv = cmd[1], cmd[2:]
    threads = int(os.environ.get("OMP_NUM_THREADS") or launcher.threads_per_job(None, 1))
    ctx = launcher.context(threads)
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder, "stdout"), Path(folder, "stderr")
        proc = ctx.Process(target=warm.run_main, args=(script, argv, str(cwd), env, str(out), str(err)))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():  # the run and what it started (a sweep's workers): its process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.join(30)
            raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text())
        return subprocess.CompletedProcess(cmd, proc.exitcode, out.read_text() if out.exists() else "",
                                           err.read_text() if err.exists() else "")


class Store:
    """A sqlite MLflow store plus artifact and output dirs under ``tmp_path``: a copy of an
    empty, already-migrated store (``template``), or none at all, for tests of what happens
    when a store is created (MLflow's schema migration costs seconds per store)."""

    def __init__(self, tmp_path: Path, template: Path | None = None):
        self.dir = tmp_path
        self.db = tmp_path / "mlflow.db"
        if template is not None:
            shutil.copy(template, self.db)
        self.uri = f"sqlite:///{self.db}"
        self.client = MlflowClient(self.uri)
        self._n = itertools.count(1)  # thread-safe: tests may train several runs at once

    def overrides(self) -> list[str]:
        n = next(self._n)
        return [f"hydra.run.dir={self.dir / f'out{n}'}",
                f"tracking.artifact_root={self.dir / 'mlruns'}"]

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri, "PYTHONUNBUFFERED": "1", **extra}
        env.pop("RNNLAB_ROOT", None)
        return env

    def train(self, *overrides: str, tiny: bool = True, check: bool = True, timeout: int = 300,
              env: dict[str, str] | None = None, python: str = sys.executable,
              cold: bool = False) -> subprocess.CompletedProcess:
        """Run ``python src/train.py`` as a user would; return the finished process. It runs in
        a warm process (:func:`warm_train`: train.py's own main, forked from a server that has
        imported the training path, as sweep workers are), less the seconds of interpreter start
        and imports; ``cold=True`` (or another ``python``) starts a new interpreter."""
        flags, rest, args = [], [], list(overrides)  # flags (-m, --config-path X) go first
        while args:
            a = args.pop(0)
            if a.startswith("-"):
                flags.append(a)
                if a in ("--config-path", "--config-name", "-cp", "-cn") and args:
                    flags.append(args.pop(0))
            else:
                rest.append(a)
        overrides = tuple(rest)
        cmd = [python, str(ROOT / "src" / "train.py"), *flags, *(TINY if tiny else []),
               *self.overrides(), *overrides]
        run = subprocess.run if cold or python != sys.executable else warm_train
        proc = run(cmd, capture_output=True, text=True, timeout=timeout, env={**self.env(), **(env or {})},
                   cwd=self.dir)
        if check and proc.returncode != 0:
            raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    def train_in_process(self, *overrides: str, tiny: bool = True, artifacts: bool = True):
        """``rnnlab.run.train`` on the config Hydra composes for these overrides, in this
        process: what ``src/train.py`` runs, without its seconds of interpreter start and
        imports. Outside Hydra's app there is no run dir: checkpoints go to a temp dir."""
        import mlflow

        from rnnlab.run import train

        where = [f"tracking.artifact_root={self.dir / 'mlruns'}"] if artifacts else []
        cfg = compose(*(TINY if tiny else []), f"tracking.uri={self.uri}", *where, *overrides)
        environ, uri = dict(os.environ), mlflow.get_tracking_uri()
        try:
            return train(cfg)
        finally:  # train() sets process state a run needs; the next test in this worker must not see it
            os.environ.clear()
            os.environ.update(environ)
            mlflow.set_tracking_uri(uri)

    def start(self, *overrides: str, stderr, tiny: bool = True) -> subprocess.Popen:
        """``python src/train.py`` in its own process group, its stdout readable line by line."""
        flags = [o for o in overrides if o.startswith("-")]  # -m goes before the overrides
        cmd = [sys.executable, str(ROOT / "src" / "train.py"), *flags, *(TINY if tiny else []), *self.overrides(),
               *(o for o in overrides if o not in flags)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=self.env(),
                                cwd=self.dir, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def signal_at(self, marker: str, sig: int, *overrides: str, group: bool = False,
                  times: int = 1, seen: int = 1) -> subprocess.CompletedProcess:
        """Start a run, send it ``sig`` once ``marker`` is on its stdout ``seen`` times (one
        line from each of a sweep's parallel jobs: they start seconds apart), return it
        finished. ``group``: to its whole process group, as a terminal's Ctrl-C does.
        ``times``: back to back, as GNU make forwards a SIGTERM its child also got."""
        with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe nobody reads while we wait
            proc = self.start(*overrides, stderr=err)
            out, deadline, found = [], time.time() + 240, 0
            assert proc.stdout is not None
            for line in proc.stdout:
                out.append(line)
                found += line.count(marker)  # parallel jobs' prints may share a line
                if found >= seen or time.time() > deadline:
                    break
            for _ in range(times):
                (os.killpg if group else os.kill)(proc.pid, sig)
            rest, _ = proc.communicate(timeout=120)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out) + rest, err.read())

    def snapshot(self, experiment: str) -> None:
        """A snapshot of the experiment's data (``report.py --export --partial``), as a study
        left unfinished at a session's end, or taken while it runs, is committed."""
        import importlib

        cli = importlib.import_module("report")  # src/report.py
        for attempt in range(5):  # a job frozen mid-write may hold sqlite's lock for a moment
            try:
                assert cli.main(["--experiment", experiment, "--export", "--partial", "--tracking-uri", self.uri,
                                 "--out", str(self.dir / "snapshot")]) == 0
                return
            except Exception as e:
                if "locked" not in str(e) or attempt == 4:
                    raise
                time.sleep(1)

    def elsewhere(self, experiment: str, *left_behind: str, taken: bool = False) -> Store:
        """The experiment continued on another machine: a snapshot of its data (:meth:`snapshot`,
        ``taken`` already) loaded into a new store (``rnnlab.studies.load``: a tuning's Optuna
        studies beside it), and this machine's store, Optuna store and ``left_behind`` folders
        (checkpoints) deleted."""
        from rnnlab import studies

        if not taken:
            self.snapshot(experiment)
        studies.load(self.dir / "snapshot", self.dir / "elsewhere" / "mlflow.db")
        for folder in left_behind:
            shutil.rmtree(self.dir / folder)
        for f in ("mlflow.db", "optuna.db"):
            (self.dir / f).unlink(missing_ok=True)
        return Store(self.dir / "elsewhere")  # its client made after the load: MLflow keeps one per URI

    def runs(self, experiment: str | None = None):
        exps = self.client.search_experiments()
        ids = [e.experiment_id for e in exps if experiment is None or e.name == experiment]
        return self.client.search_runs(ids) if ids else []

    def only_run(self, experiment: str | None = None):
        runs = self.runs(experiment)
        assert len(runs) == 1, f"expected one run, found {len(runs)}"
        return runs[0]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) by step: MLflow returns insertion order, and a resumed run fills gaps
        that out-of-order asynchronous writes left, after the later steps."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def leftovers(self) -> list[str]:
        """Files a rejected run must not leave behind: artifacts and checkpoints."""
        found = [p for p in (self.dir / "mlruns").rglob("*") if p.is_file()]
        found += [p for d in self.dir.rglob("checkpoints") for p in d.rglob("*") if p.is_file()]
        return sorted(str(p.relative_to(self.dir)) for p in found)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)  # creates the schema
    return path


@pytest.fixture
def store(tmp_path, migrated_db) -> Store:
    return Store(tmp_path, template=migrated_db)


@pytest.fixture
def fresh_store(tmp_path) -> Store:
    """No store file yet: the first process to use it creates it."""
    return Store(tmp_path)


def compose(*overrides: str):
    """The config Hydra would build for these overrides, without running anything."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import rnnlab.paths  # noqa: F401  (registers the config resolvers)

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


@contextlib.contextmanager
def as_rank(rank: int, world: int):
    """This process seen as rank ``rank`` of ``world`` by torch.distributed (what
    :func:`rnnlab.tasks.batching.shard` reads), without starting the processes."""
    import torch.distributed as dist

    with pytest.MonkeyPatch.context() as m:
        m.setattr(dist, "is_available", lambda: True)
        m.setattr(dist, "is_initialized", lambda: True)
        m.setattr(dist, "get_rank", lambda *a, **k: rank)
        m.setattr(dist, "get_world_size", lambda *a, **k: world)
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real ``mlflow server`` on 127.0.0.1 over a sqlite store in ``folder``; it can be
    killed (the whole process group, as when its machine goes away) and started again."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = folder / "server-artifacts"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        mlflow = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                return self
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.kill()
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def drawn(monkeypatch) -> dict[str, tuple[list[tuple], list[str]]]:
    """What each figure the report saves shows, by file name: its visible panels as (title,
    x label, y label, y scale, lines drawn), and its legend's entries."""
    from rnnlab import figures

    seen: dict[str, tuple[list[tuple], list[str]]] = {}
    save = figures.save

    def spy(fig, path, dpi=120):
        panels = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale(), len(ax.get_lines()))
                  for ax in fig.axes if ax.get_visible() and ax.axison]
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        seen[Path(path).name] = (panels, [t.get_text() for lg in legends for t in lg.get_texts()])
        return save(fig, path, dpi)

    monkeypatch.setattr(figures, "save", spy)
    return seen


def table_rows(text: str, first: str) -> list[list[str]]:
    """The cells of every markdown table row of a report page whose first cell is ``first``."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first} |")]


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, written out here by hand: the reports use statsmodels',
    so a test comparing the two checks the page's family, not the library against itself."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out
