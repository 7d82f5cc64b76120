"""Export a checkpoint: the LoRA adapter in PEFT format (folder + zip), optionally a merged model."""

from __future__ import annotations

import shutil
from pathlib import Path

from rft.runs import checkpoint_path, list_checkpoints, read_config, run_dir_for

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
EXPORTS_DIR = "exports"  # under the runs directory: where the dashboard writes exports


class ExportError(RuntimeError):
    pass


def _model_card(run_dir: Path, step: int) -> str:
    config = read_config(run_dir)
    return (
        f"# LoRA adapter from run `{run_dir.name}`, step {step}\n\n"
        f"- Base model: `{config.model.name_or_path}`\n"
        f"- Trained with GRPO by the RFT dashboard; dataset: `{config.data.path or config.data.preset}`\n\n"
        "Load it with:\n\n```python\nfrom peft import PeftModel\n"
        "model = PeftModel.from_pretrained(base_model, '<this folder>')\n```\n\n"
        "## Training configuration\n\n```yaml\n" + config.to_yaml() + "```\n"
    )


def export_adapter(run_dir: str | Path, out: str | Path, step: int | None = None, merged: bool = False) -> dict:
    """Write `out/` (adapter + README [+ merged/]) and `out.zip`; returns the paths written."""
    run_dir = Path(run_dir)
    checkpoint = existing_checkpoint(run_dir, step)
    step = int(checkpoint.name.split("-")[1])
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint / name, out / name)
    (out / "README.md").write_text(_model_card(run_dir, step), encoding="utf-8")
    written = {"adapter_dir": out, "step": step}
    if merged:
        written["merged_dir"] = merge_adapter(run_dir, checkpoint, out / "merged")
    written["zip"] = Path(shutil.make_archive(str(out), "zip", root_dir=out))
    return written


def export_for_dashboard(runs_root: str | Path, run_id: str, step: int | None = None, merged: bool = False) -> dict:
    """Export a run's checkpoint to <runs-root>/exports/<run-id>-step-<N> (+ .zip), replacing an
    earlier export of it. The dashboard never writes to a path a person typed."""
    try:
        run_dir = run_dir_for(runs_root, run_id)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(f"run {run_id} does not exist (any more)")
    checkpoint = existing_checkpoint(run_dir, step)
    out = exports_root(runs_root) / f"{run_id}-{checkpoint.name}"
    shutil.rmtree(out, ignore_errors=True)
    (out.parent / f"{out.name}.zip").unlink(missing_ok=True)
    return export_adapter(run_dir, out, int(checkpoint.name.split("-")[1]), merged)


def exports_root(runs_root: str | Path) -> Path:
    return Path(runs_root).resolve() / EXPORTS_DIR


def existing_checkpoint(run_dir: Path, step: int | None) -> Path:
    """The folder of checkpoint `step` (the latest when None); ExportError naming the available ones."""
    checkpoint = checkpoint_path(run_dir, step)
    if checkpoint is None:
        available = ", ".join(map(str, list_checkpoints(run_dir))) or "none yet"
        raise ExportError(f"run {run_dir.name} has no checkpoint at step {step} (available: {available})")
    return checkpoint


def merge_adapter(run_dir: Path, checkpoint: Path, target: Path) -> Path:
    """The base model with the adapter folded in, loadable by AutoModelForCausalLM alone."""
    from peft import PeftModel

    from rft import models

    config = read_config(run_dir)
    tokenizer = models.load_tokenizer(config.model.name_or_path)
    base = models.load_base_model(config.model)
    merged = PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target
