"""The tuned report: does a comparison's verdict survive tuning each arm with the same budget?

For a tuning experiment (``make tune EXP=<preset>``; see :mod:`rnnlab.tune.study`), from its
MLflow runs and Optuna studies:

* the tuned arms: each arm's best configuration and its test metric over the re-seed runs
  (mean and 95% t-interval), beside the arm's default configuration re-run on the
  same seeds (a plain sweep into the same experiment: runs with no ``tune_role``), and their
  paired difference;
* the cells compared, default and tuned: every pair's paired difference and verdict under
  both, and whether tuning changed it;
* for a task with a solve threshold, the seeds that solved, default and tuned;
* where the re-seed runs were also tested at longer lengths than trained (``task.test_seq_len``:
  ``test/L<n>/<metric>``), the tuned arms at each length beside its trivial baseline (descriptive);
* the expected best validation score against the number of trials (Tang et al. 2020's
  unbiased estimator of Dodge et al. 2019's curve), with its spread;
* hyperparameter importance per arm (Optuna's PED-ANOVA, Watanabe et al. 2023), and each
  arm's trials against its most important hyperparameter (a log axis for a log-sampled one);
* given other tunings of the same arms scored on other tuning seeds (``--protocols``), the
  protocols compared: each one's tuned best, its tuning compute and the paired verdicts;
* where a cell ran at several widths, the re-seed runs' test metric against the state size
  (Zoology's figure, attention marked as the ceiling).

An experiment may hold several problems (tasks, or one task at several settings: the recall
study): each gets its section, and its arms compare only with each other
(:mod:`~rnnlab.report.tuning.problems`).

Statistics are :mod:`rnnlab.stats`'s: paired t-tests, every verdict of the page (of all its problems)
Holm-adjusted together.

One module per step, as in the rest of :mod:`rnnlab.report`:

1. :mod:`~rnnlab.report.tuning.loading`: the arms from an MLflow store and its Optuna studies
   (:func:`load`, :func:`load_all` for several tuning experiments joined), and
   :mod:`~rnnlab.report.tuning.saved`: the same arms from a committed study's data
   (:func:`export_`, :func:`load_saved`); :mod:`~rnnlab.report.tuning.arms` is what an arm holds,
   :mod:`~rnnlab.report.tuning.compute` what its trials cost, :mod:`~rnnlab.report.tuning.problems`
   which arms compare;
2. :mod:`~rnnlab.report.tuning.statistics`: paired differences, verdicts, rankings, importance;
3. :mod:`~rnnlab.report.tuning.tables` and :mod:`~rnnlab.report.tuning.figures`: what the page shows,
   :mod:`~rnnlab.report.tuning.protocols` the section comparing tuning protocols;
4. :mod:`~rnnlab.report.tuning.page`: the page itself (:func:`build`, :func:`build_saved`).
"""

from __future__ import annotations

from rnnlab.report.tuning.arms import ArmResult
from rnnlab.report.tuning.figures import plot_expected, plot_importance
from rnnlab.report.tuning.loading import FIXED, is_tuned, load, load_all
from rnnlab.report.tuning.loading import _read_study as _read_study
from rnnlab.report.tuning.page import _header as _header
from rnnlab.report.tuning.page import _seeds as _seeds
from rnnlab.report.tuning.page import build, build_saved
from rnnlab.report.tuning.saved import TRIALS, export_, load_saved
from rnnlab.report.tuning.statistics import ranking
from rnnlab.report.tuning.tables import (
    TRIALS_SHOWN,
    cells_table,
    expected_table,
    importance_table,
    literature_tables,
    longer_table,
    solved_table,
    tuned_table,
)

__all__ = ["FIXED", "TRIALS", "TRIALS_SHOWN", "ArmResult", "build", "build_saved", "cells_table", "expected_table",
           "literature_tables", "export_", "importance_table", "is_tuned", "longer_table", "load", "load_all",
           "load_saved", "plot_expected", "plot_importance", "ranking", "solved_table", "tuned_table"]
