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
    """Lay out, write and close ``fig``; return the path as a string (for artifact lists)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return str(path)
