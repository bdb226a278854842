"""What a run leaves behind: ``results.md`` for people, ``results.json`` and an MLflow run
(experiment ``bench``) for comparing runs, and warnings wherever a target is missed or the
numbers cannot be trusted, so that a regression is hard to overlook."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlab import paths
from rnnlab.bench import breakdown, fixed_costs
from rnnlab.bench.settings import (
    BUSY_LOAD_PER_CORE,
    TARGET_DIAG_OVERHEAD,
    TARGET_HARNESS_RATIO,
    TARGET_RUN_FIXED_S,
    TARGET_SWEEP_EFFICIENCY,
)


def to_markdown(res: dict[str, Any]) -> str:
    m, st = res["machine"], res["settings"]
    L = [f"# rnnlab benchmark{' (quick: toy sizes, the numbers mean nothing)' if st['quick'] else ''}",
         "",
         f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
         f"Lightning {m['lightning']}, MLflow {m['mlflow']}, Python {m['python']}"
         + (f", GPU {m['cuda']}" if m.get("cuda", "none") != "none" else "") + "; "
         f"load average at start {m['loadavg_start']}. "
         f"Duration {res['duration']['actual_s']:.0f} s (estimated {res['duration']['estimated_s']:.0f} s; "
         "by section, taken / estimated: " + _sections_time(res["duration"]) + ").",
         f"Shapes: batch {st['batch_size']}, hidden {st['hidden_size']}, embed {st['embed_dim']}; "
         f"{st['warmup']} warm-up + at least {st['steps']} timed steps, {st['repeats']} interleaved "
         f"repeats per side (medians)."
         + (f" Every harness run also had `{' '.join(st['extra'])}`." if st.get("extra") else ""), ""]
    # results made before a section existed do not list it as not run (their targets predate it)
    skipped = [key for key in MARKDOWN if key not in res and (key not in LATER or LATER[key] in res["targets"])]
    if skipped:
        L += [f"Sections run: {', '.join(k for k in MARKDOWN if k in res)} (`--sections`); "
              f"not run: {', '.join(skipped)}.", ""]
    if res.get("warnings"):
        L += [f"**WARNING: {w}**" for w in res["warnings"]] + [""]
    blocks = [render(res[key]) for key, render in MARKDOWN.items() if key in res]
    for i, block in enumerate(blocks):
        L += ([""] if i else []) + block
    return "\n".join(L) + "\n"


def _harness_markdown(rows: list[dict[str, Any]]) -> list[str]:
    L = ["## 1. Harness vs bare loop (tokens/s, CPU)", "",
         f"Target: harness/bare >= {TARGET_HARNESS_RATIO}.", "",
         "| cell | task | T | timed steps | harness tok/s | bare tok/s | harness/bare |",
         "|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['steps']} | {r['harness_tokens_per_s']:,.0f} | "
                 f"{r['bare_tokens_per_s']:,.0f} | {r['ratio']:.3f} |")
    return L + ["", "Validation is excluded: any that falls inside the timed window is timed and subtracted. "
                "Diagnostics run at validation, so their cost is in section 4."]


def _attribution_markdown(rows: list[dict[str, Any]]) -> list[str]:
    L = ["### 1b. Where the harness's time per step goes (ms per step, medians)", "",
         "\"no logging steps\": `trainer.log_every_n_steps` beyond the run, so no metric is sent and "
         "no gradient norm is logged.", "",
         "| config | harness | harness, no logging steps | bare | harness - bare |", "|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['cell']} {r['task']} T={r['seq_len']} B={r['batch_size']} H={r['hidden_size']} | "
                 f"{r['harness_ms_per_step']:.2f} | {r['harness_no_step_logging_ms_per_step']:.2f} | "
                 f"{r['bare_ms_per_step']:.2f} | {r['harness_ms_per_step'] - r['bare_ms_per_step']:+.2f} |")
    return L


def _roofline_markdown(rf: dict[str, Any]) -> list[str]:
    L = [f"## 2. Roofline (sgemm {rf['sgemm']['n']}² float32: {rf['sgemm']['gflops']:.1f} GFLOP/s)", "",
         "| cell | task | T | GFLOP/step | bare GFLOP/s | bare % of sgemm | harness % of sgemm |",
         "|---|---|---|---|---|---|---|"]
    for r in rf["rows"]:
        L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['gflop_per_step']:.3f} | "
                 f"{r['bare_gflops']:.1f} | {100 * r['bare_fraction_of_peak']:.1f}% | "
                 f"{100 * r['harness_fraction_of_peak']:.1f}% |")
    return L


def _reference_markdown(rows: list[dict[str, Any]]) -> list[str]:
    L = ["## 3. Fused vs reference cells (bare loop, adding)", "",
         "| cell | T | timed steps | fused tok/s | reference tok/s | fused/reference |",
         "|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['cell']} | {r['seq_len']} | {r['steps']} | {r['fused_tokens_per_s']:,.0f} | "
                 f"{r['reference_tokens_per_s']:,.0f} | {r['fused_over_reference']:.2f} |")
    return L


def _scan_markdown(rows: list[dict[str, Any]], title: str = "## 3b. Modern cells: parallel scan vs step by "
                   "step, and the fused cells (the recurrent stack alone, forward + backward)") -> list[str]:
    L = [title, "",
         "| cell | H | T | parallel tok/s | sequential tok/s | parallel/sequential | parallel/fused LSTM | "
         "parallel/fused GRU |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['cell']} | {r['hidden']} | {r['seq_len']} | {r['parallel_tokens_per_s']:,.0f} | "
                 f"{r['sequential_tokens_per_s']:,.0f} | {r['parallel_over_sequential']:.2f} | "
                 f"{r['parallel_over_fused_lstm']:.2f} | {r['parallel_over_fused_gru']:.2f} |")
    return L


def _diagnostics_markdown(rows: list[dict[str, Any]]) -> list[str]:
    L = [f"## 4. Diagnostics cost (whole trainer.fit; target <= +{100 * TARGET_DIAG_OVERHEAD:.0f}%)", "",
         "| cell | task | T | steps | fit on (s) | fit off (s) | on/off | in diagnostics hooks |",
         "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['steps']} | {r['fit_s_on']:.2f} | "
                 f"{r['fit_s_off']:.2f} | {r['on_over_off']:.3f} | {r['diag_hooks_s']:.2f} s "
                 f"({100 * r['diag_share_of_fit']:.1f}%) |")
    return L


def _sweep_markdown(sw: dict[str, Any]) -> list[str]:
    return [f"## 5. Sweep parallelism ({sw['runs']} runs: {' '.join(sw['overrides'])})", "",
            "| layout | wall (s, median) | runs |", "|---|---|---|",
            f"| 1 job x 2 threads | {sw['wall_s_1x2']:.1f} | {', '.join(f'{w:.1f}' for w in sw['walls_1x2'])} |",
            f"| 2 jobs x 1 thread (preset) | {sw['wall_s_2x1']:.1f} | "
            f"{', '.join(f'{w:.1f}' for w in sw['walls_2x1'])} |",
            "", f"Faster: **{sw['faster']}** ({sw['speedup_2x1_over_1x2']:.2f}x = 1x2 wall / 2x1 wall)"
            + ("" if sw["preset_is_faster"] else
               " — **the preset default (2 jobs x 1 thread) is NOT the faster one**")]


def _breakdown_markdown(bd: dict[str, Any]) -> list[str]:
    return breakdown.markdown(bd, TARGET_RUN_FIXED_S)


def _memory_markdown(mem: dict[str, Any]) -> list[str]:
    return ["## 6. Memory", "",
            f"Peak RSS of `{mem['command']}`: **{mem['peak_rss_mib']:.0f} MiB** "
            f"(importing torch, Lightning, MLflow and rnnlab alone: {mem['imports_peak_rss_mib']:.0f} MiB)."]


def _gpu_markdown(gpu: dict[str, Any]) -> list[str]:
    L = ["## GPU (fused cells, cuDNN; the modern cells' scans)", ""]
    if not gpu.get("available"):
        return L + ["No CUDA device: skipped."]
    L += [f"{gpu['device']}; sgemm {gpu['sgemm']['n']}²: {gpu['sgemm']['gflops']:.0f} GFLOP/s.", "",
          "| cell | task | T | harness tok/s | bare tok/s | harness/bare | bare % of sgemm |",
          "|---|---|---|---|---|---|---|"]
    for r in gpu["rows"]:
        L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['harness_tokens_per_s']:,.0f} | "
                 f"{r['bare_tokens_per_s']:,.0f} | {r['ratio']:.3f} | {100 * r['bare_fraction_of_peak']:.2f}% |")
    if gpu.get("scan"):
        title = f"### 3b on the GPU (batch {gpu['scan'][0]['batch']}; the recurrent stack alone, forward + backward)"
        L += [""] + _scan_markdown(gpu["scan"], title)
    if any("parallel_peak_mib" in r for r in gpu.get("scan", [])):
        L += ["", "Peak GPU memory of a training step of the stack (MiB, `torch.cuda.max_memory_allocated`):", "",
              "| cell | H | T | parallel | sequential | parallel/sequential | fused LSTM | fused GRU |",
              "|---|---|---|---|---|---|---|---|"]
        for r in gpu["scan"]:
            L.append(f"| {r['cell']} | {r['hidden']} | {r['seq_len']} | {r['parallel_peak_mib']:,.0f} | "
                     f"{r['sequential_peak_mib']:,.0f} | {r['parallel_peak_mib'] / r['sequential_peak_mib']:.2f} | "
                     f"{r['fused_lstm_peak_mib']:,.0f} | {r['fused_gru_peak_mib']:,.0f} |")
    return L


def _efficiency_markdown(eff: dict[str, Any]) -> list[str]:
    sc = eff["scaling"]
    L = [f"## 5b. Sweep efficiency (target >= {TARGET_SWEEP_EFFICIENCY})", "",
         "efficiency = sum over runs of (steps x bare ms/step, 1 process, 1 thread) / (sweep wall x jobs). "
         "The wall is the whole command's: imports, parent run, workers, the report at the end. "
         "\"in runs\": the MLflow runs' own durations beyond their steps at the bare rate (per-step overhead, "
         "validation and test, diagnostics, tracking), per run; \"outside runs\": the rest of wall x jobs "
         "(interpreter start and imports, launcher, parent run, report, idle workers at the end). "
         "\"with evaluation\": the bare side also makes the runs' validations and tests (forward and loss "
         "over each split, as a hand-written loop on the same schedule would), so what remains is the "
         "harness's own cost.", "",
         "| case | runs | jobs | steps | wall (s) | bare training (s) | efficiency | vs parallel bare "
         "| validations + tests | bare evaluation (s) | efficiency with evaluation "
         "| in runs, beyond bare steps (s/run) | outside runs (job-s) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in eff["cases"]:
        with_eval = (f"{r['validations']} + {r['tests']} | {r['bare_eval_s']:.1f} | {r['efficiency_with_eval']:.2f}"
                     if "efficiency_with_eval" in r else "- | - | -")
        L.append(f"| {r['case']} | {r['runs']} | {r['jobs']} | {r['steps']:,} | {r['wall_s']:.1f} | "
                 f"{r['ideal_s']:.1f} | **{r['efficiency']:.2f}** | {r['efficiency_vs_parallel_bare']:.2f} | "
                 f"{with_eval} | {r['run_overhead_s_per_run']:.2f} | {r['outside_runs_s']:.1f} |")
    L += ["", f"Parallel scaling of the machine (bare loop, {' '.join(f'{k}={v}' for k, v in sc['config'].items())}): "
          f"{sc['alone_ms_per_step']:.2f} ms/step alone, {sc['parallel_ms_per_step']:.2f} ms/step each with "
          f"{sc['jobs']} at once, scaling {sc['scaling']:.2f}. \"vs parallel bare\" = efficiency / scaling: "
          "against a bare loop run with the same parallelism.", "", "Commands:", ""]
    L += [f"- {r['case']}: `{r['command']}`" + (" (section 5's sweep at 2 jobs x 1 thread: the same command, "
                                                 "timed once)" if r.get("timed_earlier") else "")
          for r in eff["cases"]]
    return L


MARKDOWN: dict[str, Callable[[Any], list[str]]] = {  # each section's part of results.md, in SECTIONS order
    "harness_vs_bare": _harness_markdown, "attribution": _attribution_markdown, "roofline": _roofline_markdown,
    "fused_vs_reference": _reference_markdown, "scan": _scan_markdown, "diagnostics": _diagnostics_markdown,
    "sweep": _sweep_markdown, "sweep_efficiency": _efficiency_markdown, "run_breakdown": _breakdown_markdown,
    "fixed_costs": fixed_costs.markdown, "memory": _memory_markdown, "gpu": _gpu_markdown}


LATER = {"fixed_costs": "sweep_fixed_max_s"}  # a section added later: the target that says results know it


def check_targets(res: dict[str, Any]) -> list[str]:
    """Each target a section that ran misses (a ``--sections`` run checks those it has)."""
    warn = []
    low = [r for r in res.get("harness_vs_bare", []) if r["ratio"] < TARGET_HARNESS_RATIO]
    if low:
        warn.append(f"harness/bare below {TARGET_HARNESS_RATIO} for {len(low)} of "
                    f"{len(res['harness_vs_bare'])} configurations: " + ", ".join(
                        f"{r['cell']}/{r['task']}/T{r['seq_len']} {r['ratio']:.3f}" for r in low))
    high = [r for r in res.get("diagnostics", []) if r["on_over_off"] > 1 + TARGET_DIAG_OVERHEAD]
    if high:
        warn.append(f"diagnostics add more than {100 * TARGET_DIAG_OVERHEAD:.0f}% to the fit: " + ", ".join(
            f"{r['cell']} +{100 * (r['on_over_off'] - 1):.1f}%" for r in high))
    if "sweep" in res and not res["sweep"]["preset_is_faster"]:
        warn.append("SWEEP PRESET IS NOT THE FASTER LAYOUT: 2 jobs x 1 thread took "
                    f"{res['sweep']['wall_s_2x1']:.1f} s, 1 job x 2 threads {res['sweep']['wall_s_1x2']:.1f} s; "
                    "conf/experiment/long_range.yaml's n_jobs=${cores:} threads=1 should change")
    low_eff = [r for r in res.get("sweep_efficiency", {}).get("cases", []) if r["efficiency"] < TARGET_SWEEP_EFFICIENCY]
    if low_eff:
        warn.append(f"sweep efficiency below {TARGET_SWEEP_EFFICIENCY}: " + ", ".join(
            f"{r['case']} {r['efficiency']:.2f} ({r['efficiency_vs_parallel_bare']:.2f} against a parallel bare loop)"
            for r in low_eff))
    bd = res.get("run_breakdown")
    if bd and bd["beyond_steps_s"] > TARGET_RUN_FIXED_S:
        warn.append(f"a sweep's run costs {bd['beyond_steps_s']:.2f} s beyond its training steps "
                    f"(target {TARGET_RUN_FIXED_S:g} s; {bd['beyond_steps_and_eval_s']:.2f} s beyond steps "
                    "and evaluation)")
    if "fixed_costs" in res:
        warn += fixed_costs.targets(res["fixed_costs"])
    low_gpu = [r for r in res.get("gpu", {}).get("rows", []) if r["ratio"] < TARGET_HARNESS_RATIO]
    if low_gpu:
        warn.append(f"on the GPU, harness/bare below {TARGET_HARNESS_RATIO} for {len(low_gpu)} of "
                    f"{len(res['gpu']['rows'])} configurations (median "
                    f"{statistics.median(r['ratio'] for r in res['gpu']['rows']):.2f})")
    if res["machine"]["loadavg_start"] > BUSY_LOAD_PER_CORE * res["machine"]["cores"]:
        warn.append(f"the machine was busy (load average {res['machine']['loadavg_start']} at start on "
                    f"{res['machine']['cores']} cores): timings are contended")
    return warn


def log_to_mlflow(res: dict[str, Any], uri: str, files: list[Path]) -> str:
    """The results as one run of experiment ``bench`` in the user's store (the benchmark's own
    training runs went to a throwaway one), so that runs on other days and machines line up."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from rnnlab import tracking

    client = MlflowClient(uri)
    artifacts = None if uri.startswith(("http://", "https://")) else paths.default_artifact_root(uri)
    exp_id = tracking.get_or_create_experiment(client, "bench", artifacts)
    st = res["settings"]
    run = client.create_run(exp_id, run_name=f"bench-{'quick' if st['quick'] else 'full'}-"
                            f"{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"quick": str(st["quick"]).lower(), **tracking.git_info(),
                                  "sections": ",".join(k for k in MARKDOWN if k in res),
                                  "warnings": " | ".join(res["warnings"])[:5000] or "none"})
    rid = run.info.run_id
    params = {**{f"machine.{k}": v for k, v in res["machine"].items()},
              **{f"settings.{k}": v for k, v in st.items()}}
    now = int(time.time() * 1000)
    metrics = {"duration_s": res["duration"]["actual_s"]}
    for key, section_metrics in METRICS.items():
        if key in res:
            metrics.update(section_metrics(res[key]))
    client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 500):
        client.log_batch(rid, metrics=items[i:i + 500])
    for f in files:
        client.log_artifact(rid, str(f))
    client.set_terminated(rid, "FINISHED")
    return rid


def _harness_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    m = {f"harness_ratio/{r['cell']}_{r['task']}_T{r['seq_len']}": r["ratio"] for r in rows}
    m["harness_ratio/median"] = statistics.median(r["ratio"] for r in rows)
    m["harness_ratio/min"] = min(r["ratio"] for r in rows)
    return m


def _roofline_metrics(rf: dict[str, Any]) -> dict[str, float]:
    return {"roofline/sgemm_gflops": rf["sgemm"]["gflops"],
            **{f"roofline/bare_fraction/{r['cell']}_{r['task']}_T{r['seq_len']}": r["bare_fraction_of_peak"]
               for r in rf["rows"]}}


def _reference_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {f"fused_over_reference/{r['cell']}_T{r['seq_len']}": r["fused_over_reference"] for r in rows}


def _scan_metrics(rows: list[dict[str, Any]], prefix: str = "scan") -> dict[str, float]:
    return {f"{prefix}/parallel_over_sequential/{r['cell']}_H{r['hidden']}_T{r['seq_len']}":
            r["parallel_over_sequential"] for r in rows}


def _diagnostics_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {k: v for r in rows for k, v in ((f"diagnostics/on_over_off/{r['cell']}", r["on_over_off"]),
                                            (f"diagnostics/hooks_share/{r['cell']}", r["diag_share_of_fit"]))}


def _sweep_metrics(sw: dict[str, Any]) -> dict[str, float]:
    return {"sweep/wall_s_1x2": sw["wall_s_1x2"], "sweep/wall_s_2x1": sw["wall_s_2x1"],
            "sweep/speedup_2x1_over_1x2": sw["speedup_2x1_over_1x2"]}


def _efficiency_metrics(eff: dict[str, Any]) -> dict[str, float]:
    m = {"sweep_efficiency/parallel_scaling": eff["scaling"]["scaling"]}
    for r in eff["cases"]:
        m.update({f"sweep_efficiency/{r['case']}": r["efficiency"],
                  f"sweep_efficiency/{r['case']}_wall_s": r["wall_s"],
                  f"sweep_efficiency/{r['case']}_vs_parallel_bare": r["efficiency_vs_parallel_bare"],
                  f"sweep_efficiency/{r['case']}_with_eval": r["efficiency_with_eval"]})
    return m


def _breakdown_metrics(bd: dict[str, Any]) -> dict[str, float]:
    return {"run_breakdown/run_s": bd["run_s"], "run_breakdown/beyond_steps_s": bd["beyond_steps_s"],
            "run_breakdown/beyond_steps_and_eval_s": bd["beyond_steps_and_eval_s"]}


def _gpu_metrics(gpu: dict[str, Any]) -> dict[str, float]:
    m: dict[str, float] = {}
    for r in gpu.get("rows", []):
        m[f"gpu/harness_ratio/{r['cell']}_{r['task']}_T{r['seq_len']}"] = r["ratio"]
        m[f"gpu/bare_tokens_per_s/{r['cell']}_{r['task']}_T{r['seq_len']}"] = r["bare_tokens_per_s"]
    return {**m, **_scan_metrics(gpu.get("scan", []), "gpu/scan")}


METRICS: dict[str, Callable[[Any], dict[str, float]]] = {  # each section's metrics in the MLflow run
    "harness_vs_bare": _harness_metrics, "roofline": _roofline_metrics, "fused_vs_reference": _reference_metrics,
    "scan": _scan_metrics, "diagnostics": _diagnostics_metrics, "sweep": _sweep_metrics,
    "sweep_efficiency": _efficiency_metrics, "run_breakdown": _breakdown_metrics,
    "fixed_costs": fixed_costs.metrics, "memory": lambda mem: {"memory/peak_rss_mib": mem["peak_rss_mib"]},
    "gpu": _gpu_metrics}


def write(res: dict[str, Any], out: Path, tracking_uri: str | None) -> None:
    """``out/results.md`` and ``out/results.json``; with ``tracking_uri``, also an MLflow run
    holding both, whose id then goes into the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "results.md", out / "results.json"
    md.write_text(to_markdown(res))
    js.write_text(json.dumps(res, indent=2) + "\n")
    if tracking_uri:
        res["mlflow_run_id"] = log_to_mlflow(res, tracking_uri, [md, js])
        js.write_text(json.dumps(res, indent=2) + "\n")


def _sections_time(duration: dict) -> str:
    """``scan 299/189 s``: what each section took against its estimate (older results: taken)."""
    est = duration.get("sections_estimated_s", {})
    return ", ".join(f"{k} {v:.0f}" + (f"/{est[k]:.0f}" if k in est else "") + " s"
                     for k, v in duration.get("sections_s", {}).items())
