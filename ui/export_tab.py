"""The Export tab: a checkpoint's LoRA adapter (PEFT format) as a folder and a zip, optionally the
merged model; always written under <runs-dir>/exports/, never to a path typed in the browser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rft.config import ConfigError
from rft.export import MERGED_DTYPES, ExportError, export_for_dashboard, exports_root
from rft.runs import list_checkpoints
from ui.common import missing_run_notice, notice, resolve_run, run_picker_update
from ui.policy_picker import POLICY_FAILURES


@dataclass
class ExportTab:
    on_load: tuple[Callable, list, list]


def build(runs_root: Path) -> ExportTab:
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        run = gr.Dropdown([], label="Run", scale=3, elem_id="export-run")
        step = gr.Dropdown([], label="Checkpoint step", scale=1, elem_id="export-step")
        merged = gr.Checkbox(False, label="Also the merged full model", scale=1, elem_id="export-merged",
                             info="safetensors + tokenizer, for AutoModelForCausalLM.from_pretrained")
        merged_dtype = gr.Radio(list(MERGED_DTYPES), value="fp32", label="Merged weights", scale=1,
                                elem_id="export-merged-dtype", info="bf16: half the size")
        export = gr.Button("Export", variant="primary", elem_id="export-go")
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=90)
    gr.Markdown(f"Exports are written to `{exports_root(runs_root)}`.", elem_classes="muted")
    message = gr.HTML(elem_id="export-message")
    download = gr.DownloadButton("Download the zip", visible=False, elem_id="export-download")

    def load_runs(run_id):
        """The runs and the chosen run's checkpoints, both fresh (a run may have saved one since)."""
        runs = run_picker_update(runs_root, run_id)
        return runs, *on_run_change(runs["value"])

    def on_run_change(run_id):
        run_dir = resolve_run(runs_root, run_id)
        steps = list_checkpoints(run_dir) if run_dir else []
        if run_dir is None:
            hint = missing_run_notice(run_id) if run_id else ""
        else:
            hint = "" if steps else notice("This run has no checkpoint yet.", "info")
        return gr.update(choices=steps, value=steps[-1] if steps else None), hint, gr.update(visible=False)

    def run_export(run_id, step_value, with_merged, dtype):
        if resolve_run(runs_root, run_id) is None or step_value is None:
            yield notice("Choose a run and one of its checkpoints.", "warn"), gr.update(visible=False)
            return
        work = "merging the full model takes a while; " if with_merged else ""
        yield notice(f"Exporting step {step_value} ({work}please wait)…"), gr.update(visible=False)
        try:
            written = export_for_dashboard(runs_root, run_id, int(step_value), merged=bool(with_merged),
                                           merged_dtype=dtype)
        except (ExportError, ConfigError, *POLICY_FAILURES) as exc:
            yield notice(f"Export failed: {exc}", "error"), gr.update(visible=False)
            return
        lines = [f"Exported {run_id} step {written['step']}.", f"Adapter folder: {written['adapter_dir']}",
                 f"Base model named in adapter_config.json: {written['base_model']}"]
        if "merged_dir" in written:
            lines.append(f"Merged model ({dtype}): {written['merged_dir']}")
        lines.append(f"Zip: {written['zip']}")
        yield notice("\n".join(lines), "ok"), gr.update(value=str(written["zip"]), visible=True,
                                                         label=f"Download {Path(written['zip']).name}")

    pickers = [run, step, message, download]
    refresh.click(load_runs, run, pickers)
    run.change(on_run_change, run, pickers[1:])
    export.click(run_export, [run, step, merged, merged_dtype], [message, download])
    return ExportTab(on_load=(load_runs, [run], pickers))
