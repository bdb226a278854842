"""The computed observations at the head of the Discussion: sentences generated from the numbers,
each claiming only what its interval supports.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pandas as pd

from rnnlab import stats
from rnnlab.report.frames import COMPLETED, baseline_columns, longest, solved
from rnnlab.report.labels import clip_order, length_label, size_order, sizes_vary
from rnnlab.report.tables import fmt, fmt_mean_ci, pair_key, per_seed
from rnnlab.report.taskinfo import TaskInfo, task_info


def against_baseline(d: stats.Interval, p_adjusted: float, baseline: float, mode: str,
                     name: str = "the baseline") -> str:
    """Where the mean lies against the baseline, and what the (Holm-adjusted) one-sample
    t-test of the seeds against it establishes. ``d`` is :func:`stats.mean_ci` of the values
    with the baseline as its reference."""
    if not math.isfinite(baseline):
        return f"no {name.removeprefix('the ')} logged"
    side = "below" if d.mean < baseline else "above"
    if d.n < stats.MIN_SEEDS:
        return f"one seed: {side} {name}, nothing established"
    if not p_adjusted < stats.ALPHA:
        # the follow-up is sized on the distance from the baseline, not on the mean itself
        gap = dataclasses.replace(d, mean=d.mean - baseline, low=d.low - baseline, high=d.high - baseline)
        return (f"{side} {name} on average, not established (p = {stats.fmt_p(p_adjusted)}, Holm; "
                f"80% power at {stats.power_text(gap)} seeds)")
    gain = (baseline - d.mean) if mode == "min" else (d.mean - baseline)
    rel = f" by {abs(gain) / abs(baseline):.1%} of it" if baseline != 0 else ""
    return f"{'better' if gain > 0 else 'worse'} than {name}{rel} (established, p = {stats.fmt_p(p_adjusted)}, Holm)"


def baseline_name(column: str, first: bool) -> str:
    """``the baseline`` for the task's own, ``the seasonal baseline`` for ``baseline/seasonal_mse``."""
    return "the baseline" if first else f"the {column.split('/', 1)[1].rsplit('_', 1)[0]} baseline"


def observations(summary: pd.DataFrame, runs: pd.DataFrame, info: Callable[[str], TaskInfo] = task_info,
                 family: stats.Family | None = None) -> list[str]:
    """Facts computed from the runs, each claiming only what its interval supports: per task at
    its longest length, each cell x clip against the baseline (with every seed's value), which
    cell is best per clip value and against which rivals that is established (paired over
    seeds), the gradient horizon; then the task's divergence and failure counts. Verdicts are
    Holm-adjusted in the page's ``family`` (alone, the observations are their own family)."""
    if family is None:
        fam = stats.Family()
        observations(summary, runs, info, fam)
        fam.close()
        return observations(summary, runs, info, fam)
    out: list[str] = []
    for task, x_max in longest(runs).items():
        ti, xl = info(task), length_label(task, runs)
        s = summary[(summary["task"] == task) & (summary["x"] == x_max)]
        base_cols = baseline_columns(s, ti.short)
        base_txt = ", ".join(f"{c.replace('/', ' ')} = {fmt(s[c].dropna().iloc[0])}" for c in base_cols)
        base_txt = f"{base_txt} on the test set" if base_cols else "no baseline logged"
        at_x = runs[(runs["task"] == task) & (runs["x"] == x_max)]
        head = f"- **{task}** at the longest {xl} = {x_max} ({ti.metric}, {ti.better} is better; {base_txt}):"
        lines = [*_against_baseline(s, at_x, ti, base_cols, family), *_best_cells(s, at_x, ti, family),
                 *_horizons(s, runs, task),
                 *_outcomes(summary[summary["task"] == task], runs, task, xl)]
        out.append("\n".join([head, *(f"  - {line}" for line in lines)]))
    return out


def _arm(r, sized: bool) -> str:
    return f"{r['cell']}, clip {r['clip']}" + (f", {r['size']}" if sized else "")


def _against_baseline(s: pd.DataFrame, runs: pd.DataFrame, ti: TaskInfo, base_cols: list[str],
                      family: stats.Family) -> list[str]:
    """Each arm against every baseline the task logs (forecast: persistence and seasonal-naive),
    so a cell that beats one baseline but not a harder one is never called better without both."""
    lines = []
    sized = sizes_vary(s)
    for _, r in s.iterrows():
        if r["n"] == 0:
            lines.append(f"{_arm(r, sized)}: no finished run ({r['n_diverged']} of {r['n_runs']} "
                         f"diverged, {r['n_failed']} failed, {r['n_running']} running).")
            continue
        g = runs[(runs["cell"] == r["cell"]) & (runs["clip"] == r["clip"]) & (runs["size"] == r["size"])
                 & runs["outcome"].isin(COMPLETED)]
        values = g.loc[g["outcome"] == "finished", ti.metric]
        div = f"; {r['n_diverged']} of {r['n_runs']} runs diverged" if r["n_diverged"] else ""
        seeds = ", ".join(fmt(v, 3) for v in r["per seed"])
        verdicts = []
        for i, c in enumerate(base_cols or [f"baseline/{ti.short}"]):
            baseline = float(r.get(c, math.nan))
            d = stats.mean_ci(values, reference=baseline) if math.isfinite(baseline) else stats.mean_ci(values)
            key = ("baseline", r["task"], int(r["x"]), r["cell"], r["clip"], r["size"], c)
            family.record(key, d)
            verdicts.append(against_baseline(d, family.adjusted(key), baseline, ti.mode, baseline_name(c, i == 0)))
        lines.append(f"{_arm(r, sized)}: {fmt_mean_ci(r['mean'], r['ci low'], r['ci high'], r['n'])} "
                     f"(n={r['n']}; seeds: {seeds}), {'; '.join(verdicts)}; solved {int(solved(g).sum())} of "
                     f"{len(g)}{div}.")
    return lines


def _best_cells(s: pd.DataFrame, runs: pd.DataFrame, ti: TaskInfo, family: stats.Family) -> list[str]:
    """The best mean per clip value, and against which rivals the paired difference (same
    seeds, the paired table's test) establishes it; a mean that is best by chance is called so.
    Where each cell ran at one clip of its own (tuned arms), the same over the whole
    configurations, as :func:`~rnnlab.report.tables.cell_pairs` compares them.
    The best mean is over each cell's own seeds, the difference over the seeds both finished,
    so the two can disagree: a rival better on the shared seeds is named as such."""
    lines = []
    done = runs[(runs["outcome"] == "finished") & runs["seed"].notna()]
    sized = sizes_vary(s)
    live = s[s["n"] > 0]
    for clip, size in sorted({(c, z) for c, z in zip(s["clip"], s["size"])},
                             key=lambda k: (clip_order(k[0]), size_order(k[1]))):
        rivals = live[(live["clip"] == clip) & (live["size"] == size)]
        if len(rivals) > 1:
            lines.append(_best_line(rivals, done[done["size"] == size], ti, family,
                                    f"with clip {clip}{f', {size}' if sized else ''}"))
    ran = runs[runs["seed"].notna()]  # every run, whatever its outcome: which clips each cell ran at
    for size in sorted(set(live["size"]), key=size_order):
        rivals = live[live["size"] == size]
        own = ran[ran["size"] == size].groupby("cell")["clip"].nunique()
        if len(rivals) > 1 and (own == 1).all() and rivals["clip"].nunique() > 1:
            lines.append(_best_line(rivals, done[done["size"] == size], ti, family,
                                    f"each cell at its own clip{f', {size}' if sized else ''}"))
    return lines


def _best_line(rivals: pd.DataFrame, done: pd.DataFrame, ti: TaskInfo, family: stats.Family, where: str) -> str:
    """The sentence for one set of rival arms (rows of the summary): the best mean and what the
    paired test against each other arm establishes."""
    best = rivals.loc[rivals["mean"].idxmin() if ti.mode == "min" else rivals["mean"].idxmax()]
    own_clip = rivals["clip"].nunique() > 1
    name = (lambda r: f"{r['cell']} (clip {r['clip']})") if own_clip else (lambda r: r["cell"])
    seeds = lambda r: per_seed(done[done["clip"] == r["clip"]], "cell", ti.metric).get(r["cell"], {})  # noqa: E731
    won: list[str] = []
    lost: list[str] = []
    open_: list[str] = []
    for _, r in rivals.iterrows():
        if r["cell"] == best["cell"] and r["clip"] == best["clip"]:
            continue
        d = stats.paired_difference(seeds(best), seeds(r))
        key = pair_key(r["task"], r["x"], r["size"], (best["cell"], best["clip"]), (r["cell"], r["clip"]))
        family.record(key, d)
        p = family.adjusted(key)
        text = f"{name(r)} (difference {fmt_mean_ci(d.mean, d.low, d.high, d.n)}, {d.n} seeds, p = {stats.fmt_p(p)})"
        verdict = stats.verdict(d, p, ti.mode, (best["cell"], r["cell"]))
        if verdict == f"{best['cell']} better (established)":
            won.append(text)
        elif verdict == f"{r['cell']} better (established)":
            lost.append(text)
        else:
            open_.append(text)
    verdicts = ([f"established against {', '.join(won)}"] if won else []) + (
        [f"not established against {', '.join(open_)}"] if open_ else []) + (
        [f"but worse on the seeds both finished, established, than {', '.join(lost)}"] if lost else [])
    return (f"{'lowest' if ti.mode == 'min' else 'highest'} mean {ti.metric} {where}: "
            f"{name(best)} ({fmt(best['mean'])}); " + "; ".join(verdicts) + ".")


def _horizons(s: pd.DataFrame, runs: pd.DataFrame, task: str) -> list[str]:
    if "horizon n" not in s or not (s["horizon n"] > 0).any():
        return []
    thr = runs.loc[runs["task"] == task, "threshold"].dropna()
    share = f"{thr.iloc[0]:g}" if len(thr) else "the threshold"
    sized = sizes_vary(s)
    horizon = ("horizon mean", "horizon ci low", "horizon ci high", "horizon n")
    parts = "; ".join(f"{_arm(r, sized)} {fmt_mean_ci(*(r[k] for k in horizon))}"
                      for _, r in s[s["horizon n"] > 0].iterrows())
    return [f"grad_flow/horizon at the last probe (the farthest distance from the readout, in steps, at which "
            f"‖∂L/∂x_t‖ is still ≥ {share} × its maximum; the profile may dip below that nearer the readout, "
            f"so it is not a bound over all distances): {parts}."]


def _outcomes(t: pd.DataFrame, runs: pd.DataFrame, task: str, xl: str) -> list[str]:
    n_div, n_runs = int(t["n_diverged"].sum()), int(t["n_runs"].sum())
    if n_div:
        where = "; ".join(f"{r['cell']} clip {r['clip']} {xl}={r['x']}: {r['n_diverged']}/{r['n_runs']}"
                          for _, r in t[t["n_diverged"] > 0].iterrows())
        lines = [f"diverged: {n_div} of {n_runs} {task} runs ({where})."]
    else:
        lines = [f"diverged: none of the {n_runs} {task} runs."]
    for what in ("failed", "running"):
        names = runs.loc[(runs["task"] == task) & (runs["outcome"] == what), "run_name"]
        if len(names):
            lines.append(f"{what} (in no mean and no diverged fraction): {len(names)} ({', '.join(map(str, names))}).")
    return lines
