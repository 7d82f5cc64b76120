"""Export a checkpoint: the LoRA adapter in PEFT format (folder + zip), optionally a merged model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from rft.runs import checkpoint_path, list_checkpoints, read_config, run_dir_for

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
EXPORTS_DIR = "exports"  # under the runs directory: where the dashboard writes exports
MERGED_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}  # the merged model's weights: name -> torch dtype


class ExportError(RuntimeError):
    pass


def _model_card(run_dir: Path, step: int, hub_id: str | None, trained_from: str) -> str:
    config = read_config(run_dir)
    if hub_id:
        # The front matter is what the Hub reads to link an adapter to its base model.
        header = f"---\nbase_model: {hub_id}\nlibrary_name: peft\n---\n\n"
        base_line = f"- Base model: `{hub_id}` (trained on the local copy at `{trained_from}`)\n"
    else:
        header, base_line = "", f"- Base model: `{trained_from}` (a local model, not from the Hugging Face Hub)\n"
    return (
        header
        + f"# LoRA adapter from run `{run_dir.name}`, step {step}\n\n"
        + base_line
        + f"- Trained with GRPO by the RFT dashboard; dataset: `{config.data.path or config.data.preset}`\n\n"
        "Load it with:\n\n```python\nfrom peft import AutoPeftModelForCausalLM\n"
        "model = AutoPeftModelForCausalLM.from_pretrained('<this folder>')  # loads the base model named above\n```\n\n"
        "## Training configuration\n\n```yaml\n" + config.to_yaml() + "```\n"
    )


def _name_base_model_by_hub_id(run_dir: Path, adapter_dir: Path) -> tuple[str | None, str]:
    """Point adapter_config.json at the Hub id the base model came from: PEFT wrote the path it was
    loaded from (for the bundled model, a de-quantised copy in this machine's cache), which loads
    nowhere else. A local model keeps its path. Returns (Hub id or None, the path trained on)."""
    from rft.models import hub_model_id

    config_path = adapter_dir / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    trained_from = adapter_config.get("base_model_name_or_path") or ""
    hub_id = hub_model_id(read_config(run_dir).model.name_or_path)
    adapter_config["base_model_name_or_path"] = hub_id or trained_from
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return hub_id, trained_from


def export_adapter(run_dir: str | Path, out: str | Path, step: int | None = None, merged: bool = False,
                   merged_dtype: str = "fp32") -> dict:
    """Write `out/` (adapter + README [+ merged/ in `merged_dtype`]) and `out.zip`; returns the paths written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: the run directory does not exist (`python -m rft runs` lists the runs)")
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(f"{run_dir}: not a run directory (no config.yaml)")
    if merged and merged_dtype not in MERGED_DTYPES:
        raise ExportError(f"merged dtype {merged_dtype!r}: choose one of {', '.join(MERGED_DTYPES)}")
    checkpoint = existing_checkpoint(run_dir, step)
    step = int(checkpoint.name.split("-")[1])
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint / name, out / name)
    hub_id, trained_from = _name_base_model_by_hub_id(run_dir, out)
    (out / "README.md").write_text(_model_card(run_dir, step, hub_id, trained_from), encoding="utf-8")
    written = {"adapter_dir": out, "step": step, "base_model": hub_id or trained_from}
    if merged:
        written["merged_dir"] = merge_adapter(run_dir, checkpoint, out / "merged", merged_dtype)
    written["zip"] = Path(shutil.make_archive(str(out), "zip", root_dir=out))
    return written


def export_for_dashboard(runs_root: str | Path, run_id: str, step: int | None = None, merged: bool = False,
                         merged_dtype: str = "fp32") -> dict:
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
    return export_adapter(run_dir, out, int(checkpoint.name.split("-")[1]), merged, merged_dtype)


def exports_root(runs_root: str | Path) -> Path:
    return Path(runs_root).resolve() / EXPORTS_DIR


def existing_checkpoint(run_dir: Path, step: int | None) -> Path:
    """The folder of checkpoint `step` (the latest when None); ExportError naming the available ones."""
    checkpoint = checkpoint_path(run_dir, step)
    if checkpoint is None:
        available = ", ".join(map(str, list_checkpoints(run_dir)))
        if not available:
            raise ExportError(f"run {run_dir.name} has no checkpoint yet (one is saved every schedule.save_every "
                              "steps and at the end)")
        raise ExportError(f"run {run_dir.name} has no checkpoint at step {step} (available: {available})")
    return checkpoint


def merge_adapter(run_dir: Path, checkpoint: Path, target: Path, dtype: str = "fp32") -> Path:
    """The base model with the adapter folded in, loadable by AutoModelForCausalLM alone; merged
    in fp32 and then stored in `dtype` (bf16 halves the size). A QLoRA run's adapter is merged into
    the unquantised base too: a 4-bit merge would round the adapter's update away."""
    import torch
    from peft import PeftModel

    from rft import models

    config = read_config(run_dir)
    tokenizer = models.load_tokenizer(config.model.name_or_path)
    full_precision = dataclasses.replace(config.model, dtype="float32", gradient_checkpointing=False, load_in_4bit=False)
    base = models.load_base_model(full_precision)
    merged = PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
    merged.to(getattr(torch, MERGED_DTYPES[dtype])).save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target
