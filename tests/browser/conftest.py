"""Fixtures of the browser tests: Chromium, a page, and a dashboard over an empty runs directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from dashboard_driver import CHROMIUM, VIEWPORT, kill_jobs_left_running, launch_chromium, running_dashboard


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """`python app.py` on a free port with an empty runs directory; yields (url, runs_dir)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    try:
        with running_dashboard(runs_dir, runs_dir.parent / "dashboard.log") as (url, _):
            yield url, runs_dir
    finally:
        kill_jobs_left_running(runs_dir)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture
def runs_dir(tmp_path):
    """An empty runs directory for one test; a training job the test leaves running is killed after it."""
    folder = tmp_path / "runs"
    folder.mkdir()
    yield folder
    kill_jobs_left_running(folder)
