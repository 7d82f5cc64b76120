"""Small pieces every tab uses: the list of runs for pickers, and how messages look."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

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
