"""scripts/monitor_png.py: a run's Monitor charts saved as one PNG, drawn by Chromium."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import monitor_png  # noqa: E402


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", header[16:24])


def test_the_chosen_charts_are_saved_side_by_side(tiny_run_dir, tmp_path):
    out = tmp_path / "charts.png"
    assert monitor_png.main([str(tiny_run_dir), "--out", str(out), "--charts", "reward,functions,length"]) == 0
    width, height = png_size(out)
    chart_width, chart_height = monitor_png.CHART_SIZE
    assert width >= 2 * chart_width and height >= 2 * chart_height  # two columns, two rows


def test_an_unknown_chart_or_a_folder_without_metrics_is_refused(tiny_run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown chart"):
        monitor_png.main([str(tiny_run_dir), "--out", str(tmp_path / "x.png"), "--charts", "nonsense"])
    assert monitor_png.main([str(tmp_path), "--out", str(tmp_path / "y.png")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
