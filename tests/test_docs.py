"""The committed pages hold together.

- Every relative link and image in a tracked Markdown file (README, docs/, experiment reports,
  the bench's results) points at a file that exists, and a link to a section at a heading that
  exists, so a report regenerated without a figure, or a page or section moved, shows up here
  rather than as a broken page. A repository path named in a comment, docstring or page
  (``experiments/recall_study/pilots.md``) names a file that exists.
- No tracked text file holds an absolute path of one machine (``/work/``, ``/tmp/``, ...): a
  command copied from a page must work in any clone.
- The key tables of the documentation (README.md and docs/*.md) give the defaults that Hydra
  composes from conf/, and docs/configuration.md lists every key there is.
- The README stays a front page, and `make` alone prints the help it points to first.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, compose

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")  # [text](target) and ![alt](target), anchor dropped
ANCHORED = re.compile(r"\]\(([^)#\s]*\.md)?#([^)\s]+)\)")  # [text](page.md#anchor), [text](#anchor)
IMG = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']")  # <img src="..."> (an image given a width)


def tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.split()


def targets(text: str) -> list[str]:
    return LINK.findall(text) + IMG.findall(text)


def test_the_link_patterns_find_what_a_page_can_hold():
    text = '[a](docs/x.md) ![b](img/y.png) <img src="img/z.png" width="400"> [c](#same-page) [d](p.md#sec)'
    assert targets(text) == ["docs/x.md", "img/y.png", "p.md", "img/z.png"]
    assert ANCHORED.findall(text) == [("", "same-page"), ("p.md", "sec")]


def test_relative_links_in_tracked_pages_resolve():
    pages = tracked("*.md")
    assert "README.md" in pages and any(p.endswith("REPORT.md") for p in pages)
    assert any(p.startswith("docs/") for p in pages)
    broken = [(page, target) for page in pages
              for target in targets((ROOT / page).read_text(encoding="utf-8"))
              if not target.startswith(("http://", "https://", "mailto:")) and not (ROOT / page).parent.joinpath(
                  target).exists()]
    assert not broken, f"links to nothing: {broken}"


def anchors(page: Path) -> set[str]:
    """The anchors a code host gives a page's headings: lower case, punctuation dropped, spaces
    as hyphens (GitHub's rule, without its -1, -2 for repeated headings)."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_links_to_a_section_name_one_that_exists():
    pages = tracked("*.md")
    broken = [(page, f"{target}#{anchor}") for page in pages
              for target, anchor in ANCHORED.findall((ROOT / page).read_text(encoding="utf-8"))
              if (ROOT / page).parent.joinpath(target or Path(page).name).is_file()
              and anchor not in anchors((ROOT / page).parent.joinpath(target or Path(page).name))]
    assert not broken, f"links to sections that do not exist: {broken}"


# A repository path in a comment, docstring or page (``experiments/recall_study/pilots.md``), not
# a Markdown link: the link test does not see it, and it goes stale when a file moves.
REPO_PATH = re.compile(r"(?<![\w/.-])((?:experiments|docs|conf|src|tests)/[\w./-]*\w\.(?:md|py|yaml|png|sh|parquet))\b")
PLACEHOLDER = re.compile(r"/(?:[A-Z]+|x|<[^>]*>)(?:/|\.)")  # experiments/EXP/REPORT.md, docs/x.md


def test_repository_paths_named_in_tracked_files_exist():
    """The tests that write a file (the recipe's new cell) name paths that exist only while they
    run; a path git ignores (the smoke grid's report) is made by a command."""
    names = [n for n in tracked() if n.endswith((".py", ".yaml", ".md", ".sh", ".toml")) or n == "Makefile"]
    found = [(name, n, path) for name in names if not name.startswith("tests/")
             for n, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1)
             for path in REPO_PATH.findall(line)
             if not (ROOT / path).exists() and not PLACEHOLDER.search(path)]
    ignored = set(subprocess.run(["git", "check-ignore", "--stdin"], cwd=ROOT, capture_output=True, text=True,
                                 input="\n".join(p for _, _, p in found)).stdout.split())
    missing = [f"{name}:{n}: {path}" for name, n, path in found if path not in ignored]
    assert not missing, "paths to files that do not exist:\n" + "\n".join(missing)


def test_the_repository_path_rule_catches_what_it_should():
    line = "# Pilots (experiments/recall_study/discussion.md); see conf/tune/recall.yaml and src/rnnlab/run.py."
    assert REPO_PATH.findall(line) == ["experiments/recall_study/discussion.md", "conf/tune/recall.yaml",
                                       "src/rnnlab/run.py"]
    assert not REPO_PATH.findall("sqlite:///x/experiments/a.md or ../docs/b.md")
    assert PLACEHOLDER.search("experiments/EXP/REPORT.md") and not PLACEHOLDER.search("docs/ui.md")


# ---------------------------------------------------------------------------------------------
# Machine paths

MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home)/")
# Files that must name such a path: the rule itself, and the tests that write to a scratch dir.
MAY_NAME_MACHINE_PATHS = {"tests/test_docs.py"}


def is_text(path: Path) -> bool:
    head = path.read_bytes()[:8192]
    return b"\0" not in head


def test_no_tracked_file_holds_a_machine_path():
    """``sqlite:////work/...`` or ``/home/me/...`` in a committed file only works on the machine
    that wrote it. A page says ``<repo>``, ``path/to/...`` or a relative path instead."""
    found = []
    for name in tracked():
        path = ROOT / name
        if name in MAY_NAME_MACHINE_PATHS or not path.is_file() or not is_text(path):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{name}:{n}: {line.strip()[:120]}")
    assert not found, "absolute machine paths in tracked files:\n" + "\n".join(found)


def test_the_machine_path_rule_catches_what_it_should():
    for bad in ["sqlite:////work/main/mlflow.db", "see /tmp/x.db", "`/root/.cache`", "(/home/me/data.txt)"]:
        assert MACHINE_PATH.search(bad), bad
    for fine in ["sqlite:///<repo>/mlflow.db", "path/to/text.txt", "experiments/work/x", "a/tmp/b", "~/work/"]:
        assert not MACHINE_PATH.search(fine), fine


# ---------------------------------------------------------------------------------------------
# Key tables
#
# A key table is a Markdown table whose first column is headed `key`. Each row documents one key
# (its first `backticked` path). Its value columns are either
#   - `default`: the value composed with the choices named in the section's heading, written as
#     `group=name` in backticks (### `task=forecast`), none for the root config; or
#   - named after an option of a config group (rnn, lstm, ... for conf/cell/): the value composed
#     with that option.
# A value is a YAML literal in backticks, or `—` for a key that this choice does not have.

GROUPS = ("cell", "task", "trainer", "tracking", "diagnostics")
ABSENT = "—"
HEADING_CHOICE = re.compile(r"`(\w+)=(\w+)`")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def key_tables(page: Path):
    """Yield (heading choices, header, row cells, line number) for every row of every key table."""
    choices: tuple[str, ...] = ()
    lines = page.read_text(encoding="utf-8").splitlines()
    header: list[str] | None = None
    for n, line in enumerate(lines, 1):
        if line.startswith("#"):
            choices = tuple(f"{g}={o}" for g, o in HEADING_CHOICE.findall(line) if g in GROUPS)
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells if cells[0] == "key" else []
            continue
        if not header or set(line) <= set("|-: "):
            continue
        assert len(cells) == len(header), f"{page.name}:{n}: {len(cells)} cells for {len(header)} columns " \
                                          "(a '|' inside a cell?)"
        yield choices, header, cells, n


def parse_value(cell: str):
    text = cell.strip()
    if text == ABSENT:
        return ABSENT
    m = re.fullmatch(r"`([^`]*)`", text)
    assert m, f"not a backticked value or {ABSENT}: {cell!r}"
    value = OmegaConf.create(f"v: {m.group(1)}")["v"]  # YAML as OmegaConf reads conf/ (3e-3 is a float)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def composed(overrides: tuple[str, ...], cache: dict = {}):  # noqa: B006 - a cache across calls
    if overrides not in cache:
        cache[overrides] = compose(*overrides)
    return cache[overrides]


def lookup(cfg, key: str):
    value = OmegaConf.select(cfg, key, default=ABSENT, throw_on_missing=False)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def documented_defaults():
    """{(overrides, key): (documented value, where)} over README.md and docs/*.md."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    out: dict[tuple[tuple[str, ...], str], tuple[object, str]] = {}
    for page in pages:
        for choices, header, cells, n in key_tables(page):
            key = re.search(r"`([\w.]+)`", cells[0])
            assert key, f"{page.name}:{n}: no `key` in {cells[0]!r}"
            for column, cell in zip(header[1:], cells[1:]):
                if column == "default":
                    overrides = choices
                elif any(column in options(g) for g in GROUPS):
                    group = next(g for g in GROUPS if column in options(g))
                    overrides = (*[c for c in choices if not c.startswith(group + "=")], f"{group}={column}")
                else:
                    continue
                out[(overrides, key.group(1))] = (parse_value(cell), f"{page.relative_to(ROOT)}:{n}")
    return out


@pytest.fixture(scope="module")
def defaults(monkeypatch_module):
    return documented_defaults()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # tracking.uri's default is what a user without it gets
        yield mp


def test_key_tables_match_the_composed_config(defaults):
    assert len(defaults) > 50, "no key tables found"
    wrong = []
    for (overrides, key), (value, where) in defaults.items():
        actual = lookup(composed(overrides), key)
        if not (actual == value and type(actual) is type(value)):
            wrong.append(f"{where}: {key} with {list(overrides) or 'the defaults'}: documented {value!r}, "
                         f"conf/ composes {actual!r}")
    assert not wrong, "key tables that differ from conf/:\n" + "\n".join(wrong)


def leaves(node, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, unresolved value) of every leaf of a plain container."""
    if isinstance(node, dict):
        return [leaf for name, v in node.items() for leaf in leaves(v, f"{prefix}{name}.")]
    return [(prefix[:-1], node)]


def test_the_configuration_page_lists_every_key(defaults):
    """Every key of the root config, of every cell and task, and of the default trainer,
    tracking and diagnostics, with its value for that choice."""
    root = OmegaConf.to_container(composed(()), resolve=False)
    assert isinstance(root, dict)
    wanted = [((), key) for key, _ in leaves({k: v for k, v in root.items() if k not in GROUPS})]
    for group in GROUPS:
        for overrides in [(f"{group}={o}",) for o in options(group)] if group in ("cell", "task") else [()]:
            node = OmegaConf.to_container(composed(overrides)[group], resolve=False)
            for key, raw in leaves(node, f"{group}."):
                if key.endswith("._target_") or (isinstance(raw, str) and raw.startswith("${") and ":" not in raw):
                    continue  # a class path, or a key that repeats a top-level one (task.seq_len: ${seq_len})
                wanted.append((overrides, key))
    missing = [f"{key} ({', '.join(overrides) or 'defaults'})" for overrides, key in wanted
               if (overrides, key) not in defaults]
    assert not missing, "keys of conf/ that docs/configuration.md does not list: " + ", ".join(missing)


# ---------------------------------------------------------------------------------------------
# The front door

README_MAX_LINES = 150


def test_the_readme_is_a_front_page():
    """What rnnlab is, the Quickstart, the comparison view and the findings; the reference
    material lives in docs/."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md is a front page: move reference material to docs/"
    assert "make help" in text.split("## Quickstart")[0], "make help is the README's first pointer"
    for image in ("docs/images/comparison-table.png", "experiments/long_range_study/metric_vs_length.png"):
        assert f"]({image})" in text, image


def test_make_alone_prints_the_help():
    if shutil.which("make") is None:
        pytest.skip("no make")
    out = subprocess.run(["make", "--no-print-directory"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    help_ = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert out == help_ and "make train" in out and "make sweep" in out, out
