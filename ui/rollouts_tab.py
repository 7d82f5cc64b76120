"""The Rollouts tab: what the model wrote at a step, how each reward scored it, and what looks like
reward hacking (a high total while the task's own reward is low, or a length blow-up)."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from rft.monitoring import (
    ROLLOUT_VIEWS,
    HackingRule,
    best_and_worst,
    change_signature,
    flag_suspects,
    group_table,
    reward_columns,
    rollout_frame,
    select_rollouts,
    suspect_count,
)
from rft.runs import ACTIVE_STATES, effective_state, read_rollouts, read_status, rollout_steps
from ui.common import conversation_html, missing_run_notice, resolve_run, run_picker_update

REFRESH_S = 2.0
SORTS = ("total", "advantage", "tokens", "group")
FLAGGED_ROW = "background-color: #fff1f2"


@dataclass
class RolloutsTab:
    show_run: Callable  # run id -> updates for `show_run_outputs`
    show_run_outputs: list
    on_load: tuple[Callable, list, list]


def build(runs_root: Path) -> RolloutsTab:
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        run = gr.Dropdown([], label="Run", scale=3, min_width=240, elem_id="rollouts-run")
        step = gr.Slider(0, 1, value=0, step=1, label="Step", scale=4, elem_id="rollouts-step")
        follow = gr.Checkbox(True, label="Follow latest step", scale=1, min_width=120)
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=90)
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        task_function = gr.Dropdown([], label="Task signal", scale=2, elem_id="task-function",
                                    info="The reward that measures the real task; high totals with a low "
                                         "task score are flagged")
        view = gr.Dropdown(list(ROLLOUT_VIEWS), value=ROLLOUT_VIEWS[0], label="Show", scale=2)
        sort = gr.Dropdown(list(SORTS), value=SORTS[0], label="Sort by", scale=1, info="highest first")
        summary = gr.HTML(elem_id="rollouts-summary", min_height=40)
    with gr.Row(equal_height=True):
        best = gr.HTML(elem_id="rollouts-best", elem_classes="completion-card")
        worst = gr.HTML(elem_id="rollouts-worst", elem_classes="completion-card")
    groups = gr.Dataframe(label="Groups (prompt and reward spread)", interactive=False, wrap=True, max_height=200,
                          elem_id="rollouts-groups")
    completions = gr.Dataframe(label="Completions", interactive=False, wrap=True, max_height=520,
                               elem_id="rollouts-table")
    seen = gr.State(None)
    timer = gr.Timer(REFRESH_S)
    view_inputs = [run, step, task_function, view, sort]
    view_outputs = [summary, best, worst, groups, completions, task_function]
    panels = view_outputs[:5]

    def nothing_to_show(run_id):
        """The panels without a run: why (none chosen, or its directory is gone), and nothing else."""
        message = missing_run_notice(run_id) if run_id else '<span class="muted">Choose a run.</span>'
        return message, "", "", None, None

    def render(run_id, step_value, task, view_name, sort_by):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            return *nothing_to_show(run_id), gr.update(choices=[], value=None)
        record = read_rollouts(run_dir, int(step_value)) if step_value else None
        if record is None:
            return ('<span class="muted">No rollouts for this step yet.</span>', "", "", None, None, gr.skip())
        frame = rollout_frame(record)
        functions = reward_columns(frame)
        task = task if task in functions else (functions[0] if functions else None)
        flagged = flag_suspects(frame, HackingRule(task_function=task))
        shown = select_rollouts(flagged, view_name, sort_by)
        top, bottom = best_and_worst(flagged)
        suspects = suspect_count(flagged)
        group_count = flagged["group"].nunique() if not flagged.empty else 0
        text = (f"<b>Step {record['step']}</b> · {group_count} group(s) · {len(flagged)} completion(s) · "
                f"mean total {flagged['total'].mean():.3f}")
        version = record["groups"][0].get("reward_version") if record["groups"] else None
        text += f" · scored by reward code v{version}" if version else ""
        text += f' · <span class="flag">{suspects} suspected</span>' if suspects else " · nothing suspicious"
        return (text, completion_card("Best", top, functions), completion_card("Worst", bottom, functions),
                group_table(flagged).round(3),
                gr.update(value=styled_completions(shown, functions), column_widths=completion_widths(functions)),
                gr.update(choices=functions, value=task))

    def follow_latest(run_id, following, last_signature):
        """On a tick: move the slider to the newest step when new rollouts arrived, or empty the
        panels when the run's directory has gone (no step change would redraw them)."""
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            return gr.skip(), None, gr.Timer(active=False), *nothing_to_show(run_id)
        unchanged_panels = [gr.skip()] * len(panels)
        signature = change_signature(run_dir)
        if signature == last_signature:
            keep_polling = effective_state(read_status(run_dir)) in ACTIVE_STATES
            return gr.skip(), signature, gr.Timer(active=keep_polling), *unchanged_panels
        return slider_update(run_dir, following), signature, gr.Timer(active=True), *unchanged_panels

    def slider_update(run_dir: Path, to_latest: bool):
        steps = rollout_steps(run_dir)
        if not steps:
            return gr.update(minimum=0, maximum=1, value=0)
        if to_latest:
            return gr.update(minimum=steps[0], maximum=max(steps[-1], steps[0] + 1), value=steps[-1])
        return gr.update(minimum=steps[0], maximum=max(steps[-1], steps[0] + 1))

    def on_run_change(run_id):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            return gr.update(minimum=0, maximum=1, value=0), None, gr.Timer(active=False)
        return slider_update(run_dir, True), change_signature(run_dir), gr.Timer(active=True)

    def show_run(run_id):
        return run_picker_update(runs_root, run_id), gr.Timer(active=True)

    run.change(on_run_change, run, [step, seen, timer], show_progress="hidden")
    for control in (step, task_function, view, sort):
        control.change(render, view_inputs, view_outputs, show_progress="hidden")
    run.change(render, view_inputs, view_outputs, show_progress="hidden")
    timer.tick(follow_latest, [run, follow, seen], [step, seen, timer, *panels], show_progress="hidden")
    refresh.click(lambda run_id: (run_picker_update(runs_root, run_id), None), run, [run, seen]).then(
        follow_latest, [run, follow, seen], [step, seen, timer, *panels])
    follow.change(lambda run_id, on: slider_update(resolve_run(runs_root, run_id), on)
                  if on and resolve_run(runs_root, run_id) else gr.skip(), [run, follow], step)

    # Opening the tab (or the page) lists new runs and resumes polling, which an ended run had stopped.
    return RolloutsTab(show_run=show_run, show_run_outputs=[run, timer], on_load=(show_run, [run], [run, timer]))


def completion_card(title: str, row: dict | None, functions: list[str]) -> str:
    if row is None:
        return ""
    scores = " · ".join(f"{name} {row[name]:.3f}" for name in functions if pd.notna(row.get(name)))
    messages = row.get("messages")
    if isinstance(messages, list):
        kind, size = "episode", f'{row["turns"]} turns, {row["tokens"]} model tokens'
        body = conversation_html(messages)
    else:
        kind, size = "completion", f'{row["tokens"]} tokens'
        body = f'<pre class="card-text">{html.escape(row["completion"])}</pre>'
    total = "-" if pd.isna(row["total"]) else f'{row["total"]:.3f}'
    return (
        f'<div class="card-title">{title} {kind}: total <b>{total}</b> '
        f'(group {row["group"]}, advantage {row["advantage"]:+.2f}, {size})</div>'
        f'<div class="card-scores">{html.escape(scores)}</div>{body}'
    )


def completion_widths(functions: list[str]) -> list[str]:
    """Narrow number columns, so the completion text gets the width."""
    numbers = len(functions) + 3
    completion = max(30, 100 - 10 - 12 - 7 * numbers)
    return ["5%", "5%", f"{completion}%", *["7%"] * numbers, "12%"]


def styled_completions(frame: pd.DataFrame, functions: list[str]):
    """The completions table, suspected rows tinted; numbers at 3 decimals."""
    if frame.empty:
        return pd.DataFrame(columns=["group", "sample", "completion", *functions, "total", "advantage", "tokens",
                                     "flags"])
    table = frame[["group", "sample", "completion", *functions, "total", "advantage", "tokens", "flags"]]
    table = table.reset_index(drop=True)
    suspicious = table["flags"].str.contains("high total|long", regex=True)

    def tint(row):
        return [FLAGGED_ROW if suspicious[row.name] else ""] * len(row)

    formats = {**{c: "{:.3f}" for c in [*functions, "total"]}, "advantage": "{:+.3f}"}
    return table.style.apply(tint, axis=1).format(formats, na_rep="-")
