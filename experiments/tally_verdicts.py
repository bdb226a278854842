"""How many of a report's *established* verdicts held when it was re-issued under the calibrated
rule: the counts experiments/README.md gives ("30 of its 68 old table verdicts held").

    python experiments/tally_verdicts.py <(git show <old commit>:experiments/X/REPORT.md) experiments/X/REPORT.md

Reads every Markdown table with a ``verdict`` column (the paired differences, and the tuned
pages' tuned-vs-default tables) under its ``### <task>`` heading, matches the old page's rows to
the new page's by the columns that name a comparison (everything but the numbers), and lists
each old established verdict as held (the same cell better, established) or fell (not
established, or the other cell). Rows only one page has are counted apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The columns that name a comparison; every other column holds numbers, which a re-run changes.
IDENTITY = {"cell", "cells", "seq_len", "lookback seq_len", "task.distance", "size", "clip", "T", "difference"}


def tables(text: str) -> dict[tuple, str]:
    """{(heading, key columns...): verdict} for every table with a verdict column."""
    out: dict[tuple, str] = {}
    heading, lines = "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("## ", "### ")):
            heading = line.lstrip("#").split(":")[0].strip()
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= set("-: "):
            header = [c.strip() for c in line.strip("|").split("|")]
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                verdicts = [h for h in header if h == "verdict" or h.startswith("verdict, ")]
                if verdicts and len(cells) == len(header):
                    key = tuple(f"{h}={c}" for h, c in zip(header, cells) if h in IDENTITY)
                    for v in verdicts:
                        if (heading, *key, v) in out:  # two rows one key: a column this file does not know
                            raise SystemExit(f"two rows compare {key} under '{heading}': add their column to IDENTITY")
                        out[(heading, *key, v)] = cells[header.index(v)]
                i += 1
            continue
        i += 1
    return out


def core(verdict: str) -> str:
    """The verdict without the p-value a tuned page appends (``gru better (established), p = 0.004``)."""
    return verdict.split(", p =")[0].strip()


def established(verdict: str) -> bool:
    return "(established)" in verdict or verdict.endswith("established") and "not established" not in verdict


def main(old_path: str, new_path: str) -> int:
    old, new = tables(Path(old_path).read_text()), tables(Path(new_path).read_text())
    was = {k: v for k, v in old.items() if established(v)}
    held = {k for k, v in was.items() if k in new and established(new[k]) and core(new[k]) == core(v)}
    fell = {k for k in was if k in new and k not in held}
    print(f"old established verdicts: {len(was)}; held {len(held)}; fell {len(fell)}; "
          f"not on the new page {len(set(was) - set(new))}")
    both = set(old) & set(new)
    newly = sorted(k for k in both if established(new[k]) and not established(old[k]))
    print(f"verdicts on both pages: {len(both)}; only old {len(set(old) - set(new))}; "
          f"only new {len(set(new) - set(old))}; newly established {len(newly)}")
    for k in sorted(fell):
        print("  fell:", " | ".join(k), "::", was[k], "->", new[k])
    for k in newly:
        print("  new: ", " | ".join(k), "::", old[k], "->", new[k])
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
