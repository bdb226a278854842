"""The committed pages hold together: every relative link and image in a tracked Markdown file
(README, experiment reports, the bench's results) points at a file that exists, so a report
regenerated without a figure, or a study moved, shows up here rather than as a broken page."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")  # [text](target) and ![alt](target), anchor dropped


def test_relative_links_in_tracked_pages_resolve():
    pages = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert "README.md" in pages and any(p.endswith("REPORT.md") for p in pages)
    broken = [(page, target) for page in pages
              for target in LINK.findall((ROOT / page).read_text(encoding="utf-8"))
              if not target.startswith(("http://", "https://", "mailto:")) and not (ROOT / page).parent.joinpath(
                  target).exists()]
    assert not broken, f"links to nothing: {broken}"
