"""The Train tab's dataset preview on a fresh page: a dataset chosen before the page's own first
preview has arrived is the one the preview shows, and stays so once the page load's work is done."""

from __future__ import annotations

import pytest
from dashboard_driver import choose, screenshot, wait_for_text, wait_until

pytestmark = pytest.mark.browser


def test_a_dataset_chosen_while_the_page_loads_keeps_its_preview(dashboard, page):
    url, _ = dashboard
    page.goto(url)
    page.wait_for_selector("#dataset-choice")
    # The page load previews the default dataset (wordle) and checks the reward code; the choice
    # below is made before that has finished, on a dashboard that has not loaded a tokenizer yet.
    choose(page, "dataset-choice", "arithmetic")
    wait_for_text(page.locator("#dataset-message"), r"preset 'arithmetic'")
    wait_until(page.locator("#check-message").inner_text, r"\S")  # the page load's work is done
    page.wait_for_timeout(1000)
    assert "preset 'arithmetic'" in page.locator("#dataset-message").inner_text()
    assert "wordle" not in page.locator("#dataset-message").inner_text()
    preview = page.locator("#dataset-preview").inner_text()
    assert "What is" in preview or "=" in preview, preview
    screenshot(page, "train-dataset-chosen-while-loading")
