"""The tuned report's tables, in Markdown: each arm tuned against its default, the cells
against each other under both, solved seeds, the expected best by trials, and importance.
Each table alone is its own Holm family; on the page they share one.
"""

from __future__ import annotations

import math
from itertools import combinations

from rnnlab import stats
from rnnlab.report.tables import TEST_HEADER, alone, fmt, fmt_mean_ci, md_table, test_cells
from rnnlab.report.tuning.arms import ArmResult, cell_rank, most_important
from rnnlab.report.tuning.statistics import paired, verdict, winner
from rnnlab.tune.expected import expected_best

TRIALS_SHOWN = (1, 2, 3, 5, 10, 20, 50)  # columns of the expected-best table (those <= N)


def fmt_ci(values: dict[int, float]) -> str:
    finite = [values[s] for s in sorted(values) if math.isfinite(values[s])]
    ci = stats.mean_ci(finite)
    text = fmt_mean_ci(ci.mean, ci.low, ci.high, ci.n)
    lost = len(values) - len(finite)
    return text + (f" ({lost} diverged)" if lost else "") if values else "—"


def _fmt_diff(d: stats.Interval) -> str:
    return fmt_mean_ci(d.mean, d.low, d.high, d.n)


def variant_keys(arms: list[ArmResult]) -> list[str]:
    """The swept values other than cell and length that tell the arms apart (a width): a
    column each in the tables, where the arms have any."""
    return list(dict.fromkeys(k for a in arms for k in a.variant))


def defaults_run(arms: list[ArmResult]) -> bool:
    """Whether the page has default arms to test tuning against: any default run finished. A
    tuning whose grid holds the default (the recall study's learning rates) runs none: its arms
    are tested against the task's trivial baseline instead, and the page leaves the default
    columns out (and says that no default run has finished: a page made while a default sweep is
    still running gets its default columns once it is regenerated)."""
    return any(a.default or a.default_solved for a in arms)


def against_baseline(a: ArmResult) -> stats.Interval:
    """The tuned seeds minus the arm's trivial baseline (the mean of its runs' ``baseline/*``),
    with the one-sample t-test of that difference; no seeds where no baseline was logged."""
    if a.baseline is None or not math.isfinite(a.baseline):
        return stats.Interval(math.nan, math.nan, math.nan, 0)
    return stats.mean_ci([v - a.baseline for v in a.tuned.values() if math.isfinite(v)])


def tuned_table(arms: list[ArmResult], family: stats.Family | None = None) -> str:
    """Each arm tuned against its default, paired by seed; on a page without defaults, against
    the trivial baseline (alone, its rows are their own family)."""
    if family is None:
        return alone(lambda f: tuned_table(arms, f)) or ""
    metric, keys, defaults = arms[0].test_metric, variant_keys(arms), defaults_run(arms)
    rows = []
    for a in arms:
        best = ", ".join(f"{k} {v}" for k, v in a.best_params.items()) or "—"
        if defaults:
            other = fmt_ci(a.default)
            tested = test_cells(paired(a.tuned, a.default), family, ("tuned", *a.key), a.mode, ("tuned", "default"))
        else:
            other = fmt(a.baseline)
            tested = test_cells(against_baseline(a), family, ("baseline", *a.key), a.mode, ("tuned", "baseline"))
        rows.append([a.cell, str(a.seq_len), *(a.variant.get(k, "—") for k in keys),
                     f"{best} (trial {a.best_trial})", fmt(a.best_value),
                     f"{a.n_trials} ({a.n_diverged} diverged, {a.n_failed} failed)", fmt_ci(a.tuned), other, *tested])
    n, other = len(keys), f"default: {metric}" if defaults else "baseline"
    return md_table(["cell", "T", *keys, "best configuration (trial)", "val, tuning seed", "trials",
                     f"tuned: {metric}", other, f"tuned − {other.split(':')[0]}", *TEST_HEADER], rows,
                    right=[3 + n, 5 + n, 6 + n, 7 + n, 8 + n, 9 + n, 11 + n])


def at_each(arms: list[ArmResult]) -> list[tuple[int, dict[str, str], list[ArmResult]]]:
    """The arms that compare with each other: those at one length and variant (a width), in order."""
    groups: dict[tuple, list[ArmResult]] = {}
    for a in arms:
        groups.setdefault((a.seq_len, tuple(a.variant.items())), []).append(a)
    return [(T, dict(v), at) for (T, v), at in groups.items()]


def cells_table(arms: list[ArmResult], family: stats.Family | None = None) -> str:
    """Every pair of cells at each length (and width): the verdict with default and with tuned settings."""
    if family is None:
        return alone(lambda f: cells_table(arms, f)) or ""
    groups, keys = at_each(sorted(arms, key=lambda a: a.seq_len)), variant_keys(arms)
    if all(len({a.cell for a in at}) < 2 for _, _, at in groups):
        return ("One cell at each length: no pair of cells to compare (the arms' own verdicts are above)."
                if not keys else "One cell at each length and " + ", ".join(keys) + ": no pair of cells to "
                "compare (the arms' own verdicts are above).")
    rows = []
    defaults = defaults_run(arms)
    for T, variant, at in sorted(groups, key=lambda g: g[0]):
        where = (at[0].problem, T, *variant.items()) if at[0].problem or variant else (T,)
        for a, b in combinations(at, 2):
            d_default, d_tuned = paired(a.default, b.default), paired(a.tuned, b.tuned)
            pair = (a.cell, b.cell)
            v_tuned = verdict(d_tuned, family, stats.Family.key(("tuned", *where), pair), a.mode, pair)
            if not defaults:
                rows.append([str(T), *(variant.get(k, "—") for k in keys), f"{a.cell} − {b.cell}", _fmt_diff(d_tuned),
                             v_tuned])
                continue
            v_default = verdict(d_default, family, stats.Family.key(("default", *where), pair), a.mode, pair)
            if min(d_default.n, d_tuned.n) < stats.MIN_SEEDS:  # a side with no verdict cannot change one
                changed = "—"
            else:
                changed = "**yes**" if winner(v_default) != winner(v_tuned) else "no"
            rows.append([str(T), *(variant.get(k, "—") for k in keys), f"{a.cell} − {b.cell}", _fmt_diff(d_default),
                         v_default, _fmt_diff(d_tuned), v_tuned, changed])
    n = len(keys)
    if not defaults:
        return md_table(["T", *keys, "difference", "tuned", "verdict, tuned"], rows, right=[2 + n])
    return md_table(["T", *keys, "difference", "default", "verdict, default", "tuned", "verdict, tuned",
                     "verdict changed"], rows, right=[2 + n, 4 + n])


def solved_table(arms: list[ArmResult]) -> str | None:
    """Seeds that solved (val/skill reached the threshold), default and tuned, and the
    critical length of each cell (at each width) under both."""
    if not solvable(arms):
        return None

    keys, which = variant_keys(arms), ("default", "tuned") if defaults_run(arms) else ("tuned",)
    rows = [[a.cell, str(a.seq_len), *(a.variant.get(k, "—") for k in keys),
             *(f"{sum(getattr(a, f'{w}_solved').values())}/{len(getattr(a, f'{w}_solved'))}" for w in which)]
            for a in arms]
    table = md_table(["cell", "T", *keys, *(f"solved, {w}" for w in which)], rows)
    lines = []
    for cell, variant in dict.fromkeys((a.cell, a.variant_text) for a in sorted(arms, key=lambda a: cell_rank(a.cell))):
        mine = [a for a in arms if a.cell == cell and a.variant_text == variant]
        crit = {w: stats.critical_length({a.seq_len: list(getattr(a, f"{w}_solved").values()) for a in mine})
                for w in which}
        lines.append(f"- {cell}{variant}: critical length "
                     + ", ".join(f"{crit[w] or 'below the lengths run'} {'by default' if w == 'default' else w}"
                                 for w in which))
    return table + "\n\nCritical length (the longest length at least half the seeds solve):\n\n" + "\n".join(lines)


def solvable(arms: list[ArmResult]) -> bool:
    """Whether solving is what the arms' runs were for: they stop once solved, or some solved. Not
    for a task no run is meant to solve (char_lm: skill 0.9 over the unigram baseline is out of
    reach); a probe's 0/5 is a finding."""
    return any(a.stops_once_solved or any(a.tuned_solved.values()) or any(a.default_solved.values())
               for a in arms)


def expected_table(arms: list[ArmResult]) -> str:
    n_max = max((len(a.trial_values) for a in arms), default=0)
    shown = [n for n in TRIALS_SHOWN if n < n_max] + ([n_max] if n_max else [])
    rows = []
    for a in arms:
        if not a.trial_values:
            continue
        mean, std = expected_best(a.trial_values, a.mode)
        rows.append([a.label, *(f"{fmt(mean[n - 1])} ± {fmt(std[n - 1], 2)}" if n <= len(mean) else "—"
                                for n in shown)])
    return md_table(["arm", *(f"n = {n}" for n in shown)], rows, right=range(1, len(shown) + 1))


def importance_table(arms: list[ArmResult]) -> str:
    keys = list(dict.fromkeys(k for a in arms for k in a.space))
    rows = [[a.label, *(f"{a.importance[k]:.2f}" if k in a.importance else "—" for k in keys),
             most_important(a) if a.importance else "—"] for a in arms]
    return md_table(["arm", *keys, "most important"], rows, right=range(1, len(keys) + 1))


def longer_table(arms: list[ArmResult]) -> str | None:
    """The arms whose tuned re-seed runs were also tested at longer lengths than they were
    trained at (``task.test_seq_len``: ``test/L<n>/<metric>``): the test metric's mean [95%
    t-interval] over seeds at the trained length and at each longer one, beside the trivial
    baseline there. Descriptive: it tests nothing. None where no arm was tested longer."""
    tested = [a for a in arms if a.longer]
    if not tested:
        return None
    lengths, keys = sorted({n for a in tested for n in a.longer}), variant_keys(tested)
    rows = []
    for a in tested:
        seeds = {s for at in a.longer.values() for s in at}
        rows.append([a.cell, *(a.variant.get(k, "—") for k in keys), str(a.seq_len), fmt_ci(a.tuned), fmt(a.baseline),
                     *(c for n in lengths for c in (fmt_ci(a.longer[n]) if n in a.longer else "—",
                                                    fmt(a.longer_baseline.get(n)))),
                     str(len(seeds))])
    n = len(keys)
    return md_table(["cell", *keys, "trained T", "at T", "baseline at T",
                     *(c for L in lengths for c in (f"at {L}", f"baseline at {L}")), "seeds"], rows,
                    right=range(1 + n, 5 + n + 2 * len(lengths)))


def literature_tables(arms: list[ArmResult]) -> list[str]:
    """Ours beside what the task's papers report (``Task.published``, :mod:`rnnlab.literature`),
    one table per published entry of the arms' metric: each cell they report and each of our
    tuned arms (at its length and width), theirs and ours [95% t-interval] side by side, with the
    entry's setting above it. Descriptive: their settings differ (vocabulary, length, layers,
    budget), so nothing here is tested; the discussion says what the differences may do."""
    from rnnlab import literature

    if not arms:
        return []
    metric, keys = arms[0].test_metric, variant_keys(arms)
    out = []
    for entry in (e for e in literature.published(arms[0].task) if e.metric == metric):
        cells = list(dict.fromkeys([*entry.values, *(a.cell for a in arms)]))
        rows = []
        for cell in cells:
            theirs = fmt(entry.values[cell]) if cell in entry.values else "—"
            mine = [[str(a.seq_len), *(a.variant.get(k, "—") for k in keys), fmt_ci(a.tuned)]
                    for a in arms if a.cell == cell] or [["—", *("—" for _ in keys), "—"]]
            rows += [[cell, theirs, *ours] for ours in mine]
        length = f"their T = {entry.length}" if entry.length else "their length not stated"
        baseline = (f"their trivial baseline {fmt(entry.baseline)} ({entry.baseline_note})"
                    if entry.baseline is not None else f"their trivial baseline {entry.baseline_note or 'not stated'}")
        table = md_table(["cell", f"theirs ({metric})", "our T", *keys, f"ours, tuned ({metric}, mean [95% CI])"],
                         rows, right=[1, 2, 3 + len(keys)])
        out.append(f"**{entry.source}, {entry.where}**: {entry.setting}; {length}; {baseline}.\n\n{table}")
    return out
