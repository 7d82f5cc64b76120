"""Save a run's Monitor charts as one PNG, for a report or a README.

    .venv/bin/python scripts/monitor_png.py runs/<id> --out assets/run.png [--charts reward,functions,sft]

The figures are the Monitor tab's own (ui.charts.monitor_figures), drawn by Chromium from
plotly's bundled JavaScript (nothing is fetched), so the image is what the dashboard shows. In
the dashboard itself, each chart's camera button saves it as a PNG. This script needs the test
set-up (the playwright package and Debian's chromium), which `make test` installs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT_ROOT), str(PROJECT_ROOT / "tests")]

from dashboard_driver import launch_chromium  # noqa: E402

from rft.runs import read_metrics, read_sft_metrics  # noqa: E402
from ui.charts import monitor_figures  # noqa: E402

DEFAULT_CHARTS = "reward,functions,length,sft"
CHART_SIZE = (620, 300)  # pixels: two charts side by side make a page a README shows at full width
COLUMNS = 2


def charts_page(run_dir: Path, names: list[str]) -> str:
    """An HTML page with the chosen charts of the run in a grid, plotly.js inline."""
    figures = monitor_figures(read_metrics(run_dir), read_sft_metrics(run_dir))
    unknown = [name for name in names if name not in figures]
    if unknown:
        raise SystemExit(f"unknown chart(s) {', '.join(unknown)}; choose from {', '.join(figures)}")
    width, height = CHART_SIZE
    cells = []
    for index, name in enumerate(names):
        figure = figures[name].update_layout(width=width, height=height)
        cells.append(figure.to_html(full_html=False, include_plotlyjs="inline" if index == 0 else False,
                                    config={"staticPlot": True}))
    grid = f"display:grid;grid-template-columns:repeat({COLUMNS},{width}px);gap:8px;padding:8px;background:white"
    return f'<html><head><meta charset="utf-8"></head><body style="margin:0"><div id="charts" style="{grid}">{"".join(cells)}</div></body></html>'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--charts", default=DEFAULT_CHARTS, help="comma-separated Monitor chart names")
    args = parser.parse_args(argv)
    if not (args.run_dir / "metrics.jsonl").exists():
        print(f"{args.run_dir} has no metrics.jsonl: not a run directory, or the run has no step yet", file=sys.stderr)
        return 2
    names = [name.strip() for name in args.charts.split(",") if name.strip()]
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        page_file = Path(scratch) / "charts.html"
        page_file.write_text(charts_page(args.run_dir, names), encoding="utf-8")
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(page_file.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.main-svg').length >= {len(names)}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.locator("#charts").screenshot(path=str(args.out))
        browser.close()
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
