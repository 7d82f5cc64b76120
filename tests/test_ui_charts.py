"""Chart builders: the right traces from a metrics frame, and a readable placeholder without data."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from rft.monitoring import downsample
from ui import charts


def metrics_frame(steps: int = 5) -> pd.DataFrame:
    index = np.arange(1, steps + 1)
    return pd.DataFrame({
        "step": index,
        "reward": np.linspace(0, 1, steps),
        "reward_std": np.full(steps, 0.1),
        "rewards/format/mean": np.linspace(0, 1, steps),
        "rewards/task/mean": np.linspace(1, 0, steps),
        "group_rewards": [[[0.1, 0.5, 0.9], [1.0, 1.0, 1.0]]] * steps,
        "kl": np.linspace(0, 0.01, steps),
        "loss": np.zeros(steps),
        "clip_ratio/low": np.zeros(steps), "clip_ratio/high": np.zeros(steps), "clip_ratio/region": np.zeros(steps),
        "entropy": np.full(steps, 2.0),
        "completion_length/mean": np.full(steps, 10.0), "completion_length/min": np.full(steps, 5.0),
        "completion_length/max": np.full(steps, 16.0),
        "time/generate": np.full(steps, 1.0), "time/score": np.full(steps, 0.1), "time/train": np.full(steps, 0.5),
        "tokens_per_second": np.full(steps, 30.0),
    }, index=index)


def test_reward_chart_has_a_std_band_and_a_mean_line():
    figure = charts.reward_chart(metrics_frame())
    assert [trace.name for trace in figure.data][-1] == "mean"
    assert figure.data[1].fill == "tonexty"
    assert list(figure.data[0].y) == list(metrics_frame()["reward"] + 0.1)


def test_per_function_chart_draws_each_function():
    figure = charts.reward_functions_chart(metrics_frame(), ["format", "task", "absent"])
    assert [trace.name for trace in figure.data] == ["format", "task"]


def test_group_chart_shows_recent_groups_and_marks_zero_spread_red():
    figure = charts.group_rewards_chart(metrics_frame(10), steps=3)
    assert len(figure.data) == 6  # 3 steps x 2 groups
    assert [trace.name for trace in figure.data][:2] == ["8·g1", "8·g2"]
    assert figure.data[1].marker.color == charts.ZERO_SPREAD_COLOR
    assert figure.data[0].marker.color != charts.ZERO_SPREAD_COLOR
    assert charts.ZERO_SPREAD_COLOR not in charts.PALETTE


def test_step_time_is_stacked_and_every_builder_handles_empty_frames():
    figure = charts.step_time_chart(metrics_frame())
    assert [t.name for t in figure.data] == ["generate", "score", "train"]
    assert all(t.stackgroup == "time" for t in figure.data)
    empty = pd.DataFrame()
    builders = [charts.reward_chart, charts.group_rewards_chart, charts.kl_chart, charts.loss_chart, charts.clip_chart,
                charts.entropy_chart, charts.completion_length_chart, charts.step_time_chart, charts.throughput_chart]
    for build in builders:
        figure = build(empty)
        assert not figure.data and figure.layout.annotations[0].text == "no data yet"
    assert not charts.reward_functions_chart(empty, ["f"]).data


def test_overlay_draws_one_line_per_run():
    curves = {"run-a": pd.Series([0.1, 0.2], index=[1, 2]), "run-b": pd.Series([0.3], index=[1]), "none": None}
    figure = charts.reward_overlay_chart(curves)
    assert [t.name for t in figure.data] == ["run-a", "run-b"]
    assert not charts.reward_overlay_chart({}).data


def test_ten_thousand_steps_render_quickly_after_downsampling():
    metrics = metrics_frame(10_000)
    started = time.perf_counter()
    shown = downsample(metrics)
    figures = [charts.reward_chart(shown), charts.completion_length_chart(shown), charts.step_time_chart(shown),
               charts.group_rewards_chart(metrics)]
    payload = sum(len(f.to_json()) for f in figures)
    assert time.perf_counter() - started < 3.0
    assert all(len(trace.x) <= 600 for f in figures[:3] for trace in f.data)
    assert payload < 500_000


def test_a_constant_series_gets_a_readable_axis():
    metrics = pd.DataFrame({"tokens_per_second": [38.136434047406404, 38.13643404740641]}, index=[1, 2])
    low, high = charts.throughput_chart(metrics).layout.yaxis.range
    assert low < 38.13 < 38.14 < high


def test_all_zero_charts_get_a_sensible_range_and_ratio_axes_stay_at_or_above_zero():
    metrics = pd.DataFrame({"clip_ratio/low": [0.0, 0.0], "clip_ratio/high": [0.0, 0.0], "loss": [0.0, 0.0]},
                           index=[1, 2])
    assert list(charts.clip_chart(metrics).layout.yaxis.range) == [0, 1]
    assert list(charts.loss_chart(metrics).layout.yaxis.range) == [-1, 1]
    flat_clip = charts.clip_chart(pd.DataFrame({"clip_ratio/low": [0.02, 0.02]}, index=[1, 2]))
    assert flat_clip.layout.yaxis.range[0] >= 0 and flat_clip.layout.yaxis.rangemode == "nonnegative"
