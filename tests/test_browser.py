"""The links a run prints, opened in a real browser: headless Chromium (Debian's package) driven by
Playwright, against ``mlflow ui`` over a store that a small sweep trained into.

MLflow 3.17's UI opens an experiment in its GenAI mode (a traces overview, a "Detect Issues" popup)
unless the URL or the browser's localStorage says ``workflowType=machine_learning``; a user who
follows the printed link has neither, so every page is opened in a fresh browser context and
nothing is clicked. Screenshots go to ``$RNNLAB_SCREENSHOTS`` (else the test's tmp dir).

The README's pictures of the comparison view are taken by this file too, so that they are
regenerated rather than hand-made: ``test_readme_screenshots`` runs the README's Quickstart sweep
and saves the view it prints first (table and charts) to docs/images/. It runs only when asked::

    RNNLAB_DOCS_IMAGES=docs/images .venv/bin/python -m pytest tests/test_browser.py -q -k readme

Needs ``apt-get install chromium`` and ``pip install playwright`` (never ``playwright install``:
the browser is Debian's, at ``$RNNLAB_CHROMIUM``, default /usr/bin/chromium)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import ROOT, free_port
from rnnlab import sweep

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("RNNLAB_CHROMIUM", "/usr/bin/chromium")
# headless Chromium as root in a container: no sandbox (needs user namespaces), no GPU, and a
# /dev/shm that may be small
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
INSTALL = ("the browser test needs Debian's Chromium and Playwright's Python client:\n"
           "  sudo apt-get update && sudo apt-get install -y chromium\n"
           "  .venv/bin/pip install playwright\n"
           "(do not run `playwright install`: the test drives {chromium}, set RNNLAB_CHROMIUM to use another)")
FIRST_PAINT_MS = 120_000  # the first element of a page: a cold server and a 20 MB bundle on 2 slow cores
THEN_MS = 30_000          # every element after it
SUMMARY = re.compile(r"^MLflow run (?P<run_id>[0-9a-f]{32}) in experiment '(?P<experiment>[^']+)' "
                     r"\((?P<status>[A-Z]+)\): (?P<url>\S+)$", re.M)


def require_browser():
    """Playwright's ``sync_playwright``. Without Chromium (or Playwright) the test is skipped,
    with the reason in pytest's summary, so that ``make test`` passes on a machine that has
    no browser; under CI (``CI=true``, where .ci/run installs it) it fails instead."""
    message = INSTALL.format(chromium=CHROMIUM)
    missing = None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing = f"no Chromium at {CHROMIUM} (make browser installs Debian's)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = f"Playwright is not installed in {sys.prefix}"
    if missing is None:
        return sync_playwright
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{missing}; {message}", pytrace=False)
    pytest.skip(missing)


@contextlib.contextmanager
def mlflow_ui(uri: str, folder: Path):
    """``mlflow ui`` on 127.0.0.1 at a free port, in its own process group, stopped (the whole
    group) whatever happens; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = folder / "mlflow-ui.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-worker processes
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow ui did not start ({log}):\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield base
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def fresh_page(browser, url: str, shots: Path, name: str):
    """``url`` in a new browser context (no cookies, no localStorage); on failure, a screenshot
    ``FAILED-<name>.png`` and the page's uncaught errors."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(THEN_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url, wait_until="load", timeout=FIRST_PAINT_MS)
        yield page
    except BaseException as e:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shots / f"FAILED-{name}.png"))
        if errors and isinstance(e, AssertionError):
            raise AssertionError(f"{e}\nuncaught errors in the page: {errors}") from e
        raise
    finally:
        context.close()


def here(url: str, base: str) -> str:
    """A printed link, pointed at the test's own ``mlflow ui``."""
    return urlunsplit(urlsplit(url)._replace(scheme="http", netloc=urlsplit(base).netloc))


def expect_model_training_mode(page, expect, experiment_id: str) -> None:
    """The sidebar is the model-training one (Runs, Models, Traces) and nothing of GenAI mode is
    there: no traces overview, no Judges or Evaluation runs, no "Detect Issues"."""
    runs_nav = page.locator(f'nav a[href^="#/experiments/{experiment_id}/runs"]')
    expect(runs_nav).to_have_text("Runs")  # model-training mode only: GenAI's sidebar has "Evaluation runs"
    for genai in ["/overview/", "/evaluation-runs", "/judges", "/chat-sessions"]:
        expect(page.locator(f'a[href*="{genai}"]'), f"GenAI link {genai} on the page").to_have_count(0)
    expect(page.get_by_text("Detect Issues")).to_have_count(0)
    assert "workflowType=machine_learning" in page.url and "/overview" not in page.url, page.url


def test_printed_links_open_the_runs_in_model_training_mode(store, tmp_path):
    sync_playwright = require_browser()
    from playwright.sync_api import expect

    expect.set_options(timeout=THEN_MS)
    shots = Path(os.environ.get("RNNLAB_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    for stale in shots.glob("FAILED-*.png"):
        stale.unlink()

    proc = store.train("-m", "task=adding", "cell=rnn,gru", "seq_len=10", f"hydra.sweep.dir={store.dir / 'sweep'}")
    lines = proc.stdout.splitlines()
    printed = {m["run_id"]: m for m in SUMMARY.finditer(proc.stdout)}
    assert len(printed) == 2, f"expected a summary per job:\n{proc.stdout[-3000:]}"

    # 4. the sweep's parent run ended FINISHED, with its two children
    runs = store.runs("adding")
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED", parent.info.status
    assert parent.data.metrics["sweep/finished"] == 2
    # the first link printed after the sweep's summary: its comparison view (rnnlab.views)
    first = next(line for line in lines[lines.index(next(x for x in lines if x.startswith("sweep FINISHED"))):]
                 if "http" in line)
    assert first.startswith("compare the cells (table, grouped by cell): http"), first
    view_url, charts_url, report_url = (re.search(rf"{what}: (\S+)", proc.stdout).group(1) for what in
                                        (r"compare the cells \(table, grouped by cell\)",
                                         r"compare the cells \(charts\)", "the sweep's report"))
    assert sorted(r.info.run_id for r in children) == sorted(printed)
    assert sweep.wait_for_report(store.dir / "sweep") == 0  # drawn in the background, as the user's is

    gru = next(r for r in children if r.data.tags["cell"] == "gru")
    summary = printed[gru.info.run_id]
    assert summary["status"] == "FINISHED"
    link_line = lines.index(summary.group(0))
    verdict = lines[link_line - 1]  # the line above the link: what the run's description holds
    assert verdict.startswith("GRU, adding, T=10, clip 1.0: test/mse"), verdict
    assert gru.data.tags["mlflow.note.content"] == verdict
    experiment_id = gru.info.experiment_id

    with mlflow_ui(store.uri, tmp_path) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # 1, 2. the printed link, pointed at this server, opens on the run's overview in
            # model-training mode, its description the verdict line
            printed_url = urlsplit(summary["url"])
            run_url = urlunsplit(printed_url._replace(scheme="http", netloc=urlsplit(base).netloc))
            with fresh_page(browser, run_url, shots, "run-page") as page:
                expect(page.get_by_test_id("runs-header")).to_contain_text(gru.info.run_name, timeout=FIRST_PAINT_MS)
                expect_model_training_mode(page, expect, experiment_id)
                assert f"/runs/{gru.info.run_id}" in page.url, page.url
                expect(page.get_by_role("tab", name="Overview", selected=True)).to_be_visible()
                expect(page.get_by_role("cell", name="test/mse", exact=True)).to_be_visible()
                expect(page.get_by_role("cell", name="cell.name", exact=True)).to_be_visible()
                description = page.get_by_test_id("note-editor-preview-content")
                expect(description).to_have_text(verdict)
                page.screenshot(path=str(shots / "1-run-page.png"))
                description.scroll_into_view_if_needed()
                box = description.bounding_box()  # with the "Description" heading above it
                assert box is not None
                page.screenshot(path=str(shots / "2-run-description.png"), clip={
                    "x": max(box["x"] - 24, 0), "y": max(box["y"] - 60, 0), "width": box["width"] + 48,
                    "height": box["height"] + 84})

            # 3. the experiment's runs-table link: the table, the sweep's parent in it (its two
            # children are nested under it, collapsed: 3 runs in all), with no click
            table_url = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            with fresh_page(browser, table_url, shots, "runs-table") as page:
                parent_link = page.locator(f'[role="gridcell"] a[href$="/runs/{parent.info.run_id}"]')
                expect(parent_link).to_have_text(parent.info.run_name, timeout=FIRST_PAINT_MS)
                expect(page.get_by_text(re.compile(rf"^\s*{len(runs)} matching runs\s*$"))).to_be_visible()
                expect(page.get_by_test_id("sort-header-Run Name")).to_be_visible()
                expect_model_training_mode(page, expect, experiment_id)
                page.screenshot(path=str(shots / "3-runs-table.png"))

            # 5. the first printed link: this sweep's jobs only, grouped by cell, with the columns
            # that compare them, sorted by test/skill; no click
            with fresh_page(browser, here(view_url, base), shots, "comparison-table") as page:
                for kind, name in [("metrics", "test/skill"), ("metrics", "test/mse"), ("metrics", "baseline/mse"),
                                   ("params", "seq_len"), ("params", "clip")]:
                    header = page.locator(f'[role="columnheader"][col-id="{kind}.`{name}`"]')
                    expect(header).to_have_text(name, timeout=FIRST_PAINT_MS)
                groups = page.get_by_text(re.compile(r"^Group: (rnn|gru)$"))  # one row per cell
                expect(groups).to_have_count(2)
                assert sorted(groups.all_inner_texts()) == ["Group: gru", "Group: rnn"]
                expect(page.get_by_text(re.compile(r"^\s*2 matching runs\s*$"))).to_be_visible()
                expect(page.locator(f'[role="gridcell"] a[href$="/runs/{parent.info.run_id}"]')).to_have_count(0)
                expect_model_training_mode(page, expect, experiment_id)
                page.screenshot(path=str(shots / "5-comparison-table.png"))

            # 6. its charts: the comparison first, in order; no bookkeeping (sweep/*, baseline/*)
            with fresh_page(browser, here(charts_url, base), shots, "comparison-charts") as page:
                expect(page.get_by_text("compare the cells", exact=False).first).to_be_visible(timeout=FIRST_PAINT_MS)
                titles = page.locator('[data-testid="experiment-view-compare-runs-card-title"], '
                                      '.drag-handle + * [title], [role="heading"]')
                time.sleep(3)  # the cards draw after their section
                text = page.locator("main").inner_text()
                order = [text.find(t) for t in ("seq_len vs", "val/mse", "grad_norm/pre_clip", "grad_flow/horizon")]
                assert -1 not in order and order == sorted(order), (order, titles.count())
                for bookkeeping in ("sweep/finished", "baseline/mse", "perf/tokens_per_s"):
                    assert bookkeeping not in text, bookkeeping
                page.screenshot(path=str(shots / "6-comparison-charts.png"))

            # 7. the report link opens REPORT.md rendered, not the folder
            with fresh_page(browser, here(report_url, base), shots, "report") as page:
                expect(page.get_by_role("heading", name="Report: experiment adding")).to_be_visible(
                    timeout=FIRST_PAINT_MS)  # the Markdown rendered: its headings, not '# Report'
                expect(page.get_by_role("heading", name="Final test metric", exact=True)).to_be_visible()
                expect(page.get_by_text("Select a file to preview")).to_have_count(0)
                page.screenshot(path=str(shots / "7-report.png"))

            # 8. the sweep's comparison, an artifact of its parent run, renders in the artifact view
            figure = "report/metric_vs_length.png"
            figure_url = f"{base}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts/{figure}" \
                         "?workflowType=machine_learning"
            with fresh_page(browser, figure_url, shots, "sweep-comparison") as page:
                expect(page.get_by_text(figure, exact=True).first).to_be_visible(timeout=FIRST_PAINT_MS)
                expect(page.get_by_text("REPORT.md", exact=True)).to_be_visible()
                image = page.locator('img[src^="blob:"]').first  # the figure itself, fetched from the store
                expect(image).to_be_visible()
                assert page.evaluate("img => img.naturalWidth", image.element_handle()) > 300
                page.screenshot(path=str(shots / "8-sweep-comparison.png"))
        finally:
            browser.close()
    check_a_committed_study_opens_with_its_view(store, tmp_path, shots, sync_playwright, expect)


def check_a_committed_study_opens_with_its_view(store, tmp_path, shots, sync_playwright, expect):
    """9. The same runs exported as a committed study (report.py --export) and loaded the way
    `make open-study` loads one, into a store of their own: the printed link opens the sweep's
    comparison view there, grouped by cell, with the report logged to the parent run."""
    study, opened = tmp_path / "study", tmp_path / "opened"
    export = subprocess.run([sys.executable, str(ROOT / "src" / "report.py"), "--experiment", "adding",
                             "--tracking-uri", store.uri, "--out", str(study), "--export", "--no-log"],
                            capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "open_study.py"), str(study), "--store",
                           str(opened / "mlflow.db")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^study: 3 runs in sqlite:///\S+ \(loaded in [\d.]+ s\)$", proc.stdout, re.M), proc.stdout
    view_url = re.search(r"table:  (\S+)", proc.stdout).group(1)
    with mlflow_ui(f"sqlite:///{opened / 'mlflow.db'}", opened) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            with fresh_page(browser, here(view_url, base), shots, "opened-study") as page:
                header = page.locator('[role="columnheader"][col-id="metrics.`test/skill`"]')
                expect(header).to_have_text("test/skill", timeout=FIRST_PAINT_MS)
                groups = page.get_by_text(re.compile(r"^Group: (rnn|gru)$"))
                expect(groups).to_have_count(2)
                expect(page.get_by_text(re.compile(r"^\s*2 matching runs\s*$"))).to_be_visible()
                page.screenshot(path=str(shots / "9-opened-study.png"))
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------
# The README's screenshots (only with $RNNLAB_DOCS_IMAGES set: not part of the suite's checks)

# The README's Quickstart sweep: `make sweep ARGS='task=adding seq_len=25,100 clip=1.0 seed=0'`
README_SWEEP = ["+experiment=long_range", "task=adding", "seq_len=25,100", "clip=1.0", "seed=0"]


def test_readme_screenshots(store, tmp_path):
    """The comparison view of the README's Quickstart sweep, as its first printed link opens it,
    saved to ``$RNNLAB_DOCS_IMAGES`` (relative to the repository): comparison-table.png and
    comparison-charts.png. MLflow's assistant panel is closed and the shared-view banner hidden
    first, so the picture shows the comparison; nothing else is clicked."""
    docs = os.environ.get("RNNLAB_DOCS_IMAGES")
    if not docs:
        pytest.skip("writes the README's screenshots only when RNNLAB_DOCS_IMAGES names a folder")
    folder = Path(docs) if Path(docs).is_absolute() else ROOT / docs
    folder.mkdir(parents=True, exist_ok=True)
    sync_playwright = require_browser()
    from playwright.sync_api import expect

    expect.set_options(timeout=THEN_MS)
    proc = store.train(*README_SWEEP, f"hydra.sweep.dir={store.dir / 'sweep'}", tiny=False, timeout=1200)
    view_url, charts_url = (re.search(rf"{what}: (\S+)", proc.stdout).group(1) for what in
                            (r"compare the cells \(table, grouped by cell\)", r"compare the cells \(charts\)"))
    with mlflow_ui(store.uri, tmp_path) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # (the table ends after its 6 rows: a shorter window leaves out the empty space below)
            for url, name, height in [(view_url, "comparison-table.png", 730),
                                      (charts_url, "comparison-charts.png", 1000)]:
                with fresh_page(browser, here(url, base), tmp_path, name) as page:
                    expect(page.get_by_text(re.compile(r"^\s*6 matching runs\s*$"))).to_be_visible(
                        timeout=FIRST_PAINT_MS)
                    for control in ("mlflow.assistant.chat_panel.close", "mlflow.experiment_page.shared_view.dismiss"):
                        button = page.locator(f'[data-component-id="{control}"]')
                        if button.count():
                            button.first.click()
                    page.set_viewport_size({"width": 1600, "height": height})
                    time.sleep(3)  # the charts draw after their section
                    page.screenshot(path=str(folder / name))
        finally:
            browser.close()
