"""Small pieces every tab uses: the list of runs for pickers, and how messages look."""

from __future__ import annotations

import html
import math
from pathlib import Path

import gradio as gr
import pandas as pd

from rft.background import StopRequests
from rft.monitoring import ROLE_LABELS
from rft.runs import list_runs, run_dir_for


def run_ids(runs_root: Path) -> list[str]:
    """Every run under the runs directory, newest first (including runs started from the CLI)."""
    return [run.run_id for run in list_runs(runs_root)]


def run_picker_update(runs_root: Path, selected: str | None) -> dict:
    """Fresh choices for a run dropdown, keeping `selected`, else picking the newest run.

    A picked run whose directory was deleted stays picked, listed as deleted, so the tab says so
    (see `missing_run_notice`) instead of quietly showing, or acting on, another run.
    """
    choices = run_ids(runs_root)
    if selected and selected not in choices:
        return gr.update(choices=[*choices, (f"{selected} (deleted)", selected)], value=selected)
    return gr.update(choices=choices, value=selected or (choices[0] if choices else None))


def resolve_run(runs_root: Path, run_id: str | None) -> Path | None:
    """The directory of a picked run, or None when nothing valid is picked."""
    if not run_id:
        return None
    try:
        run_dir = run_dir_for(runs_root, run_id)
    except ValueError:
        return None
    return run_dir if (run_dir / "config.yaml").exists() else None


def stop_button(stops: StopRequests):
    """The click handler of a Stop / Cancel button: it stops this page's work in `stops` and greys
    itself out; the work's own handler then writes the last message."""
    def stop(request: gr.Request):
        stops.stop(request.session_hash)
        return gr.update(interactive=False)

    return stop


def notice(text: str, kind: str = "info") -> str:
    """A message box (HTML) for a callback's outcome; kind is info, ok, warn or error."""
    if not text:
        return ""
    body = "<br>".join(html.escape(line) for line in text.strip().splitlines())
    return f'<div class="notice notice-{kind}">{body}</div>'


def missing_run_notice(run_id: str) -> str:
    """What a tab shows in place of a run whose directory has gone."""
    return notice(f"Run {run_id} no longer exists: its directory was deleted or moved. Choose another run.", "warn")


def problems_notice(title: str, problems: list[str]) -> str:
    # A problem of several lines (a syntax error: the code line and a caret under the error) is
    # preformatted, so the caret stays under the character it points at.
    items = "".join(f"<li><pre>{html.escape(p)}</pre></li>" if "\n" in p else f"<li>{html.escape(p)}</li>"
                    for p in problems)
    return f'<div class="notice notice-error"><b>{html.escape(title)}</b><ul>{items}</ul></div>'


STATE_CLASSES = {
    "queued": "state-active", "running": "state-active", "stopping": "state-active",
    "finished": "state-done", "stopped": "state-idle", "failed": "state-failed",
}


def state_badge(state: str) -> str:
    return f'<span class="state {STATE_CLASSES.get(state, "state-idle")}">{html.escape(state)}</span>'


TEXT_COLUMN_WIDTHS_PX = {"#": 40, "prompt": 130, "completion": 170, "error": 200}


def score_table(frame: pd.DataFrame) -> dict:
    """A table of reward scores with a width for every column. Left to measure itself, Gradio gives
    the wrapped text columns all the room and squeezes each score column to ~35 px, its name one
    letter a line. Here a score column has room for its name on up to three lines and the number
    under it, so the Train tab's scores (three functions) fit its 690 px panel and Compare's fit
    half the page; a table wider than its panel scrolls sideways."""
    widths = [TEXT_COLUMN_WIDTHS_PX.get(column) or _score_column_width(str(column)) for column in frame.columns]
    return gr.update(value=frame, column_widths=[f"{width}px" for width in widths])


def _score_column_width(name: str) -> int:
    # A third of the name at ~10 px a (bold monospace) character, plus the cell's padding and menu
    # button; at least room for "total" on one line.
    return min(140, max(76, math.ceil(len(name) / 3) * 10 + 32))


def conversation_html(messages: list[dict]) -> str:
    """An episode turn by turn: the model's replies, and the environment's (or a tool's) messages styled apart."""
    turns = []
    for message in messages:
        role = message["role"]
        label = ROLE_LABELS.get(role, role)
        speaker = "model" if role == "assistant" else "environment"
        turns.append(f'<div class="turn turn-{speaker}"><span class="turn-role">{html.escape(label)}</span>'
                     f'<pre class="card-text">{html.escape(message["content"].strip())}</pre></div>')
    return f'<div class="conversation">{"".join(turns)}</div>'
