"""Plotly figure builders for the dashboard: a metrics DataFrame (indexed by step) in, a Figure out.

Builders are pure and never raise on missing columns or empty frames: a chart with nothing to show
says so in its middle, because a run that has just started has no metrics yet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rft.monitoring import downsample, reward_function_names, reward_version_changes

PALETTE = ["#4f46e5", "#0d9488", "#d97706", "#db2777", "#2563eb", "#65a30d", "#9333ea", "#0891b2"]
ZERO_SPREAD_COLOR = "#dc2626"  # reserved: no palette colour may look like it
CHART_HEIGHT = 230
GROUP_STEPS = 4  # recent steps whose groups the spread chart shows


def _layout(figure: go.Figure, title: str, y_title: str = "", height: int = CHART_HEIGHT,
            nonnegative: bool = False) -> go.Figure:
    """`nonnegative`: a quantity that cannot go below 0 (a ratio, a share, a speed), whose axis must not either."""
    figure.update_layout(
        title={"text": title, "x": 0.01, "y": 0.97, "font": {"size": 13}},
        height=height,
        margin={"l": 48, "r": 12, "t": 34, "b": 30},
        template="plotly_white",
        font={"size": 11, "family": "system-ui, -apple-system, Segoe UI, sans-serif"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1, "font": {"size": 10}},
        hovermode="x unified",
        yaxis_title=y_title,
        uirevision=title,  # keeps the user's zoom across live refreshes
    )
    figure.update_xaxes(title_text="step", title_standoff=2, title_font={"size": 10})
    if nonnegative:
        figure.update_yaxes(rangemode="nonnegative")
    _widen_flat_axis(figure, nonnegative)
    return figure


def _widen_flat_axis(figure: go.Figure, nonnegative: bool = False) -> None:
    """A constant series (averaging can leave float noise of 1e-15 on it) gets a readable y range;
    plotly's own autorange on such a sliver draws a solid block with garbage ticks. All zeros (no
    clipping yet, say) get 0 to 1, or -1 to 1, rather than a range of a few millionths."""
    values = np.concatenate([np.asarray(trace.y, dtype=float) for trace in figure.data if trace.y is not None]
                            or [np.array([])])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    if max(abs(low), abs(high)) < 1e-12:
        figure.update_yaxes(range=[0 if nonnegative else -1, 1])
        return
    scale = max(abs(low), abs(high))
    if high - low < 1e-9 * scale:
        middle = (low + high) / 2
        bottom = middle - 0.1 * scale
        figure.update_yaxes(range=[max(0.0, bottom) if nonnegative else bottom, middle + 0.1 * scale])


def empty_figure(title: str, message: str = "no data yet") -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, font={"size": 12, "color": "#6b7280"},
                          xref="paper", yref="paper", x=0.5, y=0.5)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return _layout(figure, title)


def _has(metrics: pd.DataFrame, *columns: str) -> bool:
    return not metrics.empty and all(c in metrics and metrics[c].notna().any() for c in columns)


def _line(figure: go.Figure, metrics: pd.DataFrame, column: str, name: str, color: str, **extra) -> None:
    if column in metrics:
        figure.add_trace(go.Scatter(x=metrics.index, y=metrics[column], name=name, mode="lines",
                                    line={"color": color, "width": 1.8}, **extra))


def lines_chart(metrics: pd.DataFrame, title: str, series: dict[str, str], y_title: str = "",
                nonnegative: bool = False) -> go.Figure:
    """One line per column (`series` maps column to legend name); the columns that exist are drawn."""
    present = {c: n for c, n in series.items() if _has(metrics, c)}
    if not present:
        return empty_figure(title)
    figure = go.Figure()
    for i, (column, name) in enumerate(present.items()):
        _line(figure, metrics, column, name, PALETTE[i % len(PALETTE)])
    return _layout(figure, title, y_title, nonnegative=nonnegative)


def reward_chart(metrics: pd.DataFrame) -> go.Figure:
    """Total reward mean with a band of one standard deviation: the number to watch."""
    title = "Total reward (mean ± std)"
    if not _has(metrics, "reward"):
        return empty_figure(title)
    mean = metrics["reward"]
    std = metrics["reward_std"].fillna(0) if "reward_std" in metrics else pd.Series(0.0, index=metrics.index)
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=metrics.index, y=mean + std, mode="lines", line={"width": 0},
                                showlegend=False, hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=metrics.index, y=mean - std, mode="lines", line={"width": 0}, fill="tonexty",
                                fillcolor="rgba(79,70,229,0.15)", name="± std", hoverinfo="skip"))
    _line(figure, metrics, "reward", "mean", PALETTE[0])
    if _has(metrics, "dynamic_sampling/sampled_reward"):  # the dropped groups' rewards are the policy's too
        figure.add_trace(go.Scatter(x=metrics.index, y=metrics["dynamic_sampling/sampled_reward"],
                                    name="every sampled group", mode="lines",
                                    line={"color": PALETTE[2], "width": 1.6, "dash": "dot"}))
    return _layout(figure, title, "reward")


def reward_functions_chart(metrics: pd.DataFrame, functions: list[str]) -> go.Figure:
    series = {f"rewards/{name}/mean": name for name in functions}
    return lines_chart(metrics, "Reward per function (mean)", series, "reward")


def group_rewards_chart(metrics: pd.DataFrame, steps: int = GROUP_STEPS) -> go.Figure:
    """The rewards inside each group of the last `steps` steps: the spread GRPO learns from.

    A group whose completions all scored the same has zero advantage everywhere and teaches
    nothing; those are drawn red.
    """
    title = f"Rewards within each group (last {steps} steps; red = no spread)"
    if not _has(metrics, "group_rewards"):
        return empty_figure(title)
    figure = go.Figure()
    recent = metrics["group_rewards"].dropna().tail(steps)
    for step, groups in recent.items():
        for g, rewards in enumerate(groups if isinstance(groups, list) else [], start=1):
            values = [r for r in rewards if r is not None]
            if not values:
                continue
            flat = float(np.ptp(values)) < 1e-9
            color = ZERO_SPREAD_COLOR if flat else PALETTE[int(step) % len(PALETTE)]
            figure.add_trace(go.Box(
                y=values, name=f"{step}·g{g}", boxpoints="all", jitter=0.4, pointpos=0,
                marker={"color": color, "size": 5}, line={"color": color, "width": 1},
                fillcolor="rgba(0,0,0,0)", showlegend=False,
                hovertemplate=f"step {step}, group {g}<br>reward %{{y:.3f}}<extra></extra>",
            ))
    if not figure.data:
        return empty_figure(title)
    _layout(figure, title, "total reward")
    figure.update_layout(hovermode="closest")
    figure.update_xaxes(title_text="step · group", tickfont={"size": 9})
    return figure


def completion_length_chart(metrics: pd.DataFrame) -> go.Figure:
    title = "Completion length (tokens)"
    if not _has(metrics, "completion_length/mean"):
        return empty_figure(title)
    figure = go.Figure()
    if _has(metrics, "completion_length/max", "completion_length/min"):
        figure.add_trace(go.Scatter(x=metrics.index, y=metrics["completion_length/max"], mode="lines",
                                    line={"width": 0.8, "color": PALETTE[1], "dash": "dot"}, name="max"))
        figure.add_trace(go.Scatter(x=metrics.index, y=metrics["completion_length/min"], mode="lines",
                                    line={"width": 0.8, "color": PALETTE[1], "dash": "dot"}, name="min",
                                    fill="tonexty", fillcolor="rgba(13,148,136,0.10)"))
    _line(figure, metrics, "completion_length/mean", "mean", PALETTE[1])
    return _layout(figure, title, "tokens")


def step_time_chart(metrics: pd.DataFrame) -> go.Figure:
    """Seconds per step, stacked: where the time goes (generation is usually most of it)."""
    title = "Step time (s): generate / score / train"
    parts = {"time/generate": "generate", "time/environment": "environment", "time/score": "score",
             "time/train": "train"}
    present = {c: n for c, n in parts.items() if _has(metrics, c)}
    if not present:
        return empty_figure(title)
    figure = go.Figure()
    for i, (column, name) in enumerate(present.items()):
        figure.add_trace(go.Scatter(x=metrics.index, y=metrics[column], name=name, mode="lines", stackgroup="time",
                                    line={"width": 0.5, "color": PALETTE[i]}))
    return _layout(figure, title, "seconds")


def episodes_chart(metrics: pd.DataFrame) -> go.Figure:
    """An environment run's episodes: turns per episode (mean and longest), and the share a limit cut
    short (truncated) or whose environment failed."""
    title = "Episodes: turns, and the share cut by a limit"
    if not _has(metrics, "episodes/turns/mean"):
        return empty_figure(title, "single-turn run")
    figure = go.Figure()
    _line(figure, metrics, "episodes/turns/mean", "turns (mean)", PALETTE[0])
    figure.add_trace(go.Scatter(x=metrics.index, y=metrics["episodes/turns/max"], name="turns (max)", mode="lines",
                                line={"color": PALETTE[0], "width": 1, "dash": "dot"}))
    figure.add_trace(go.Scatter(x=metrics.index, y=metrics["episodes/truncated"], name="truncated (share)",
                                mode="lines", yaxis="y2", line={"color": PALETTE[3], "width": 1.4}))
    _layout(figure, title, "turns")
    figure.update_layout(yaxis2={"overlaying": "y", "side": "right", "range": [0, 1], "showgrid": False,
                                 "title": {"text": "share", "font": {"size": 10}}})
    return figure


def kl_chart(metrics: pd.DataFrame) -> go.Figure:
    return lines_chart(metrics, "KL to the reference", {"kl": "kl"})


def loss_chart(metrics: pd.DataFrame) -> go.Figure:
    return lines_chart(metrics, "Loss (near 0 by construction)", {"loss": "loss"})


def sft_loss_chart(sft_metrics: pd.DataFrame) -> go.Figure:
    """The SFT warm start's loss on its demonstrations, per SFT step: it should fall, then flatten."""
    return lines_chart(sft_metrics, "SFT warm start: loss on demonstrations (per SFT step)", {"loss": "loss"},
                       "cross-entropy")


def held_out_chart(eval_metrics: pd.DataFrame) -> go.Figure:
    """The greedy policy on the held-out rows at each evaluation: the weighted reward and each
    function's mean, with 95% intervals. Unlike the training reward, it sees the same rows every
    time, so a rise here is the model getting better rather than easier prompts being drawn."""
    title = "Held-out rows (greedy; 95% intervals)"
    if not _has(eval_metrics, "eval/reward"):
        return empty_figure(title, "no evaluation yet (data.eval_size and schedule.eval_every)")
    names = [column.removeprefix("eval/") for column in eval_metrics.columns
             if column.startswith("eval/") and column.count("/") == 1 and column not in ("eval/rows", "eval/seconds")]
    figure = go.Figure()
    for i, name in enumerate(names):
        mean = eval_metrics[f"eval/{name}"]
        error = {"type": "data", "array": eval_metrics[f"eval/{name}/high"] - mean,
                 "arrayminus": mean - eval_metrics[f"eval/{name}/low"], "thickness": 1, "width": 3}
        figure.add_trace(go.Scatter(x=eval_metrics["step"], y=mean, name=name, mode="lines+markers", error_y=error,
                                    line={"color": PALETTE[i % len(PALETTE)], "width": 2.4 if name == "reward" else 1.4}))
    return _layout(figure, title, "held-out mean")


def clip_chart(metrics: pd.DataFrame) -> go.Figure:
    return lines_chart(metrics, "Clip ratio", {"clip_ratio/low": "low", "clip_ratio/high": "high",
                                               "clip_ratio/region": "region"}, nonnegative=True)


def signal_chart(metrics: pd.DataFrame) -> go.Figure:
    """The share of groups with no reward spread (no learning signal) among those trained on, and,
    with dynamic sampling, the share of sampled groups it dropped for that reason."""
    shown = metrics.copy()
    if _has(shown, "dynamic_sampling/dropped_groups", "dynamic_sampling/sampled_groups"):
        shown["dropped_share"] = shown["dynamic_sampling/dropped_groups"] / shown["dynamic_sampling/sampled_groups"]
    return lines_chart(shown, "Groups with no reward spread (share)", {
        "frac_reward_zero_std": "trained on", "dropped_share": "dropped by dynamic sampling"}, nonnegative=True)


def entropy_chart(metrics: pd.DataFrame) -> go.Figure:
    return lines_chart(metrics, "Entropy (nats per token)", {"entropy": "entropy"}, nonnegative=True)


def throughput_chart(metrics: pd.DataFrame) -> go.Figure:
    return lines_chart(metrics, "Generation speed (tokens/s)", {"tokens_per_second": "tokens/s"}, nonnegative=True)


def reward_overlay_chart(curves: dict[str, pd.Series]) -> go.Figure:
    """Several runs' mean reward on one chart (run id -> reward Series indexed by step)."""
    title = "Mean reward by run"
    drawn = {name: curve.dropna() for name, curve in curves.items() if curve is not None and curve.notna().any()}
    if not drawn:
        return empty_figure(title, "choose runs with metrics to compare")
    figure = go.Figure()
    for i, (name, curve) in enumerate(drawn.items()):
        figure.add_trace(go.Scatter(x=curve.index, y=curve, name=name, mode="lines",
                                    line={"color": PALETTE[i % len(PALETTE)], "width": 1.8}))
    _layout(figure, title, "reward", height=320)
    figure.update_layout(showlegend=True, legend={"orientation": "v", "y": 1, "yanchor": "top", "x": 1.01, "xanchor": "left"},
                         margin={"r": 160})
    return figure


def monitor_figures(metrics: pd.DataFrame, sft_metrics: pd.DataFrame,
                    eval_metrics: pd.DataFrame | None = None) -> dict[str, go.Figure]:
    """Every chart the Monitor tab shows for a run, by the name its layout uses. Long runs are
    downsampled, except in the group chart, which shows only the last steps exactly."""
    shown = downsample(metrics)
    figures = {
        "reward": reward_chart(shown),
        "functions": reward_functions_chart(shown, reward_function_names(metrics)),
        "groups": group_rewards_chart(metrics),
        "kl": kl_chart(shown),
        "loss": loss_chart(shown),
        "clip": clip_chart(shown),
        "signal": signal_chart(shown),
        "entropy": entropy_chart(shown),
        "length": completion_length_chart(shown),
        "time": step_time_chart(shown),
        "speed": throughput_chart(shown),
        "sft": sft_loss_chart(downsample(sft_metrics)),
        "held_out": held_out_chart(eval_metrics if eval_metrics is not None else pd.DataFrame()),
        "episodes": episodes_chart(shown),
    }
    for name, figure in figures.items():
        if name not in ("groups", "sft", "held_out"):  # their x axes are not the run's steps
            mark_reward_changes(figure, reward_version_changes(metrics))
    return figures


def mark_reward_changes(figure: go.Figure, changes: list[tuple[int, int]]) -> None:
    """A dotted line at each step where edited reward code took effect, labelled with its version."""
    for step, version in changes:
        figure.add_vline(x=step, line_dash="dot", line_color="#6b7280", line_width=1,
                         annotation_text=f"rewards v{version}", annotation_position="top left",
                         annotation_font={"size": 9, "color": "#6b7280"})
