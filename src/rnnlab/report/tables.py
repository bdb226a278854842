"""The page's Markdown tables, and the number formatting they share: the final metric, solved
seeds and critical lengths, paired differences between cells and clip values, the literature
and throughput. Each returns the table's text from the frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from rnnlab import literature, stats
from rnnlab.report.frames import COMPLETED, baseline_columns, longest, solved
from rnnlab.report.labels import base, cell_order, clip_order, length_label, size_order, sizes_vary
from rnnlab.report.taskinfo import TaskInfo, task_info
from rnnlab.runs import metric_name


def fmt(v, digits: int = 4) -> str:
    """4 significant digits; an em dash for a missing value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return "—"
    return f"{float(v):.{digits}g}"


def fmt_mean_ci(mean: float, low: float, high: float, n: int) -> str:
    """``mean [low, high]``; just the mean for one seed, a dash for none."""
    if n == 0 or not math.isfinite(mean):
        return "—"
    return fmt(mean) if n < 2 or not math.isfinite(low) else f"{fmt(mean)} [{fmt(low, 3)}, {fmt(high, 3)}]"


def md_table(header: list[str], rows: list[list[str]], right: Iterable[int] = ()) -> str:
    right = set(right)
    sep = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def values_text(values: Iterable, counts: bool = True) -> str:
    """Distinct values, with how many runs have each when there is more than one."""
    s = pd.Series(list(values)).dropna()
    if s.empty:
        return "—"
    vc = s.astype(str).value_counts()
    if len(vc) == 1 or not counts:
        return ", ".join(sorted(vc.index, key=_natural))
    return ", ".join(f"{v} ({vc[v]} runs)" for v in sorted(vc.index, key=_natural))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _natural(s: str):
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)


def metric_table(summary: pd.DataFrame, task: str, runs: pd.DataFrame,
                 info: Callable[[str], TaskInfo] = task_info) -> str:
    """The final test metric per cell x length x clip (mean and 95% t-interval over finished
    seeds, n), the baseline(s) beside it, and the diverged fraction (diverged / finished+diverged);
    extra metrics the same way."""
    s = summary[summary["task"] == task]
    ti = info(task)
    xl = length_label(task, runs)
    by_distance, sized = xl == "task.distance", sizes_vary(s)
    header = ["cell", xl, *(["seq_len"] if by_distance else []), "clip", *(["size"] if sized else []),
              f"{ti.metric} (mean [95% CI])", "n"]
    baselines = baseline_columns(s, ti.short)
    header += [b.replace("baseline/", "baseline ") if i else "baseline" for i, b in enumerate(baselines)]
    extra_base = {}
    for m in ti.extras:
        short = metric_name(m)
        header.append(f"{m} (mean [95% CI])")
        extra_base[m] = baseline_columns(s, short)[:1]
        header += [f"baseline {short}" for _ in extra_base[m]]
    shown = [c for c in ("failed", "running") if len(s) and s[f"n_{c}"].sum()]  # only when there are any
    header += ["diverged", *shown]
    rows = []
    for _, r in s.iterrows():
        row = [r["cell"], str(r["x"]), *([str(r["seq_len"])] if by_distance else []), r["clip"],
               *([r["size"]] if sized else []), fmt_mean_ci(r["mean"], r["ci low"], r["ci high"], r["n"]),
               str(r["n"]), *(fmt(r[b]) for b in baselines)]
        for m in ti.extras:
            row.append(fmt_mean_ci(r[f"{m} mean"], r[f"{m} ci low"], r[f"{m} ci high"], r[f"{m} n"]))
            row += [fmt(r[b]) for b in extra_base[m]]
        row.append(f"{r['n_diverged']}/{r['n_runs']}")
        row += [str(r[f"n_{c}"]) for c in shown]
        rows.append(row)
    right = [i for i, h in enumerate(header) if h not in ("cell", "clip", "size")]
    return md_table(header, rows, right)


def solved_cell(outcomes: list[bool] | None, median_steps: float) -> str:
    """``3/5 (300)``: seeds that solved, of those that ran, and their median steps to solve."""
    if outcomes is None:
        return "-"
    return f"{sum(outcomes)}/{len(outcomes)}" + ("" if math.isnan(median_steps) else f" ({median_steps:.0f})")


def critical_table(runs: pd.DataFrame, task: str) -> str | None:
    """Per cell x clip: the critical length, and per length the seeds that solved / ran."""
    t = runs[(runs["task"] == task) & runs["outcome"].isin(COMPLETED)]
    if t.empty:
        return None
    t = t.assign(solved=solved(t))
    lengths = sorted(int(x) for x in t["x"].dropna().unique())
    sized = sizes_vary(t)
    header = ["cell", "clip", *(["size"] if sized else []), "critical length",
              *(f"{length_label(task, runs)}={x}" for x in lengths)]
    rows = []
    groups = sorted(t.groupby(["cell", "clip", "size"]),
                    key=lambda kv: (cell_order(kv[0][0]), clip_order(kv[0][1]), size_order(kv[0][2])))
    steps = t["steps_to_solve"] if "steps_to_solve" in t else pd.Series(np.nan, index=t.index)
    for (cell, clip, size), g in groups:
        per = {int(x): list(gx["solved"]) for x, gx in g.groupby("x")}
        median_steps = {int(x): steps[gx.index][gx["solved"]].median() for x, gx in g.groupby("x")}
        critical = stats.critical_length(per)
        rows.append([cell, clip, *([size] if sized else []), "none" if critical is None else str(critical),
                     *(solved_cell(per.get(x), median_steps.get(x, math.nan)) for x in lengths)])
    return md_table(header, rows, range(3 if sized else 2, len(header)))


def alone(render: Callable[[stats.Family], str | None]) -> str | None:
    """A table rendered on its own: its comparisons are its whole family (a page passes its own)."""
    family = stats.Family()
    render(family)
    family.close()
    return render(family)


def test_cells(d: stats.Interval, family: stats.Family, key: tuple, mode: str, names: tuple[str, str]) -> list[str]:
    """The cells a row of a comparison table ends with: the difference [95% CI], the seeds, the
    Holm-adjusted p, the verdict, and the seeds a follow-up would need (for what is not established)."""
    family.record(key, d)
    p = family.adjusted(key)
    verdict = stats.verdict(d, p, mode, names)
    need = stats.power_text(d) if verdict == "not established" else "—"
    return [fmt_mean_ci(d.mean, d.low, d.high, d.n) if d.n else "—", str(d.n), stats.fmt_p(p), verdict, need]


TEST_HEADER = ["seeds", "p (Holm)", "verdict", "seeds for 80% power, alone"]


def paired_table(runs: pd.DataFrame, task: str, info: Callable[[str], TaskInfo] = task_info,
                 family: stats.Family | None = None) -> str | None:
    """Between every two cells at the same length (:func:`cell_pairs`: at each clip value both
    ran, or as whole configurations where each ran at one clip of its own): the paired difference
    of the headline metric over the seeds both finished, its interval, its Holm-adjusted p in the
    page's ``family`` and what it establishes."""
    if family is None:
        return alone(lambda f: paired_table(runs, task, info, f))
    ti = info(task)
    every = runs[(runs["task"] == task) & runs["seed"].notna()]
    t = every[every["outcome"] == "finished"]
    rows = []
    sized = sizes_vary(t)
    for (x, size), g in t.groupby(["x", "size"]):
        by_clip = {c: per_seed(gc, "cell", ti.metric) for c, gc in g.groupby("clip")}  # {clip: {cell: {seed: v}}}
        for a, b, ca, cb in cell_pairs(every[(every["x"] == x) & (every["size"] == size)]):
            seeds_a, seeds_b = by_clip.get(ca, {}).get(a, {}), by_clip.get(cb, {}).get(b, {})
            if not seeds_a or not seeds_b:  # an arm with no finished run: nothing to compare
                continue
            diff = stats.paired_difference(seeds_a, seeds_b)
            key = pair_key(task, x, size, (a, ca), (b, cb))
            order = (x, clip_order(ca) if ca == cb else (2, 0.0), size_order(size), cell_order(a), cell_order(b))
            rows.append((order, [str(x), ca if ca == cb else f"{ca} vs {cb}", *([size] if sized else []),
                                 f"{a} - {b}", *test_cells(diff, family, key, ti.mode, (a, b))]))
    if not rows:
        return None
    header = [length_label(task, runs), "clip", *(["size"] if sized else []), "cells",
              f"{ti.metric} difference [95% CI]", *TEST_HEADER]
    return md_table(header, [r for _, r in sorted(rows, key=lambda r: r[0])], [0, *(i + sized for i in (3, 4, 5, 7))])


def cell_pairs(g: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """The comparisons between cells in one group of runs (one length and size; every run,
    whatever its outcome, so that a clip grid whose arms diverged is still a grid), as
    ``(cell a, cell b, clip of a, clip of b)``: at every clip value both cells ran (what clipping
    changes is :func:`clip_table`'s question); and, where two cells share no clip value and each
    ran at one only, between the two whole configurations. A tuned arm is such a configuration:
    its clip is part of what tuning chose (``tune_char_lm_followup`` sets the RNN's 0.5 against the
    LSTM's 1.0), and comparing it at a clip it was not tuned for would answer another question."""
    clips = {c: sorted(gc["clip"].unique(), key=clip_order) for c, gc in g.groupby("cell")}
    cells = sorted(clips, key=cell_order)
    pairs = []
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            shared = [c for c in clips[a] if c in clips[b]]
            if shared:
                pairs += [(a, b, c, c) for c in shared]
            elif len(clips[a]) == len(clips[b]) == 1:
                pairs.append((a, b, clips[a][0], clips[b][0]))
    return pairs


def per_seed(g: pd.DataFrame, by: str, metric: str) -> dict[str, dict[int, float]]:
    """``{cell (or clip): {seed: metric}}`` of the runs ``g``."""
    return {c: dict(zip(gc["seed"].astype(int), gc[metric])) for c, gc in g.groupby(by)}


def cells_key(task: str, x, clip: str, size: str, a: str, b: str) -> tuple:
    """The family key of the comparison of cells ``a`` and ``b`` (either order) in one arm."""
    return stats.Family.key(("cells", task, int(x), clip, size), (a, b))


def pair_key(task: str, x, size: str, a: tuple[str, str], b: tuple[str, str]) -> tuple:
    """The family key of a :func:`cell_pairs` comparison, ``a`` and ``b`` as (cell, clip): that of
    :func:`cells_key` at a shared clip, else one naming each cell's own clip."""
    if a[1] == b[1]:
        return cells_key(task, x, a[1], size, a[0], b[0])
    names = (f"{a[0]} at clip {a[1]}", f"{b[0]} at clip {b[1]}")
    return stats.Family.key(("cells", task, int(x), "own clip", size), names)


def clip_table(runs: pd.DataFrame, task: str, info: Callable[[str], TaskInfo] = task_info,
               family: stats.Family | None = None) -> str | None:
    """What clipping changes, the harness's second question: per cell and length, the paired
    difference between every two clip values over the seeds both finished (a seed fixes the
    init and the data for both), with the seeds each solved; None with one clip value."""
    if family is None:
        return alone(lambda f: clip_table(runs, task, info, f))
    ti = info(task)
    t = runs[(runs["task"] == task) & runs["outcome"].isin(COMPLETED) & runs["seed"].notna()]
    t = t.assign(solved=solved(t))
    rows = []
    sized = sizes_vary(t)
    groups = sorted(t.groupby(["cell", "x", "size"]),
                    key=lambda kv: (cell_order(kv[0][0]), kv[0][1], size_order(kv[0][2])))
    for (cell, x, size), g in groups:
        by_clip = per_seed(g[g["outcome"] == "finished"], "clip", ti.metric)
        clips = sorted(g["clip"].unique(), key=clip_order, reverse=True)  # none first: "none - 1.0"
        for i, a in enumerate(clips):
            for b in clips[i + 1:]:
                diff = stats.paired_difference(by_clip.get(a, {}), by_clip.get(b, {}))
                solved_txt = " vs ".join(f"{int(gc['solved'].sum())}/{len(gc)}"
                                         for gc in (g[g["clip"] == a], g[g["clip"] == b]))
                key = stats.Family.key(("clip", task, int(x), cell, size), (a, b))
                cells = test_cells(diff, family, key, ti.mode, (f"clip {a}", f"clip {b}"))
                rows.append([cell, str(x), *([size] if sized else []), f"{a} - {b}", cells[0], cells[1],
                             solved_txt, *cells[2:]])
    if not rows:
        return None
    header = ["cell", length_label(task, runs), *(["size"] if sized else []), "clip",
              f"{ti.metric} difference [95% CI]", "seeds", "solved", *TEST_HEADER[1:]]
    return md_table(header, rows, [1, *(i + sized for i in (3, 4, 5, 6, 8))])


def literature_table(summary: pd.DataFrame, runs: pd.DataFrame, task: str,
                     info: Callable[[str], TaskInfo] = task_info) -> str | None:
    """Ours beside the published numbers for the same task and metric (:mod:`rnnlab.literature`):
    per cell, theirs and whether it solves the task by our rule, ours at our longest length with
    its interval, our solved seeds and critical length, and whether the two agree, or why they
    cannot be compared directly (a longer T there, a different corpus)."""
    ti = info(task)
    entries = [p for p in literature.published(base(task)) if p.metric == ti.metric]
    t = runs[(runs["task"] == task) & runs["outcome"].isin(COMPLETED)]
    if not entries or t.empty:
        return None
    x_max = longest(t)[task]
    xl = length_label(task, runs)
    s = summary[(summary["task"] == task) & (summary["x"] == x_max)]
    t = t.assign(solved=solved(t))
    sized = sizes_vary(t)
    tables = []
    for p in entries:
        header = ["cell", "clip", *(["size"] if sized else []), f"theirs ({p.metric})", "solved there",
                  f"ours at {xl}={x_max} (mean [95% CI])", "solved here (seeds)", "our critical length", "agreement"]
        rows = []
        for _, r in s.iterrows():  # summarise's order: cell, clip, size
            if base(r["cell"]) not in p.values:
                continue
            theirs = p.values[base(r["cell"])]
            g = t[(t["cell"] == r["cell"]) & (t["clip"] == r["clip"]) & (t["size"] == r["size"])]
            threshold = float(g["solve_threshold"].max())  # theirs judged as ours are
            there = literature.reaches_threshold(theirs, p.baseline, threshold, ti.mode)
            here = g[g["x"] == x_max]
            critical = stats.critical_length({int(x): list(gx["solved"]) for x, gx in g.groupby("x")})
            ours_solved = critical is not None and critical >= x_max
            rows.append([r["cell"], r["clip"], *([r["size"]] if sized else []), fmt(theirs),
                         "—" if there is None else "yes" if there else "no",
                         fmt_mean_ci(r["mean"], r["ci low"], r["ci high"], r["n"]),
                         f"{int(here['solved'].sum())}/{len(here)}", "none" if critical is None else str(critical),
                         _agreement(there, ours_solved, p.length, x_max)])
        if rows:
            their_base = f" Their trivial baseline: {fmt(p.baseline)} ({p.baseline_note})." if p.baseline else ""
            tables.append(f"{p.source}, {p.where}: {p.setting}.{their_base}\n\n"
                          + md_table(header, rows, [i + sized for i in (2, 4, 5, 6)]))
    return "\n\n".join(tables) or None


def _agreement(there: bool | None, here: bool, their_length: int | None, our_length: int) -> str:
    if there is None:
        return "no baseline there: compare the order of the cells"
    lengths = "" if their_length in (None, our_length) else f" (their T = {their_length}, ours {our_length})"
    if there == here:
        return "agree" + lengths
    if here and their_length and their_length > our_length:
        return (f"solved here at T ≤ {our_length}, not there at T = {their_length}: not a contradiction, "
                "a longer T here would test it")
    return "differ" + lengths


def throughput_table(tp: pd.DataFrame, task: str, runs: pd.DataFrame) -> str:
    """tokens/s per length (rows) and cell (columns), with the number of runs averaged; with both
    gated cells, the GRU's speed relative to the LSTM's, which checks the common claim that the
    GRU, with three gate blocks to the LSTM's four, trains about 25% faster (that would read 1.25)."""
    t = tp[tp["task"] == task]
    cells = sorted(t["cell"].unique(), key=cell_order)
    gated = {"lstm", "gru"} <= set(cells)
    rows = []
    for x in sorted(t["x"].unique()):
        row = [str(x)]
        speed = {}
        for c in cells:
            hit = t[(t["x"] == x) & (t["cell"] == c)]
            if len(hit):
                speed[c] = float(hit["tokens_per_s"].iloc[0])
            row.append(f"{hit['tokens_per_s'].iloc[0]:,.0f} (n={hit['n'].iloc[0]})" if len(hit) else "—")
        if gated:
            row.append(f"{speed['gru'] / speed['lstm']:.2f}" if {"gru", "lstm"} <= set(speed) else "—")
        rows.append(row)
    header = [length_label(task, runs), *(f"{c} tokens/s" for c in cells), *(["gru / lstm speed"] if gated else [])]
    return md_table(header, rows, range(len(header)))


# What the diagnostics read inside each cell at its last validation: (metric, column header).
INSIDE = [("grad_flow/horizon", "input-gradient horizon"), ("grad_flow/hidden_horizon", "hidden-gradient horizon"),
          ("gates/forget_mean", "forget gate (mean)"), ("gates/update_mean", "update gate z (mean)"),
          ("lru/abs_lambda_min", r"\|λ\| min"), ("lru/abs_lambda_median", r"\|λ\| median"),
          ("lru/abs_lambda_max", r"\|λ\| max")]  # \| : a pipe inside a markdown table cell


def inside_table(runs: pd.DataFrame, task: str) -> str | None:
    """Per cell x clip x size x length: the mean over finished seeds of what the diagnostics read
    at the run's last validation: how far back the gradient reaches (in steps from the readout),
    the mean gate, and the LRU's eigenvalue moduli |λ| (its memory: |λ|^t after t steps). Only the
    columns some run logged; "—" where a cell has no such knob."""
    t = runs[(runs["task"] == task) & (runs["outcome"] == "finished")]
    cols = [(m, h) for m, h in INSIDE if m in t and t[m].notna().any()]
    if t.empty or not cols:
        return None
    sized = sizes_vary(t)
    header = ["cell", "clip", *(["size"] if sized else []), length_label(task, runs), "n", *(h for _, h in cols)]
    rows = []
    groups = sorted(t.groupby(["cell", "clip", "size", "x"]),
                    key=lambda kv: (cell_order(kv[0][0]), clip_order(kv[0][1]), size_order(kv[0][2]), kv[0][3]))
    for (cell, clip, size, x), g in groups:
        values = []
        for m, _ in cols:
            v = g[m].dropna()
            values.append("—" if v.empty else (f"{v.mean():.0f}" if m.startswith("grad_flow/") else f"{v.mean():.3f}"))
        rows.append([cell, clip, *([size] if sized else []), str(x), str(len(g)), *values])
    return md_table(header, rows, range(3 if sized else 2, len(header)))
