"""Score tables at 1280x800 (Train's "Try on preview rows", Compare's side and two-steps tables):
every score column wide enough for its name and value, values visible without fullscreen, error
text readable. Screenshots land in tests/artifacts/screenshots/ for review."""

from __future__ import annotations

import pytest
from dashboard_driver import SCREENSHOTS, open_tab, running_dashboard, set_code, set_number, wait_for_text, wait_until

pytestmark = pytest.mark.browser

# Long function names, and one that raises: its error must be readable in the table and the notice.
TRY_CODE = (
    "def output_format_check(prompt, completion, example):\n"
    "    return float('<guess>' in completion)\n\n\n"
    "def uses_previous_feedback(prompt, completion, example):\n"
    "    return 0.5\n\n\n"
    "def guess_value(prompt, completion, example):\n"
    "    return 1 / 0\n"
)
# Each column's name, box and the first row's cell, relative to the table's visible area.
MEASURE = """(block) => {
  const view = block.querySelector('.virtual-table-viewport').getBoundingClientRect();
  const firstRow = block.querySelector('.virtual-row');
  return [...block.querySelectorAll('thead th.header-cell')].map((th, index) => {
    const box = th.getBoundingClientRect();
    const cell = firstRow.querySelectorAll('td, [role=gridcell]')[index].getBoundingClientRect();
    return {name: th.getAttribute('title'), width: box.width, height: box.height,
            right: box.right - view.left, view_width: view.width,
            cell_top: cell.top - view.top, view_height: view.height};
  });
}"""


def assert_readable(page, selector: str, must_show: tuple[str, ...]) -> None:
    columns = page.locator(selector).evaluate(MEASURE)
    assert {column["name"] for column in columns} >= set(must_show)
    for column in columns:
        assert column["height"] <= 80, column  # a header of at most three lines
        assert column["cell_top"] < column["view_height"] - 20, column  # the first row shows under it
        if column["name"] in must_show:
            assert column["width"] >= 60, column  # not squeezed to a letter a line
            assert column["right"] <= column["view_width"], column  # in view without scrolling sideways


@pytest.fixture(scope="module")
def dashboard_with_run(tiny_run_dir):
    runs_dir = tiny_run_dir.parent
    with running_dashboard(runs_dir, runs_dir.parent / "dashboard-score-tables.log") as (url, _):
        yield url, tiny_run_dir


def test_the_try_scores_are_readable_and_a_failing_function_is_a_warning(dashboard_with_run, page):
    url, _ = dashboard_with_run
    page.goto(url)
    wait_for_text(page.locator("#check-message"), r"reward functions? found")
    set_code(page, TRY_CODE)
    page.locator("#pasted-completion textarea").fill("<think>A common first word.</think> <guess>[crane]</guess>")
    page.locator("#try-rewards").click()
    message = wait_for_text(page.locator("#try-message"), r"Scored")
    assert "guess_value failed on" in message and "ZeroDivisionError: division by zero" in message
    assert page.locator("#try-message .notice-warn").count() == 1
    wait_for_text(page.locator("#try-result .virtual-row").first, r"0\.5")
    assert_readable(page, "#try-result", must_show=("output_format_check", "uses_previous_feedback", "guess_value",
                                                    "total"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#try-message").evaluate("el => el.scrollIntoView()")
    page.screenshot(path=str(SCREENSHOTS / "score-table-try.png"))
    page.locator("#try-result").screenshot(path=str(SCREENSHOTS / "score-table-try-table.png"))


def test_the_compare_tables_are_readable(dashboard_with_run, page):
    url, run_dir = dashboard_with_run
    page.goto(url)
    page.get_by_role("tab", name="Train", exact=True).wait_for()
    open_tab(page, "Compare")
    wait_until(page.locator("#compare-prompt input").input_value, r"Say something short")
    set_number(page, "compare-count", 2)
    page.locator("#compare-generate").click()
    wait_for_text(page.locator("#compare-summary-b"), rf"{run_dir.name} · step 3[\s\S]*mean total", timeout_s=90)
    page.locator("#compare-show-steps").click()
    wait_for_text(page.locator("#compare-steps-summary-b"), r"step 3[\s\S]*mean total")
    for table in ("#compare-table-a", "#compare-table-b", "#compare-steps-table-a", "#compare-steps-table-b"):
        assert_readable(page, table, must_show=("shorter_is_better", "total"))
    page.locator("#compare-table-a").evaluate("el => el.scrollIntoView()")
    page.screenshot(path=str(SCREENSHOTS / "score-table-compare.png"))
    page.locator("#compare-steps-table-a").evaluate("el => el.scrollIntoView()")
    page.screenshot(path=str(SCREENSHOTS / "score-table-compare-steps.png"))
