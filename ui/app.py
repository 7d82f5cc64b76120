"""The dashboard: a header and one tab per module, in the order of TABS.

A later tab (Compare, Play Wordle, Inspect, Export) is one more TabSpec: a module with
`build(runs_root)` returning its handles, plus any wiring to other tabs in `connect_tabs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rft.data import MAX_DATASET_BYTES

from ui import compare_tab, export_tab, inspect_tab, monitor_tab, play_tab, rollouts_tab, runs_tab, train_tab

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CSS_PATH = ASSETS / "dashboard.css"


@dataclass(frozen=True)
class TabSpec:
    label: str
    id: str
    build: Callable[[Path], object]


TABS: list[TabSpec] = [
    TabSpec("Train", "train", train_tab.build),
    TabSpec("Monitor", "monitor", monitor_tab.build),
    TabSpec("Rollouts", "rollouts", rollouts_tab.build),
    TabSpec("Runs", "runs", runs_tab.build),
    TabSpec("Compare", "compare", compare_tab.build),
    TabSpec("Play Wordle", "play", play_tab.build),
    TabSpec("Inspect", "inspect", inspect_tab.build),
    TabSpec("Export", "export", export_tab.build),
]


def theme() -> gr.themes.Base:
    """Compact and neutral, with system fonts: a desktop tool that needs nothing from the network."""
    return gr.themes.Default(
        primary_hue="indigo",
        neutral_hue="slate",
        spacing_size="sm",
        radius_size="sm",
        text_size="sm",
        font=["Inter", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["JetBrains Mono", "ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def build_app(runs_root: Path) -> gr.Blocks:
    runs_root = Path(runs_root).resolve()
    with gr.Blocks(title="RFT dashboard") as demo:
        with gr.Row(elem_classes="app-header"):
            gr.HTML('<div class="brand">RFT <span>GRPO fine-tuning dashboard</span></div>')
        built = {}
        with gr.Tabs(elem_id="main-tabs") as tabs:
            tab_items = {}
            for spec in TABS:
                with gr.Tab(spec.label, id=spec.id, elem_id=f"tab-{spec.id}") as item:
                    built[spec.id] = spec.build(runs_root)
                tab_items[spec.id] = item
        connect_tabs(built, tabs, tab_items)
        for handles in built.values():
            fn, inputs, outputs = handles.on_load
            in_order = getattr(handles, "on_load_concurrency_id", None)  # queued with the tab's own events
            demo.load(fn, inputs, outputs, **({"concurrency_id": in_order, "concurrency_limit": 1} if in_order else {}))
    return demo


def connect_tabs(built: dict, tabs: gr.Tabs, tab_items: dict) -> None:
    """Events that cross tabs: a launched run appears in Monitor and Rollouts; Runs opens either."""
    train, monitor, rollouts, runs = built["train"], built["monitor"], built["rollouts"], built["runs"]
    train.current_run.change(monitor.show_run, train.current_run, monitor.show_run_outputs)
    train.current_run.change(rollouts.show_run, train.current_run, rollouts.show_run_outputs)
    runs.open_monitor.click(lambda run_id: (*monitor.show_run(run_id), gr.Tabs(selected="monitor")),
                            runs.selected, [*monitor.show_run_outputs, tabs])
    runs.open_rollouts.click(lambda run_id: (*rollouts.show_run(run_id), gr.Tabs(selected="rollouts")),
                             runs.selected, [*rollouts.show_run_outputs, tabs])
    # Runs started from the CLI, and new checkpoints, appear when a tab that lists them is opened.
    for tab_id in ("monitor", "rollouts", "runs", "compare", "play", "inspect", "export"):
        tab_items[tab_id].select(*built[tab_id].on_load)


def launch(demo: gr.Blocks, host: str, port: int, auth: tuple[str, str] | list | None,
           allowed_paths: list[Path] = ()) -> None:
    """`allowed_paths`: folders whose files the browser may download (the Export tab's exports)."""
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        auth_message="Reward code runs on this machine: sign in to use the dashboard." if auth else None,
        theme=theme(),
        css_paths=[CSS_PATH],
        show_error=True,
        footer_links=[],
        allowed_paths=[str(path) for path in allowed_paths],
        max_file_size=MAX_DATASET_BYTES,  # uploads are datasets; the engine refuses larger ones anyway
    )
