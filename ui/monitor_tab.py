"""The Monitor tab: live charts, progress and logs of any run, running or finished.

A timer polls the chosen run's files. Nothing is redrawn while they are unchanged, and once a
run has ended and its files stop changing the timer switches itself off; choosing a run (or
launching one) switches it back on.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rft.monitoring import change_signature, no_signal_warning, run_progress
from rft.runs import (ACTIVE_STATES, effective_state, read_eval_metrics, read_metrics, read_sft_metrics, read_status,
                      tail_logs)
from ui import charts
from ui.common import missing_run_notice, resolve_run, run_picker_update, state_badge

REFRESH_S = 1.5
SCROLL_LOGS_TO_END = """() => {
    const box = document.querySelector('#monitor-logs textarea');
    if (box) requestAnimationFrame(() => { box.scrollTop = box.scrollHeight; });
}"""
LOG_LINES = 300
LOSS_NOTE = (
    "**Watch the reward, not the loss.** With one optimisation pass per batch the GRPO loss stays near 0 by "
    "construction (advantages are centred within each group), so a flat loss is normal. A rising reward, and "
    "groups whose completions score differently, are the signs of learning."
)


@dataclass
class MonitorTab:
    show_run: Callable  # run id -> updates for `show_run_outputs`: pick the run, restart polling
    show_run_outputs: list
    on_load: tuple[Callable, list, list]  # (fn, inputs, outputs) to run when a browser (re)connects


def build(runs_root: Path) -> MonitorTab:
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        run = gr.Dropdown([], label="Run", scale=3, min_width=260, elem_id="monitor-run",
                          info="Any run in the runs directory, running or finished")
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=90)
        with gr.Column(scale=5):
            progress = gr.HTML(elem_id="monitor-progress", min_height=48)
    gr.Markdown(LOSS_NOTE, elem_classes="note")
    plots = {}
    layout = [
        ("reward", "functions", "groups"),
        ("kl", "loss", "clip", "signal"),
        ("entropy", "length", "time", "speed"),
    ]
    for row in layout:
        with gr.Row(equal_height=True, elem_classes="chart-row"):
            for name in row:
                plots[name] = gr.Plot(show_label=False, elem_id=f"chart-{name}", elem_classes="chart", min_width=240)
    with gr.Row(equal_height=True, elem_classes="chart-row"):
        # Shown only for runs with an SFT warm start, runs evaluated on held-out rows, and environment runs.
        plots["episodes"] = gr.Plot(show_label=False, elem_id="chart-episodes", elem_classes="chart", visible=False)
        plots["sft"] = gr.Plot(show_label=False, elem_id="chart-sft", elem_classes="chart", visible=False)
        plots["held_out"] = gr.Plot(show_label=False, elem_id="chart-held-out", elem_classes="chart", visible=False)
    logs = gr.Textbox(label="logs.txt (latest lines: trainer output, reward-function prints and errors)", lines=12,
                      max_lines=12, autoscroll=True, interactive=False, elem_id="monitor-logs",
                      elem_classes="logs")
    seen = gr.State(None)  # the change signature last drawn
    timer = gr.Timer(REFRESH_S)
    outputs = [progress, *plots.values(), logs, seen, timer]

    loaded: dict[Path, tuple] = {}  # run directory -> (change signature, metrics, SFT metrics, eval metrics)

    def run_metrics(run_dir: Path, signature: tuple):
        """The run's metrics, read again only when its files changed (the timer ticks every few seconds)."""
        if run_dir not in loaded or loaded[run_dir][0] != signature:
            loaded[run_dir] = (signature, read_metrics(run_dir), read_sft_metrics(run_dir), read_eval_metrics(run_dir))
        return loaded[run_dir][1:]

    def draw(run_id, last_signature, force=False):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            empty = [charts.empty_figure("", "choose a run") for _ in plots]
            message = missing_run_notice(run_id) if run_id else \
                '<span class="muted">No run chosen: launch one in Train or pick one above.</span>'
            return message, *empty, "", None, gr.Timer(active=False)
        signature = change_signature(run_dir)
        status = read_status(run_dir)
        state = effective_state(status)
        metrics, sft_metrics, eval_metrics = run_metrics(run_dir, signature)
        progress_now = progress_html(run_id, state, status, metrics, sft_metrics)
        if signature == last_signature and not force:
            # Unchanged: only the progress line (its elapsed time moves on); an ended run will not
            # change again, so stop polling it.
            keep_polling = state in ACTIVE_STATES
            return (progress_now, *[gr.skip()] * (len(outputs) - 2), gr.Timer(active=keep_polling))
        figures: dict = charts.monitor_figures(metrics, sft_metrics, eval_metrics)
        figures["sft"] = gr.Plot(figures["sft"], visible=not sft_metrics.empty)
        figures["held_out"] = gr.Plot(figures["held_out"], visible=not eval_metrics.empty)
        figures["episodes"] = gr.Plot(figures["episodes"], visible="episodes/turns/mean" in metrics)
        return (progress_now, *[figures[name] for name in plots], tail_logs(run_dir, LOG_LINES), signature,
                gr.Timer(active=True))

    def show_run(run_id):
        return run_picker_update(runs_root, run_id), gr.Timer(active=True)

    # The latest lines are at the bottom: show them when the box fills, not the oldest.
    logs.change(None, None, None, js=SCROLL_LOGS_TO_END)
    run.change(lambda run_id: draw(run_id, None, force=True), run, outputs, show_progress="hidden")
    timer.tick(draw, [run, seen], outputs, show_progress="hidden")
    refresh.click(lambda run_id: (run_picker_update(runs_root, run_id), *draw(run_id, None, force=True)[:-1]),
                  run, [run, *outputs[:-1]])

    # Opening the tab (or the page) lists new runs and resumes polling, which an ended run had stopped.
    return MonitorTab(show_run=show_run, show_run_outputs=[run, timer], on_load=(show_run, [run], [run, timer]))


def progress_html(run_id: str, state: str, status: dict, metrics, sft_metrics=None) -> str:
    progress = run_progress(state, status, metrics, sft_metrics=sft_metrics)
    percent = round(100 * progress.fraction, 1)
    reward = status.get("last_reward")
    reward_text = f" · last reward <b>{reward:.3f}</b>" if isinstance(reward, (int, float)) else ""
    error = f'<div class="notice notice-error">{html.escape(progress.error)}</div>' if progress.error else ""
    warning = no_signal_warning(metrics) if len(metrics) else None
    error += f'<div class="notice notice-warn">{html.escape(warning)}</div>' if warning else ""
    return (
        f'<div class="progress-line">{state_badge(state)} <b>{html.escape(run_id)}</b> · '
        f'{html.escape(progress.describe())}{reward_text}</div>'
        f'<div class="progress-bar"><div style="width:{percent}%"></div></div>{error}'
    )
