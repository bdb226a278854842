"""Published numbers a report puts beside its own, with their settings, so that a reader sees
where rnnlab agrees with the literature and where the settings differ too much to say.

Each entry is quoted from its table, never rounded or inferred; the settings say what differs
from a rnnlab run (length, parameters, data). An entry belongs to its task
(``Task.published`` in ``rnnlab/tasks/<name>.py``), never to the report's text.
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
ZOOLOGY = "Arora, Eyuboglu et al. 2023, \"Zoology: measuring and improving recall in efficient language models\""
MAMBA = "Gu & Dao 2023, \"Mamba: linear-time sequence modeling with selective state spaces\""
FENG_2024 = "Feng et al. 2024, \"Were RNNs all we needed?\""
SEQ_ICL = "Akyürek et al. 2024 (berlino/seq_icl), its README's associative recall table, Aug 2023 - Jan 2024"

def published(task: str) -> tuple[Published, ...]:
    """The entries task ``task`` declares (``Task.published``); none for a task this checkout
    does not register."""
    from rnnlab.tasks.registry import find  # imports the task class: not at this module's import

    cls = find(task)
    return tuple(cls.published) if cls is not None else ()


def reaches_threshold(value: float, baseline: float | None, threshold: float, mode: str = "min") -> bool | None:
    """Whether a published number solves the task by rnnlab's rule, skill >= threshold, with skill
    as ``Task.skill`` has it: ``1 - value / baseline`` for a loss (``mode`` min), ``(value -
    baseline) / (1 - baseline)`` for an accuracy (max); None where the paper's setting has no
    trivial baseline to measure from."""
    if baseline is None:
        return None
    if mode == "max":
        return baseline < 1 and (value - baseline) / (1 - baseline) >= threshold
    if baseline <= 0:
        return None
    return 1 - value / baseline >= threshold
