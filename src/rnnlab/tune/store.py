"""The Optuna side of a tuning sweep: where the studies live, one per arm, and how a trial is
asked and counted.

The studies persist in an RDB store (``tune.storage``; by default ``optuna.db`` beside the
MLflow store), so that rerunning the command continues them. A study records the space,
sampler, seed and metric it was made with, and refuses to continue under others: trials drawn
from two spaces would make one curve of incomparable points.
"""

from __future__ import annotations

from pathlib import Path

from rnnlab.tune.arms import Arm, Settings

DONE_STATES = ("COMPLETE", "PRUNED", "FAIL")


def storage_uri(settings: Settings, mlflow_uri: str) -> str:
    """``tune.storage``, else ``optuna.db`` beside a sqlite MLflow store, else in the repository."""
    if settings.t.get("storage"):
        return str(settings.t.storage)
    if mlflow_uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(mlflow_uri.removeprefix("sqlite:///")).with_name("optuna.db"))
    from rnnlab import paths

    return f"sqlite:///{paths.repo_root() / 'optuna.db'}"


def study_name(settings: Settings, arm: Arm) -> str:
    return f"{settings.name}: {arm.label}"


def open_study(settings: Settings, storage: str, arm: Arm):
    """The arm's study, created or continued under the signature it was made with."""
    import optuna

    name = study_name(settings, arm)
    study = optuna.create_study(study_name=name, storage=storage,
                                direction="minimize" if arm.mode == "min" else "maximize", load_if_exists=True)
    signature = {"space": {k: repr(v) for k, v in arm.space.items()}, "sampler": settings.sampler_name,
                 "seed": settings.seed_shown, "metric": arm.main_metric}
    before = study.user_attrs.get("signature")
    if before is None:
        study.set_user_attr("signature", signature)
    elif before != signature:
        raise SystemExit(f"error: study '{name}' in {storage} was made with another search "
                         f"space, sampler or seed ({before}); set tune.name to start a new study")
    return study


def sampler(settings: Settings, n: int, space: dict | None = None):
    """A sampler seeded by (seed, n), n the arm's n-th configuration: the same draws for it in every arm,
    and of a study resumed in another process (Optuna does not store a sampler's state).
    ``grid``: every combination of the space's choices once, trial n the n-th (Optuna's
    GridSampler reads which are done from the study), as Zoology and MAD take the best of a
    fixed grid of learning rates."""
    import optuna

    seed = settings.seed * 1_000_003 + n
    if settings.sampler_name == "grid":  # one seed for every trial: it orders the grid, trial n takes point n
        return optuna.samplers.GridSampler({k: list(d.choices) for k, d in (space or {}).items()},
                                           seed=settings.seed)
    if settings.sampler_name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def ask(settings: Settings, arm: Arm):
    """The arm's next trial, drawn by the sampler of its place among the arm's configurations:
    the trials not marked stale. A trial a stop left unfinished is asked again under a new
    number with its own values (:func:`rnnlab.tune.resume.reask_stale`); seeded by trial number,
    the next fresh trial would skip a draw, and an arm stopped once would no longer try the
    configurations every other arm tries."""
    arm.study.sampler = sampler(settings, len(live(arm.study)), arm.space)
    trial = arm.study.ask(arm.space)  # its values drawn now, from the space given
    if settings.sampler_name == "grid":  # GridSampler stops the study when told its last point,
        import optuna  # which Optuna allows in an objective only, not under ask-and-tell

        arm.study.sampler = optuna.samplers.RandomSampler()
    return trial


def live(study) -> list:
    """The study's trials but those asked again after a stop (marked stale): one per configuration."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("stale")]


def done(study) -> int:
    return counts(study)["trials_done"]


def counts(study) -> dict[str, int]:
    """Trials done (completed, pruned or failed; not those asked again), and of them how many
    diverged, failed and were pruned."""
    trials = live(study)
    state = [t.state.name for t in trials]
    diverged = sum(1 for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("diverged"))
    return {"trials_done": sum(s in DONE_STATES for s in state), "completed": state.count("COMPLETE"),
            "diverged": diverged, "failed": state.count("FAIL"), "pruned": state.count("PRUNED")}
