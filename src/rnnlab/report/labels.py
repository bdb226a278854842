"""How the report names and orders its rows: clip, cell, size, variant and length labels, and the
row order every table and figure follows. Plain functions of labels and frames, shared by all
the other steps.
"""

from __future__ import annotations

import math

import pandas as pd

from rnnlab.config import CELLS
from rnnlab.tasks.registry import find

CELL_ORDER = CELLS
# A task or cell parameter that a report's runs vary splits the task into separate problems (a
# forecast series) or the cell into separate arms (the LSTM's forget-gate bias): the label then
# names it, ``forecast (series=seattle_temps)``, ``lstm (forget_bias=0)``. Not these: they are
# the length, the seed and the sizing, which have columns of their own.
NOT_VARIANTS = {"task._target_", "task.seq_len", "task.batch_size", "task.seed", "task.distance",
                "cell.name", "cell.hidden_size"}
# Parameters that mean something for one value of another only (forecast: tau and length are
# Mackey-Glass's) are left out of the label elsewhere: each task says which (``Task.only_for``).


def only_for(group: str, name: str) -> dict[str, tuple[str, str]]:
    """Task ``name``'s parameters that apply for one value of another only; none for a cell."""
    cls = find(base(name)) if group == "task" else None
    return dict(cls.only_for) if cls is not None else {}


def clip_order(label: str) -> tuple[int, float]:
    """Clipped values in increasing order, then no clipping."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, 0.0)


def cell_order(cell: str) -> tuple[int, str]:
    """rnn, lstm, gru (each cell's variants after it, by label), then unknown cells by name."""
    b = base(cell)
    return (CELL_ORDER.index(b), cell) if b in CELL_ORDER else (len(CELL_ORDER), cell)


def variant_labels(raw: pd.DataFrame, names: pd.Series, group: str) -> pd.Series:
    """``names`` (the task or cell of each run) with the ``params.<group>.*`` that vary among the
    runs of that name appended: ``lstm (forget_bias=0)``; unchanged where nothing varies."""
    cols = [c for c in raw.columns if c.startswith(f"params.{group}.") and c[len("params."):] not in NOT_VARIANTS]
    out = names.astype(object).copy()
    for name in names.dropna().unique():
        rows = names == name
        shown = {c: raw.loc[rows, c].map(_param_text) for c in cols}
        for c, v in shown.items():
            other = only_for(group, name).get(c[len("params."):])
            if other is not None and f"params.{other[0]}" in raw:
                shown[c] = v.where(raw.loc[rows, f"params.{other[0]}"].astype(str) == other[1])
        varying = sorted(c for c, v in shown.items() if v.dropna().nunique() > 1)
        for i in names.index[rows]:
            parts = [f"{c.rsplit('.', 1)[1]}={shown[c][i]}" for c in varying if pd.notna(shown[c][i])]
            if parts:
                out[i] = f"{name} ({', '.join(parts)})"
    return out


def _param_text(value) -> str | None:
    """A param as a label shows it: numbers without trailing zeros (``0``, ``17``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def base(label: str) -> str:
    """The task or cell a label names, without its variant: ``lstm (forget_bias=0)`` -> ``lstm``."""
    return str(label).split(" (", 1)[0]


def size_label(budget: pd.Series, hidden: pd.Series) -> pd.Series:
    """How a run's model was sized: ``33,000 params`` (``model.param_budget``: every cell the
    same parameter count) or ``hidden 64`` (the same hidden size). Tables show it only when a
    report holds both, and compare cells only within one."""
    return pd.Series([f"{int(b):,} params" if pd.notna(b) else f"hidden {int(h)}" if pd.notna(h) else "—"
                      for b, h in zip(budget, hidden)], index=budget.index, dtype=object)


def sizes_vary(df: pd.DataFrame) -> bool:
    return "size" in df and df["size"].nunique() > 1


def as_figure_arms(df: pd.DataFrame) -> pd.DataFrame:
    """For the figures, whose line style is the clip value: where sizes vary, the style is
    clip and size together (``1.0, 33,000 params``)."""
    if not sizes_vary(df):
        return df
    return df.assign(clip=[f"{c}, {z}" for c, z in zip(df["clip"], df["size"])])


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Tables read cell by cell (rnn, lstm, gru), short to long, clipped before unclipped,
    equal hidden size before equal budget."""
    order = df.assign(_c=df["cell"].map(cell_order), _k=df["clip"].map(clip_order),
                      _z=df["size"].map(size_order) if "size" in df else 0)
    by = [c for c in ("task", "_c", "x", "seq_len", "_k", "_z", "seed") if c in order.columns]
    return order.sort_values(by, kind="stable").drop(columns=["_c", "_k", "_z"])


def size_order(label: str) -> tuple[int, float]:
    """Equal hidden size (the default sizing) first, then parameter budgets, small to large."""
    head, _, _ = str(label).partition(" params")
    try:
        return (1, float(head.replace(",", "")))
    except ValueError:
        return (0, 0.0)


def length_label(task: str, runs: pd.DataFrame) -> str:
    """What ``x`` is for this task: ``task.distance`` when its runs vary it, else seq_len."""
    if runs[runs["task"] == task]["distance"].notna().any():
        return "task.distance"
    cls = find(base(task))
    return cls.length_label if cls is not None else "seq_len"
