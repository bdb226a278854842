"""Tuning protocols compared: the same arms tuned with the same space, trials and budget,
differing only in how a trial was scored (``tune.seed``: one tuning seed, or the mean over
several).

A tuned best chosen on one tuning seed may be chosen for that seed's luck; scoring each trial
on several seeds costs as many runs per trial. Whether that buys anything is a question about
the protocols, not the cells: so the page of one tuning study takes its siblings (other
tuning experiments of the same arms, ``--protocols``), and shows per arm the default, each
protocol's tuned best and what its tuning cost, and the paired differences on the seeds the
re-seed and default runs share, as verdicts of the page's one Holm family.

A join of tunings (``--with``) is the other way round: other cells, tuned alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rnnlab import stats
from rnnlab.report.store import ReportError
from rnnlab.report.tables import TEST_HEADER, md_table, test_cells
from rnnlab.report.tuning.arms import ArmResult, cell_rank
from rnnlab.report.tuning.loading import FIXED
from rnnlab.report.tuning.statistics import paired
from rnnlab.report.tuning.tables import fmt_ci, solvable

SCORING = "tune.seed"  # the one setting in which protocols may differ


@dataclass
class Protocol:
    """One tuning experiment of the arms: its name, its tuning seeds, its arms by label."""

    source: str
    seeds: list[str]
    arms: dict[str, ArmResult]

    @property
    def name(self) -> str:
        return f"tuned on seed{'s' if len(self.seeds) > 1 else ''} {', '.join(self.seeds)}"


def tuning_seeds(arm: ArmResult) -> list[str]:
    """The arm's tuning seeds as its trials recorded them (``0`` or ``[0, 6, 7]``)."""
    return [s for s in str(arm.fixed.get(SCORING, "0")).strip("[]").replace(" ", "").split(",") if s]


def protocols(page: list[ArmResult], others: list[list[ArmResult]]) -> list[Protocol]:
    """The page's study and its siblings as protocols, fewest tuning seeds first; refused
    (:class:`ReportError`) unless they are of the same task and arms, tuned alike in
    everything but how a trial was scored, and scored differently."""
    every = [page, *others]
    found = [Protocol(arms[0].source, tuning_seeds(arms[0]), {a.label: a for a in arms}) for arms in every if arms]
    if len(found) < len(every):
        raise ReportError("a tuning experiment given to compare protocols holds no arm")
    first = found[0]
    for p in found[1:]:
        _check_alike(first, p)
    for i, p in enumerate(found):
        for q in found[:i]:
            if p.seeds == q.seeds:
                raise ReportError(f"'{p.source}' and '{q.source}' both score trials on {SCORING} "
                                  f"{', '.join(p.seeds)}: protocols to compare differ in {SCORING}")
    return sorted(found, key=lambda p: (len(p.seeds), p.seeds, p.source))


def _check_alike(page: Protocol, other: Protocol) -> None:
    if set(other.arms) != set(page.arms):
        raise ReportError(f"'{other.source}' tunes {_labels(other)}; '{page.source}' tunes {_labels(page)}: "
                          "protocols compare the same arms (cell x T)")
    differ: dict[str, tuple[str, str]] = {}
    for label, a in page.arms.items():
        b = other.arms[label]
        for what, x, y in (("task", a.task, b.task), ("metric", a.main_metric, b.main_metric),
                           ("search space", a.space, b.space),
                           *((k, a.fixed.get(k), b.fixed.get(k)) for k in FIXED if k != SCORING)):
            if x != y:
                differ.setdefault(what, (str(x), str(y)))
    if differ:
        raise ReportError(f"'{other.source}' was not tuned as '{page.source}' but for {SCORING}: " + "; ".join(
            f"{k} is {y} there, {x} here" for k, (x, y) in differ.items()) + f" (only {SCORING} may differ)")


def _labels(p: Protocol) -> str:
    return ", ".join(sorted(p.arms, key=lambda label: (p.arms[label].seq_len, cell_rank(p.arms[label].cell))))


def section(arms: list[ArmResult], found: list[Protocol], family: stats.Family) -> list[str]:
    """The page's section: each arm's default and tuned bests with their cost, then the paired
    differences. ``arms``: the page's own (their default runs are the default)."""
    metric, solved = arms[0].test_metric, solvable(arms)
    rows = []
    for a in arms:
        rows.append([a.cell, str(a.seq_len), "default", "—", *([_solved(a.default_solved)] if solved else []),
                     fmt_ci(a.default), "—", "—", "—"])
        for p in found:
            t, c = p.arms[a.label], p.arms[a.label].compute
            best = ", ".join(f"{k} {v}" for k, v in t.best_params.items()) or "—"
            rows.append([a.cell, str(a.seq_len), f"{p.name} (`{p.source}`)", f"{best} (trial {t.best_trial})",
                         *([_solved(t.tuned_solved)] if solved else []), fmt_ci(t.tuned),
                         str(c.runs) + (f" ({c.unknown} unfinished)" if c.unknown else ""), f"{c.steps:,}",
                         _seconds(c)])
    shown = md_table(["cell", "T", "configuration", "best configuration (trial)", *(["solved"] if solved else []),
                      f"{metric} (mean [95% CI])", "trial runs", "steps trained", "wall s"], rows,
                     right=[i + solved for i in (4, 5, 6, 7)])
    names = ", ".join(f"{p.name} (`{p.source}`, {_total(p)})" for p in found)
    lines = ["## Tuning protocols compared", "",
             f"The same arms tuned with the same space, trials and budget, each trial scored differently "
             f"(`{SCORING}`): {names}. A trial on several seeds scores the mean of their runs. The default is the "
             "preset's untuned configuration (this study's default runs); the tuned rows are each protocol's best "
             "re-run on the re-seeds. Tuning compute: the trial runs of the arm's study (one per trial and "
             "tuning seed), the training steps they ran (a run that stops once solved ends early) and their wall "
             "seconds, summed (re-seed runs, the same in every protocol, are not counted); a run stopped and resumed "
             "counts its steps at the rate of the arm's runs that were not, since its wall time holds the time "
             "it stood stopped.", "", shown, ""]
    if solved:
        lines += ["Critical length (the longest length at least half the seeds solve):", "", *_critical(arms, found),
                  ""]
    return lines + ["Paired differences over the seeds both have (every verdict in the page's family):", "",
                    _differences(arms, found, family), ""]


def _seconds(c) -> str:
    if math.isnan(c.seconds):
        return f"— ({c.estimated} resumed or untimed, no other run to take a rate from)"
    return f"{c.seconds:,.0f}" + (f" ({c.estimated} estimated: resumed or untimed, at the others' rate)"
                                  if c.estimated else "")


def _solved(solved: dict[int, bool]) -> str:
    return f"{sum(solved.values())}/{len(solved)}" if solved else "—"


def _total(p: Protocol) -> str:
    runs = sum(a.compute.runs for a in p.arms.values())
    steps = sum(a.compute.steps for a in p.arms.values())
    timed = [a.compute.seconds for a in p.arms.values() if not math.isnan(a.compute.seconds)]
    untimed = len(p.arms) - len(timed)
    return f"{runs} trial runs, {steps:,} steps, {sum(timed):,.0f} s in all" + \
        (f" (the seconds of {untimed} arm(s) unknown: see the table)" if untimed else "")


def _critical(arms: list[ArmResult], found: list[Protocol]) -> list[str]:
    out = []
    for cell in sorted({a.cell for a in arms}, key=cell_rank):
        mine = [a for a in arms if a.cell == cell]
        under = [("default", stats.critical_length({a.seq_len: list(a.default_solved.values()) for a in mine}))]
        under += [(p.name, stats.critical_length({a.seq_len: list(p.arms[a.label].tuned_solved.values())
                                                  for a in mine})) for p in found]
        out.append(f"- {cell}: " + "; ".join(f"{name} {length or 'below the lengths run'}"
                                             for name, length in under))
    return out


def _differences(arms: list[ArmResult], found: list[Protocol], family: stats.Family) -> str:
    """Most tuning seeds first: each protocol against the default, then against each protocol
    with fewer seeds. A protocol against the default is keyed as its own page keys it."""
    metric, rows = arms[0].test_metric, []
    for a in arms:
        ranked = list(reversed(found))
        for i, p in enumerate(ranked):
            mine = p.arms[a.label]
            pairs = [(p.name, "default", mine.tuned, a.default, ("tuned", *mine.key))]
            pairs += [(p.name, q.name, mine.tuned, q.arms[a.label].tuned,
                       stats.Family.key(("protocols", a.cell, a.seq_len), (p.source, q.source)))
                      for q in ranked[i + 1:]]
            for x, y, xs, ys, key in pairs:
                rows.append([a.cell, str(a.seq_len), f"{x} − {y}",
                             *test_cells(paired(xs, ys), family, key, a.mode, (x, y))])
    return md_table(["cell", "T", "difference", f"{metric} difference [95% CI]", *TEST_HEADER], rows,
                    right=[3, 4, 5])
