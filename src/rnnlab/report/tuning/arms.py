"""One arm of a tuning experiment as the tuned report reads it, and the small helpers every
step of the report shares: how arms are ordered and how a sampled value is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnlab.report.tuning.compute import Compute
from rnnlab.runs import on_split


@dataclass
class ArmResult:
    """One arm of a tuning experiment, as the report reads it."""

    cell: str
    seq_len: int
    study: str
    parent_id: str
    main_metric: str
    mode: str
    storage: str
    space: dict[str, str]
    best_params: dict[str, str] = field(default_factory=dict)
    best_trial: int | None = None
    best_value: float | None = None
    trial_values: list[float] = field(default_factory=list)  # every finished trial's value (diverged: worst)
    trials: list[dict] = field(default_factory=list)  # {params, value, diverged}
    n_trials: int = 0
    n_diverged: int = 0
    n_failed: int = 0
    tuned: dict[int, float] = field(default_factory=dict)  # seed -> test metric of the re-seed runs
    default: dict[int, float] = field(default_factory=dict)  # seed -> test metric of the default arm
    tuned_solved: dict[int, bool] = field(default_factory=dict)
    default_solved: dict[int, bool] = field(default_factory=dict)
    stops_once_solved: bool = False  # its runs had solve.early_stop: solving is what they were for
    importance: dict[str, float] = field(default_factory=dict)
    source: str = ""  # the tuning experiment it came from
    task: str = ""
    code_hashes: set[str] = field(default_factory=set)  # of its trial, re-seed and default runs
    fixed: dict[str, str] = field(default_factory=dict)  # what its trials held fixed: budget, sizes, sampler
    compute: Compute = field(default_factory=Compute)  # what its trials cost: runs, steps, wall seconds
    overrides: dict[str, str] = field(default_factory=dict)  # the sweep's values that made the arm (cell=gru, ...)
    task_settings: dict[str, str] = field(default_factory=dict)  # its runs' task.* params: what problem it is
    state_size: float | None = None  # model/state_size of its re-seed runs: the floats its state carries
    baseline: float | None = None  # the trivial baseline of its test metric, on its re-seed runs' test sets
    # at the longer lengths its re-seed runs were also tested at (task.test_seq_len): length ->
    # seed -> test/L<n>/<metric> (NaN where a run has none), and length -> baseline/L<n>/<metric>
    longer: dict[int, dict[int, float]] = field(default_factory=dict)
    longer_baseline: dict[int, float] = field(default_factory=dict)
    # set by rnnlab.report.tuning.problems: the problem it belongs to, and the swept values that
    # tell it from the other arms of that problem at its cell and length (a width: cell.hidden_size)
    problem: str = ""
    variant: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.cell}{self.variant_text} T={self.seq_len}"

    @property
    def variant_text(self) -> str:
        """`` cell.hidden_size=64``: what else but cell and length made the arm; empty for most pages."""
        return "".join(f" {k}={v}" for k, v in self.variant.items())

    @property
    def key(self) -> tuple:
        """The arm's name in a Holm family: where it came from and what it is, so that two
        problems' arms of one cell and length are two comparisons (the tuned table and the
        protocols section key an arm against its default alike, so it counts once)."""
        return (self.source, self.cell, self.seq_len, *((self.problem, *self.variant.items()) if self.problem
                                                         or self.variant else ()))

    @property
    def test_metric(self) -> str:
        return on_split(self.main_metric, "test")


def cell_rank(cell: str) -> tuple[int, str]:
    """Arms in the registry's order of cells, as every other page lists them; unknown ones last."""
    from rnnlab.config import CELLS

    return (CELLS.index(cell) if cell in CELLS else len(CELLS), cell)


def show(value) -> str:
    """A sampled value as the page and the figures' axes print it: three significant figures."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def most_important(arm: ArmResult) -> str:
    """The hyperparameter the table names and the scatter plots the trials against."""
    return max(arm.importance, key=lambda k: arm.importance[k])
