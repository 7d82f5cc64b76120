"""The soak (tests/soak.py) on a short run: it samples from the start to the end and prints a row
per sample. The 300-step soak itself is `make soak`; its figures are for reading, not asserting."""

from __future__ import annotations

import pytest
import soak


def test_milestones_cover_the_start_the_end_and_evenly_between():
    assert soak.milestones(300, 7) == [0, 50, 100, 150, 200, 250, 300]
    assert soak.milestones(2, 5) == [0, 1, 2]


@pytest.mark.browser
def test_a_short_soak_samples_the_run_from_start_to_end(tiny_model_dir, tmp_path):
    printed = []
    samples = soak.run_soak(tiny_model_dir, steps=4, samples=3, workdir=tmp_path, report=printed.append)

    assert samples[0].step <= 2 <= samples[1].step <= samples[2].step == 4
    assert samples[-1].monitor_step == 4  # the page kept polling to the end
    assert all(sample.ui_rss_mb > 50 and sample.response_ms > 0 for sample in samples)
    assert printed == [soak.HEADER, *(sample.row() for sample in samples)]
    assert soak.summary(samples).startswith("4 steps in")
