"""The Runs tab: every run in the runs directory (dashboard or CLI), opened, compared or deleted."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rft import evaluation
from rft.background import Cancelled, Done, StopRequests, run_reporting
from rft.jobs import threads_beside_jobs
from rft.monitoring import downsample, runs_frame
from rft.runs import delete_run, list_runs, read_metrics
from ui import charts
from ui.common import missing_run_notice, notice, resolve_run, stop_button

COMPARE_DEFAULT = 3  # newest runs overlaid when the tab first loads


@dataclass
class RunsTab:
    selected: gr.Dropdown  # the run the buttons act on
    open_monitor: gr.Button
    open_rollouts: gr.Button
    on_load: tuple[Callable, list, list]


def build(runs_root: Path) -> RunsTab:
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=90)
        gr.Markdown(f"Runs directory: `{runs_root}` · click a row to select it", elem_classes="muted")
    table = gr.Dataframe(interactive=False, wrap=False, max_height=320, elem_id="runs-table",
                         column_widths=["26%", "8%", "16%", "12%", "8%", "9%", "12%", "9%"])
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        selected = gr.Dropdown([], label="Selected run", scale=4, elem_id="runs-selected")
        open_monitor = gr.Button("Open in Monitor", size="sm", min_width=120)
        open_rollouts = gr.Button("Open in Rollouts", size="sm", min_width=120)
        delete = gr.Button("Delete…", size="sm", variant="stop", min_width=90, elem_id="runs-delete")
    with gr.Row(visible=False, elem_classes="confirm") as confirm_row:
        confirm_text = gr.Markdown()
        confirm = gr.Button("Delete permanently", variant="stop", size="sm", elem_id="runs-confirm-delete")
        cancel = gr.Button("Cancel", size="sm")
    message = gr.HTML(elem_id="runs-message")
    compare = gr.Dropdown([], multiselect=True, label="Overlay reward curves", elem_id="runs-compare")
    overlay = gr.Plot(show_label=False, elem_id="chart-overlay")
    gr.Markdown("### Evaluate a checkpoint\nThe selected run's base model, SFT warm start or a checkpoint on items it "
                "never trained on: Wordle runs play held-out games, arithmetic runs answer held-out problems, any "
                "other run answers its held-out rows (Train tab: Held-out rows), scored by its own reward functions. "
                "The table is the one `python -m rft eval` prints. On a CPU a Wordle game takes minutes: start "
                "with a few.")
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        checkpoint = gr.Dropdown([], label="Checkpoint", scale=3, elem_id="eval-checkpoint")
        count = gr.Number(evaluation.DEFAULT_COUNT, precision=0, minimum=1, maximum=1000,
                          label="Games / problems / rows", scale=1, elem_id="eval-count")
        run_eval = gr.Button("Evaluate", size="sm", scale=0, min_width=100, elem_id="eval-run")
        cancel_eval = gr.Button("Cancel", size="sm", scale=0, min_width=90, elem_id="eval-cancel", interactive=False)
    eval_result = gr.Code(label="Evaluation", language=None, interactive=False, elem_id="eval-result")

    def load_table(current, compared):
        runs = list_runs(runs_root)
        ids = [run.run_id for run in runs]
        keep = current if current in ids else (ids[0] if ids else None)
        chosen = [run_id for run_id in (compared or []) if run_id in ids] or ids[:COMPARE_DEFAULT]
        return runs_frame(runs), gr.update(choices=ids, value=keep), gr.update(choices=ids, value=chosen)

    def reload_table(current, compared):
        """The table afresh; a selected run that has gone since is named, as the selection moves on."""
        gone = current and resolve_run(runs_root, current) is None
        return *load_table(current, compared), missing_run_notice(current) if gone else gr.skip()

    def pick_row(frame, event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if frame is None or row is None or row >= len(frame):
            return gr.skip()
        return frame.iloc[row]["run"]

    def ask_delete(run_id):
        if resolve_run(runs_root, run_id) is None:
            return gr.update(visible=False), "", notice("Select a run to delete.", "info")
        return (gr.update(visible=True),
                f"Delete **{run_id}** with its metrics, rollouts and checkpoints? This cannot be undone.", "")

    def do_delete(run_id, compared):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            result = notice("That run no longer exists.", "warn")
        else:
            try:
                delete_run(run_dir)
                result = notice(f"Deleted {run_id}.", "ok")
            except RuntimeError as exc:
                result = notice(str(exc), "warn")
            except OSError as exc:
                result = notice(f"Could not delete {run_id}: {exc}", "error")
        return (gr.update(visible=False), result, *load_table(None, compared))

    def draw_overlay(compared):
        curves = {}
        for run_id in compared or []:
            run_dir = resolve_run(runs_root, run_id)
            if run_dir is None:
                continue
            metrics = read_metrics(run_dir)
            if "reward" in metrics:
                curves[run_id] = downsample(metrics[["reward"]])["reward"]
        return charts.reward_overlay_chart(curves)

    def list_checkpoints_of(run_id):
        run_dir = resolve_run(runs_root, run_id)
        choices = evaluation.checkpoint_choices(run_dir) if run_dir else []
        return gr.update(choices=choices, value=choices[-1] if choices else None)

    eval_stops = StopRequests()

    def evaluate(run_id, choice, games, request: gr.Request):
        """Progress lines while it runs (in place of any earlier result), then the table; Cancel or
        closing the page stops it at its next batch (rft.background)."""
        stop = eval_stops.start(request.session_hash)
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None or not choice:
            yield "Select a run and a checkpoint first.", gr.update(interactive=False)
            return
        count = int(games or evaluation.DEFAULT_COUNT)
        started = time.monotonic()

        def work(report):
            with threads_beside_jobs(runs_root):
                return evaluation.evaluate_checkpoint(run_dir, choice, count, on_progress=report)

        try:
            for update in run_reporting(work, first_text="loading the model", stop=stop):
                if isinstance(update, Done):
                    yield update.result, gr.update(interactive=False)
                else:
                    yield (f"Evaluating {choice} of {run_id} on {count} {evaluation.evaluation_unit(run_dir)}: "
                           f"{update.text} · {time.monotonic() - started:.0f} s"), gr.update(interactive=True)
        except Cancelled:
            yield "Evaluation cancelled.", gr.update(interactive=False)
        except Exception as exc:  # a model that cannot load, a run without held-out rows: say so, keep the page
            yield f"Evaluation failed: {type(exc).__name__}: {exc}", gr.update(interactive=False)

    refresh.click(reload_table, [selected, compare], [table, selected, compare, message])
    selected.change(list_checkpoints_of, selected, checkpoint)
    run_eval.click(evaluate, [selected, checkpoint, count], [eval_result, cancel_eval])
    cancel_eval.click(stop_button(eval_stops), None, cancel_eval)
    table.select(pick_row, table, selected)
    delete.click(ask_delete, selected, [confirm_row, confirm_text, message])
    cancel.click(lambda: (gr.update(visible=False), ""), None, [confirm_row, message])
    confirm.click(do_delete, [selected, compare], [confirm_row, message, table, selected, compare])
    compare.change(draw_overlay, compare, overlay)

    return RunsTab(selected=selected, open_monitor=open_monitor, open_rollouts=open_rollouts,
                   on_load=(reload_table, [selected, compare], [table, selected, compare, message]))
