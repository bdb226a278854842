"""The tuned report's page: REPORT.md and its figures from the arms, from an MLflow store
(:func:`build`) or from a committed study's data (:func:`build_saved`), the discussion
written by hand kept across regenerations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rnnlab import paths, stats
from rnnlab.report.page import DISCUSSION_END, DISCUSSION_START, check_out_dir, kept_discussion, method
from rnnlab.report.source import DATA
from rnnlab.report.store import ReportError
from rnnlab.report.tuning import problems
from rnnlab.report.tuning.arms import ArmResult
from rnnlab.report.tuning.figures import plot_expected, plot_importance, plot_state_size
from rnnlab.report.tuning.loading import load, load_all, source_name
from rnnlab.report.tuning.problems import Problem
from rnnlab.report.tuning.protocols import Protocol, protocols, section
from rnnlab.report.tuning.saved import export_, exported_as, load_saved, protocol_studies
from rnnlab.report.tuning.statistics import ranking
from rnnlab.report.tuning.tables import (
    cells_table,
    defaults_run,
    expected_table,
    importance_table,
    literature_tables,
    longer_table,
    solved_table,
    tuned_table,
)
from rnnlab.runs import metric_name


def build(experiment: str, tracking_uri: str, out_dir: Path, code: str = "",
          also: list[tuple[str, str]] | None = None, export: bool = False,
          compare: list[tuple[str, str]] | None = None) -> Path:
    """Write ``out_dir/REPORT.md`` and its figures; keep the discussion already there.
    ``also``: other tuning experiments ``(experiment, tracking_uri)`` whose arms join the
    comparison (cells tuned by another preset, in another store). ``compare``: tuning
    experiments of the same arms scored on other tuning seeds, whose protocols the page
    compares (:mod:`~rnnlab.report.tuning.protocols`). ``export``: the runs and trials are also
    written beside it (``out_dir/data/``), from which :func:`build_saved` writes the same page;
    a compared experiment must then be exported beside it first (its folder is linked, and its
    data, not the store, gives its arms, so that both pages agree)."""
    if export and also:
        raise ReportError("--export writes one tuning experiment's data; a joined report (--with) is not exported")
    if also and compare:
        raise ReportError("--protocols compares one tuning's protocols; a joined report (--with) takes none")
    sources = [(experiment, tracking_uri), *(also or [])]
    arms = load_all(sources)
    grouped = problems.group(arms)
    if compare and len(grouped) > 1:  # a protocol's arms are matched by cell and length alone
        raise ReportError(f"--protocols compares the tunings of one problem; '{experiment}' holds {len(grouped)} "
                          f"({', '.join(p.name for p in grouped)})")
    folders = [exported_as(out_dir.parent, e, u) for e, u in compare or []] if export else []
    others = [load_saved(f) for f in folders] if export else [load(u, e) for e, u in compare or []]
    found = protocols(arms, others) if compare else []
    if export:
        export_(tracking_uri, experiment, out_dir, protocols=[f.name for f in folders])
        regenerate = f"python src/report.py --from {_relative(out_dir)}"
    else:
        store = "" if tracking_uri == paths.default_tracking_uri() else f" --tracking-uri {tracking_uri}"
        regenerate = f"python src/report.py --experiment {experiment}{store}" + "".join(
            f" --with {e}@{u}" for e, u in sources[1:]) + "".join(f" --protocols {e}@{u}" for e, u in compare or [])
    return _write(arms, sources, out_dir, regenerate + code, saved=export, found=found)


def build_saved(folder: Path, out_dir: Path | None = None) -> Path:
    """The tuned report of a committed tuning study, from its data alone."""
    arms = load_saved(folder)
    others = [load_saved(f) for f in protocol_studies(folder)]
    found = protocols(arms, others) if others else []
    out = out_dir or folder
    return _write(arms, [(arms[0].source, "")], out, f"python src/report.py --from {_relative(folder)}", saved=True,
                  home=folder, found=found)


def _relative(path: Path) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(paths.repo_root()))
    except ValueError:
        return str(path)


def _write(arms: list[ArmResult], sources: list[tuple[str, str]], out_dir: Path, regenerate: str,
           saved: bool, home: Path | None = None, found: list[Protocol] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    check_out_dir(out_dir, sources[0][0])
    report = out_dir / "REPORT.md"
    discussion = kept_discussion(report)
    grouped = problems.group(arms)
    several = len(grouped) > 1
    drawn: dict[str, set[str]] = {}  # per problem, the file names of the figures drawn
    for p in grouped:
        files = ("expected_best.png", "importance.png") if not several else \
            (f"expected_best_{p.slug}.png", f"importance_{p.slug}.png")
        name = p.name if several else ""
        drawn[p.name] = {Path(f).name for f in (plot_expected(p.arms, out_dir / files[0], name),
                                                plot_importance(p.arms, out_dir / files[1], name)) if f}
    state = plot_state_size(grouped, out_dir / STATE_SIZE)
    family = stats.Family()  # every verdict of the page, adjusted together: gathered, then printed
    _body(grouped, found, family, drawn, bool(state))
    family.close()
    lines = [*_header(arms, sources, regenerate, family, home or out_dir, saved, grouped),
             *_body(grouped, found, family, drawn, bool(state)), DISCUSSION_START,
             discussion or "_(discussion: written by hand, kept when the report is regenerated)_",
             DISCUSSION_END, ""]
    report.write_text("\n".join(lines))
    return report


STATE_SIZE = "metric_vs_state_size.png"


def _body(grouped: list[Problem], found: list[Protocol] | None, family: stats.Family, drawn: dict[str, set[str]],
          state: bool) -> list[str]:
    """The page under its header: one problem's tables and figures as the page's own sections,
    or with several, a section per problem (its tables and figures one level down), after the
    figure that sets them side by side."""
    if len(grouped) == 1:
        arms = grouped[0].arms
        compared = section(arms, found, family) if found else []
        return [*_comparison(arms, family), *(_state_size(grouped, "##") if state else []), *compared,
                *_search(arms, drawn[grouped[0].name])]
    lines = [*(_state_size(grouped, "##") if state else [])]
    for p in grouped:
        ti_better = "higher" if p.mode == "max" else "lower"
        lengths = sorted({a.seq_len for a in p.arms})
        lines += [f"## {p.name}: `{p.metric}`, {ti_better} is better", "",
                  f"{len(p.arms)} arms ({', '.join(a.label for a in p.arms)}) at T = {', '.join(map(str, lengths))}"
                  + (f"; task settings: {', '.join(f'`{k}={v}`' for k, v in p.settings.items())}" if p.settings
                     else "") + ". Its cells are compared with each other only.", "",
                  *_comparison(p.arms, family, "###"), *_search(p.arms, drawn[p.name], "###")]
    return lines


def _state_size(grouped: list[Problem], level: str) -> list[str]:
    """Zoology's figure, linked with what it shows."""
    return [f"{level} Test metric against state size", "",
            "The test metric of the re-seed runs (tuned) against `model/state_size`, the floats of state a cell "
            "carries per sequence (log x; attention's is its whole context, seq_len × 2 × width per layer: drawn "
            "dashed, the ceiling), a line per cell over its widths, error bars = the 95% t-interval of the mean "
            "over seeds, grey dashed = trivial baseline; a panel per "
            + ("problem and length" if len(grouped) > 1 else "length")
            + " where a cell was run at more than one state size.", "", f"![state size]({STATE_SIZE})", ""]


def _header(arms: list[ArmResult], sources: list[tuple[str, str]], regenerate: str, family: stats.Family,
            out_dir: Path | None = None, saved: bool = False, grouped: list[Problem] | None = None) -> list[str]:
    """Title, how to regenerate, and what was tuned how: arms, space, trials, what is compared."""
    (experiment, _), a0 = sources[0], arms[0]
    grouped = grouped or problems.group(arms)
    common = {k: v for k, v in a0.space.items() if all(a.space.get(k) == v for a in arms)}
    space = ", ".join(f"`{k}: {v}`" for k, v in common.items())
    extra = {(k, v): list(dict.fromkeys(a.cell for a in arms if a.space.get(k) == v))
             for a in arms for k, v in a.space.items() if k not in common}
    data = ([f"- **data**: [`data/`]({DATA}/): every run's params, tags and final metrics, and every trial of "
             "the Optuna studies (Parquet)"] if saved else [])
    several = len(grouped) > 1
    ordered = [a for p in grouped for a in p.arms]  # in the page's order: by problem
    metrics = ", ".join(dict.fromkeys(f"`{a.test_metric}`" for a in ordered))
    selected = list(dict.fromkeys(a.main_metric for a in ordered))
    listed = "; ".join(f"{p.name} ({len(p.arms)} arms)" for p in grouped)
    problem_lines = [f"- **problems**: {len(grouped)}, a section each: {listed}. A problem is a task with its "
                     "settings; its arms compare with each other at each length, and with no arm of another "
                     "problem"] if several else []
    family_note = (f" One Holm family for the whole page: the comparisons of {_all(len(grouped))} problems are "
                   "adjusted together, though none crosses a problem.") if several else ""
    return [
        f"# Report: experiment `{experiment}`", "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `src/report.py`.", "",
        f"Each arm tuned with the same budget, then compared on fresh seeds. Regenerate: `{regenerate}`.", "",
        f"- **arms**: {len(arms)} ({', '.join(a.label for a in ordered)}), one Optuna study each "
        f"({', '.join(f'`{study}: <arm>`' for study in _studies(ordered))})",
        *problem_lines,
        *_sources_lines(arms, sources),
        f"- **search space** (the same for every arm): {space}"
        + (f"; by cell: {', '.join(f'`{k}: {v}` ({chr(44).join(c)})' for (k, v), c in extra.items())}"
           if extra else ""),
        f"- **trials**: {', '.join(f'{a.label} {a.n_trials}' for a in ordered)}; {_scoring(a0, selected)}; a "
        f"diverged run scores the worse of the trivial baseline and the arm's worst",
        f"- **compared on**: {metrics} of the best configuration re-run on seeds "
        f"{_seeds(ordered, 'tuned')} (tuned), "
        + (f"and of the preset's default configuration on seeds {_seeds(ordered, 'default')} (default)"
           if defaults_run(arms) else "each arm against the task's trivial baseline on the same test sets (no run "
           "of a default configuration has finished in this experiment)"),
        f"- **statistics**: {method(family, out_dir)}{family_note}", *data, ""]


def _comparison(arms: list[ArmResult], family: stats.Family, level: str = "##") -> list[str]:
    """Each arm tuned against its default, the cells against each other, and solved seeds."""
    both = "default and tuned" if defaults_run(arms) else "tuned"
    lines = [f"{level} Tuned arms", "", tuned_table(arms, family), "", f"{level} The cells compared, {both}", ""]
    if len({a.cell for a in arms}) > 1:
        lines += [(f"Ranking by mean, default: {ranking(arms, 'default')}. Tuned: {ranking(arms, 'tuned')}."
                   if defaults_run(arms) else f"Ranking by mean, tuned: {ranking(arms, 'tuned')}."), ""]
    lines += [cells_table(arms, family), ""]
    solved = solved_table(arms)
    lines += [f"{level} Solved seeds, {both}", "", solved, ""] if solved else []
    return lines + _longer(arms, level) + _literature(arms, level)


def _literature(arms: list[ArmResult], level: str) -> list[str]:
    """The task's published numbers beside the tuned arms (descriptive)."""
    tables = literature_tables(arms)
    if not tables:
        return []
    return [f"{level} Ours beside the literature", "",
            "What the task's papers report (`Task.published`), quoted with their settings, beside each tuned arm's "
            "mean [95% t-interval] over its re-seeds. Their settings differ from ours (see each heading), so "
            "nothing here is tested and nothing joins the page's Holm family.", "",
            *(line for t in tables for line in (t, ""))]


def _longer(arms: list[ArmResult], level: str) -> list[str]:
    """Length extrapolation: the tuned arms tested at longer lengths than they were trained at."""
    table = longer_table(arms)
    if table is None:
        return []
    metric = arms[0].test_metric
    name = metric_name(metric)
    return [f"{level} At longer lengths than trained", "",
            f"The tuned re-seed runs, trained at T, tested also on test sets drawn at longer lengths "
            f"(`task.test_seq_len`): `{metric}` at T and `test/L<n>/{name}` at each longer length n, mean [95% "
            f"t-interval] over seeds; the trivial baseline at each length is the task's trivial strategy on the "
            f"same test set (`baseline/{name}`, `baseline/L<n>/{name}`), mean over the seeds' runs. Descriptive: "
            "nothing here is tested, and nothing joins the page's Holm family.", "", table, ""]


def _search(arms: list[ArmResult], drawn: set[str], level: str = "##") -> list[str]:
    """What the search itself shows: the expected best against trials, and what mattered
    (each figure linked if it was drawn: ``drawn`` holds their file names)."""
    expected = next((f for f in sorted(drawn) if f.startswith("expected_best")), None)
    important = next((f for f in sorted(drawn) if f.startswith("importance")), None)
    kind = "grid" if all(a.fixed.get("tune.sampler") == "grid" for a in arms) else "random-search"
    return [
        f"{level} Expected best validation score against the number of trials", "",
        f"What a researcher would have found with only n of the N {kind} trials: the mean over all "
        "subsets of n distinct trials of the best validation score among them (Tang et al. 2020's unbiased "
        "estimator of the curve of Dodge et al. 2019), ± its standard deviation over those subsets.", "",
        expected_table(arms), "",
        *([f"![expected best]({expected})", ""] if expected else []),
        f"{level} Hyperparameter importance", "",
        "PED-ANOVA (Watanabe et al. 2023, `optuna.importance.PedAnovaImportanceEvaluator`): how far each "
        "hyperparameter's distribution among the top 10% of an arm's trials departs from its distribution "
        "over all of them; normalised to sum to 1 per arm. With 12-20 trials the top 10% is two trials: read "
        "it with the scatter below.", "",
        importance_table(arms), "",
        *([f"![importance]({important})", ""] if important else [])]


def _studies(arms: list[ArmResult]) -> list[str]:
    """The study name prefix of each source, in order."""
    return list(dict.fromkeys(a.study.split(":")[0] for a in arms))


def _sources_lines(arms: list[ArmResult], sources: list[tuple[str, str]]) -> list[str]:
    """Where the arms of a joined report come from, and whether they ran the same code."""
    if len(sources) == 1:
        return []
    parts = []
    for experiment, uri in sources:
        mine = [a for a in arms if a.source == source_name(experiment, uri, sources)]
        hashes = sorted({h for a in mine for h in a.code_hashes})
        parts.append(f"`{experiment}` ({', '.join(dict.fromkeys(a.cell for a in mine))}; code hash "
                     f"{', '.join(f'`{h}`' for h in hashes) or 'unknown'}; `{uri}`)")
    lines = [f"- **sources**: {'; '.join(parts)}"]
    versions = {h for a in arms for h in a.code_hashes}
    if len(versions) > 1:
        lines.append(f"- **code**: the arms ran {len(versions)} versions of the code. The comparison assumes the "
                     "changes between them move none of these numbers; where that matters, rerun one seed of an "
                     "arm at the other version and compare")
    return lines


def _scoring(arm: ArmResult, metrics: list[str] | None = None) -> str:
    """How a trial was scored: on one tuning seed, or the mean over several (``tune.seed``);
    ``metrics``: the validation metrics of a page's problems, where there are several."""
    seeds = str(arm.fixed.get("tune.seed", "0")).strip("[]").replace(" ", "").split(",")
    metric = " or ".join(f"`{m}`" for m in metrics or [arm.main_metric]) + (" (its problem's)" if len(
        metrics or []) > 1 else "")
    search = "grid search" if arm.fixed.get("tune.sampler") == "grid" else "random search"
    if len(seeds) == 1:
        return f"{search} on the tuning seed {seeds[0]}; a trial scores its best {metric}"
    return (f"{search} on the tuning seeds {', '.join(seeds)}; a trial scores the mean over them of each "
            f"run's best {metric}")


def _seeds(arms: list[ArmResult], which: str) -> str:
    """The seeds the arms' tuned (or default) runs share, and any arm that has others."""
    of = {a.label: tuple(sorted(getattr(a, which))) for a in arms}
    common = max(set(of.values()), key=lambda seeds: (list(of.values()).count(seeds), seeds))
    text = ", ".join(map(str, common)) if common else "none yet"
    others = [f"{label}: {', '.join(map(str, seeds)) or 'none yet'}" for label, seeds in of.items() if seeds != common]
    return text + (f" (except {'; '.join(others)})" if others else "")


def _all(n: int) -> str:
    """``both``, ``all 3``: the problems a page's one family spans."""
    return "both" if n == 2 else f"all {n}"
