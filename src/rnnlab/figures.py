"""Matplotlib for files only (no display): the backend choice and the save-and-close every
artifact plot ends with, in one place."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path | str, dpi: int = 120) -> str:
    """Lay out, write and close ``fig``; return the path as a string (for artifact lists).

    A figure made with a layout engine of its own (``layout="constrained"``, which the report's
    legends below the panels need) keeps it: ``tight_layout`` would replace it, with a warning.
    So does one whose margins were set with ``subplots_adjust`` (cheaper to draw)."""
    if fig.get_layout_engine() is None and not _adjusted(fig):
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return str(path)


def _adjusted(fig) -> bool:
    """Whether ``fig.subplots_adjust`` moved the margins away from matplotlib's defaults."""
    from matplotlib.figure import SubplotParams

    p, default = fig.subplotpars, SubplotParams()  # the rc defaults
    return any(getattr(p, k) != getattr(default, k) for k in ("left", "right", "bottom", "top"))
