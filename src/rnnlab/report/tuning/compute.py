"""What a tuning cost: its trial runs, the training steps they ran and their wall seconds.

Two tunings of the same arms differ in cost by more than their number of runs: a run of a
task with a solve threshold and ``solve.early_stop`` ends once solved, so a search that finds
good configurations early trains fewer steps than one that does not. No run logs the steps
it trained as such, and a committed study's data keeps only each run's last metric values,
not the steps they were logged at; so the count is read from what every run records (see
:func:`steps_trained`), the same from the store and from the data.

Wall seconds are a run's end minus its start, except for a run stopped and resumed (a study
that spans sessions): its span holds the time it stood stopped, minutes or days, so its seconds
are its steps at the rate of the arm's runs that were not (their seconds over their steps): a
lower bound, since its steps are those it ended at, without the ones it trained again after
resuming from a checkpoint older than the stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rnnlab import runs as tags


@dataclass
class Compute:
    """An arm's tuning compute: its trial runs (every run a trial started, one per tuning
    seed), the steps they trained and their wall seconds, summed; ``unknown``: runs that
    ended before saying why they stopped (killed, failed), left out of the sums; ``estimated``:
    runs whose seconds are their steps at the rate of the others (resumed, or without both
    times; see the module's docstring). ``seconds`` is NaN where no run gives a rate."""

    runs: int = 0
    steps: int = 0
    seconds: float = 0.0
    unknown: int = 0
    estimated: int = 0


def of_trials(trial_runs: list) -> Compute:
    """The compute of an arm's trial runs (``Run`` objects, or the data's stand-ins for them)."""
    c = Compute(runs=len(trial_runs))
    measured, estimated_steps = [0, 0.0], 0
    for r in trial_runs:
        steps = steps_trained(r)
        if steps is None:
            c.unknown += 1
            continue
        c.steps += steps
        seconds = wall_seconds(r)
        if int(float(r.data.tags.get(tags.RESUME_COUNT) or 0)) or not seconds:  # no span to read
            c.estimated += 1
            estimated_steps += steps
        else:
            measured[0] += steps
            measured[1] += seconds
    rate = measured[1] / measured[0] if measured[0] else math.nan  # seconds per step, uninterrupted
    c.seconds = measured[1] + (estimated_steps * rate if estimated_steps else 0.0)
    return c


def steps_trained(run) -> int | None:
    """The training steps a run ran, from why it stopped (its ``stop_reason`` tag):

    * ``max_steps``: ``trainer.max_steps``;
    * ``diverged``: one past ``diverged_at_step`` (the step whose gradient was not finite);
    * ``solved``: the first validation step at which it had been solved for ``solve.patience``
      validations in a row, counting from ``steps_to_solve``, that lies in the last epoch the
      run reached (its ``epoch`` metric counts the epochs begun, of ``task.batches_per_epoch``
      steps): exact when the run stayed solved once solved, or when an epoch is no longer than
      a validation interval, as in the adding presets.

    None for a run that did not end by itself (killed, failed)."""
    t, p, m = run.data.tags, run.data.params, run.data.metrics
    reason = t.get(tags.STOP_REASON)
    if reason == "max_steps" and "trainer.max_steps" in p:
        return int(float(p["trainer.max_steps"]))
    if reason == "diverged" and tags.DIVERGED_AT in t:
        return int(float(t[tags.DIVERGED_AT])) + 1
    if reason != "solved" or "steps_to_solve" not in m:
        return None
    solved_at, patience = int(m["steps_to_solve"]), int(float(p.get("solve.patience", 1)))
    per_epoch = int(float(p.get("task.batches_per_epoch", 0) or 0))
    interval = float(p.get("trainer.val_check_interval", 0) or 0)
    every = int(interval if interval > 1 or not per_epoch else round(interval * per_epoch))
    first = solved_at + max(patience - 1, 0) * every
    epochs = m.get("epoch")
    if not every or not per_epoch or epochs is None or not math.isfinite(epochs):
        return first
    limit = int(float(p.get("trainer.max_steps", 0) or 0)) or None
    step = first
    while math.ceil(step / per_epoch) < epochs and (limit is None or step + every <= limit):
        step += every  # it fell below the threshold after solving, and went on
    return step


def wall_seconds(run) -> float:
    """From the run's start to its end (a resumed run's includes the time it stood stopped:
    :func:`of_trials` does not use it for those)."""
    start, end = run.info.start_time, getattr(run.info, "end_time", None)
    return max(end - start, 0) / 1000 if start and end else 0.0
