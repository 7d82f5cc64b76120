"""The Inspect tab: the GRPO loss of one completion, token by token (rft.inspect_tokens)."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from rft.config import ConfigError
from rft.inspect_tokens import InspectError, TokenReport, inspect_completion, inspectable_steps
from rft.runs import read_config, read_rollouts
from ui.common import missing_run_notice, notice, resolve_run, run_picker_update
from ui.policy_picker import LOADED_POLICIES, POLICY_FAILURES

EXPLANATION = (
    "A completion stored at step N was sampled by the policy before step N's update; its tokens and their "
    "probabilities then are stored with the rollouts, so every step can be inspected. "
    "Each token is coloured by the push of the run's loss on its log-probability (the gradient of its "
    "contribution, e.g. min(ratio·A, clip(ratio)·A) − β·KL): green raised, red lowered, none where clipping "
    "stops it. The ratio compares checkpoint N (after the update, when it is on disk) with the sampling policy; "
    "with one pass per "
    "batch the loss itself saw ratio 1. Under GSPO every token uses the completion's sequence ratio, under SAPO "
    "the gate scales the gradient, and struck-through tokens are left out by the entropy mask. "
    "Hover a token for its numbers."
)
TABLE_ROWS = 10


@dataclass
class InspectTab:
    on_load: tuple[Callable, list, list]


def build(runs_root: Path) -> InspectTab:
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        run = gr.Dropdown([], label="Run", scale=3, elem_id="inspect-run")
        step = gr.Dropdown([], label="Step", scale=1, elem_id="inspect-step",
                           info="Steps whose sampling policy is on disk")
        completion = gr.Dropdown([], label="Completion", scale=3, elem_id="inspect-completion")
        run_inspection = gr.Button("Inspect", variant="primary", elem_id="inspect-go")
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=90)
    gr.Markdown(EXPLANATION, elem_classes="note")
    message = gr.HTML(elem_id="inspect-message")
    tokens_view = gr.HTML(elem_id="inspect-tokens")
    with gr.Row(equal_height=False):
        most_clipped = gr.Dataframe(label="Most clipped tokens", interactive=False, max_height=320,
                                    elem_id="inspect-clipped")
        highest_kl = gr.Dataframe(label="Highest-KL tokens", interactive=False, max_height=320, elem_id="inspect-kl")
    with gr.Accordion("Every token", open=False):
        all_tokens = gr.Dataframe(interactive=False, max_height=420, elem_id="inspect-all")

    def load_runs(run_id, step_value):
        """The runs and the chosen run's steps, both fresh (a run may have gone on since)."""
        runs = run_picker_update(runs_root, run_id)
        steps, hint = on_run_change(runs["value"])
        if step_value in steps.get("choices", []):
            steps["value"] = step_value
        return runs, steps, hint

    def on_run_change(run_id):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None and run_id:
            return gr.update(choices=[], value=None), missing_run_notice(run_id)
        steps = inspectable_steps(run_dir) if run_dir else []
        if run_dir is not None and not steps:
            return gr.update(choices=[], value=None), notice(
                "No step can be inspected yet: the run has no rollouts (runs from before rollouts stored their "
                "tokens need step 1, or a step right after a checkpoint).",
                "info")
        return gr.update(choices=steps, value=steps[-1] if steps else None), ""

    def on_step_change(run_id, step_value):
        run_dir = resolve_run(runs_root, run_id)
        record = read_rollouts(run_dir, int(step_value)) if run_dir and step_value is not None else None
        if record is None:
            return gr.update(choices=[], value=None)
        choices = []
        for group_index, group in enumerate(record.get("groups", [])):
            for sample, (total, advantage) in enumerate(zip(group["total"], group["advantages"])):
                shown = "unscored" if total is None else f"{total:.3f}"  # no reward function could score it
                choices.append((f"group {group_index} · sample {sample} · total {shown} · advantage {advantage:+.2f}",
                                f"{group_index}:{sample}"))
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    def inspect(run_id, step_value, picked):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None or step_value is None or not picked:
            yield notice("Choose a run, a step and a completion.", "warn"), "", None, None, None
            return
        yield notice("Scoring the tokens under the sampling, updated and reference policies…"), "", None, None, None
        try:
            group, sample = (int(part) for part in picked.split(":"))
            report = inspect_completion(LOADED_POLICIES, run_dir, int(step_value), group, sample)
            beta = read_config(run_dir).grpo.beta
        except (InspectError, ConfigError, *POLICY_FAILURES) as exc:
            yield notice(str(exc), "warn"), "", None, None, None
            return
        summary = (f"Step {report.step} · advantage {report.advantage:+.3f} · β {beta:g} · "
                   f"{len(report.tokens)} tokens · {(report.tokens['clipped'] != '').sum()} clipped · "
                   f"{(~report.tokens['trained'] & ~report.tokens['environment']).sum()} left out by entropy · "
                   f"mean KL {report.tokens['kl'].mean():.4f}\n" + "\n".join(report.notes))
        yield (notice(summary, "info"), tokens_html(report), readable(report.most_clipped(TABLE_ROWS)[CLIPPED_COLUMNS]),
               readable(report.highest_kl(TABLE_ROWS)[KL_COLUMNS]), readable(report.tokens))

    pickers = [run, step, message]
    refresh.click(load_runs, [run, step], pickers)
    run.change(on_run_change, run, [step, message])
    step.change(on_step_change, [run, step], completion)
    run_inspection.click(inspect, [run, step, completion], [message, tokens_view, most_clipped, highest_kl, all_tokens])
    return InspectTab(on_load=(load_runs, [run, step], pickers))


CLIPPED_COLUMNS = ["position", "token", "ratio", "loss_ratio", "clipped", "gate", "contribution", "push"]
KL_COLUMNS = ["position", "token", "p_sampled", "p_ref", "kl"]


def readable(frame: pd.DataFrame):
    """Probabilities span orders of magnitude: four significant digits, not four decimals. A column
    the run's loss has no use for (the gate, outside SAPO) is left out."""
    frame = frame.dropna(axis="columns", how="all").reset_index(drop=True)
    numbers = [column for column in frame.columns
               if column not in ("position", "token", "clipped", "trained", "environment")]
    return frame.style.format({column: "{:.4g}" for column in numbers})


def tokens_html(report: TokenReport) -> str:
    """The completion as coloured tokens: green where the loss pushes a token's log-probability up, red
    where down, stronger for a larger push; a border marks clipped tokens, a strike-through the tokens
    the entropy mask leaves out; an episode's environment tokens are grey (context only)."""
    pushes = report.tokens["push"]
    scale = max(float(pushes.abs().max()), 1e-9)
    spans = []
    for row in report.tokens.itertuples():
        if row.environment:
            spans.append(f'<span class="tok tok-environment" title="the environment\'s token: context only, in no '
                         f'term of the loss">{html.escape(row.token)}</span>')
            continue
        strength = min(abs(row.push) / scale, 1.0) * 0.55
        colour = f"rgba(22, 163, 74, {strength:.2f})" if row.push >= 0 else f"rgba(220, 38, 38, {strength:.2f})"
        loss_ratio = f" · loss ratio {row.loss_ratio:.4f}" if abs(row.loss_ratio - row.ratio) > 1e-9 else ""
        gate = "" if pd.isna(row.gate) else f" · SAPO gate {row.gate:.3f}"
        title = (f"p sampled {row.p_sampled:.4f} · p updated {row.p_updated:.4f} · p ref {row.p_ref:.4f} · "
                 f"ratio {row.ratio:.4f}{loss_ratio}{' (clipped ' + row.clipped + ')' if row.clipped else ''}{gate} · "
                 f"entropy {row.entropy:.3f}{'' if row.trained else ' (left out: low entropy)'} · KL {row.kl:.5f} · "
                 f"contribution {row.contribution:+.4f} · push {row.push:+.4f}")
        css_class = "tok" + (" tok-clipped" if row.clipped else "") + ("" if row.trained else " tok-untrained")
        spans.append(f'<span class="{css_class}" style="background:{colour}" title="{html.escape(title)}">'
                     f"{html.escape(row.token)}</span>")
    return f'<div class="token-view">{"".join(spans)}</div>'
