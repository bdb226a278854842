"""Published numbers a report puts beside its own, with their settings, so that a reader sees
where rnnlab agrees with the literature and where the settings differ too much to say.

Each entry is quoted from its table, never rounded or inferred; the settings say what differs
from a rnnlab run (length, parameters, data). Add an entry here, not in the report's text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    source: str  # short citation
    where: str  # table or figure
    setting: str  # the conditions that matter when comparing
    metric: str  # the test metric, as rnnlab names it
    length: int | None  # the sequence length / delay T of the task in the paper
    values: dict[str, float]  # cell -> reported value
    baseline: float | None  # the trivial strategy's value in the paper's setting
    baseline_note: str = ""


BAI_2018 = "Bai, Kolter & Koltun 2018, \"An empirical evaluation of generic convolutional and recurrent networks\""

PUBLISHED: dict[str, list[Published]] = {
    "adding": [Published(
        BAI_2018, "Table 1", "T = 600, about 70K parameters per model, hyperparameters tuned per cell",
        "test/mse", 600, {"rnn": 0.177, "lstm": 0.164, "gru": 5.3e-5},
        1 / 6, "predicting 1: the variance of a sum of two U(0,1) numbers, 1/6")],
    "copy": [Published(
        BAI_2018, "Table 1", "copy memory, delay T = 1000, about 16K parameters per model",
        "test/loss", 1000, {"rnn": 0.0202, "lstm": 0.0204, "gru": 0.0197},
        10 * 2.0794415416798357 / 1020, "the memoryless strategy, 10 ln 8 / (T + 20)")],
    "char_lm": [Published(
        BAI_2018, "Table 1", "character-level Penn Treebank (not Shakespeare), about 3M parameters",
        "test/bpc", None, {"rnn": 1.48, "lstm": 1.36, "gru": 1.37}, None)],
}


def reaches_threshold(value: float, baseline: float | None, threshold: float) -> bool | None:
    """Whether a published loss solves the task by rnnlab's rule (skill = 1 - value / baseline
    >= threshold); None where the paper's setting has no trivial baseline to measure from."""
    if baseline is None or baseline <= 0:
        return None
    return 1 - value / baseline >= threshold
