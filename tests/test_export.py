"""Export: an exported adapter (and merged model) gives the same logits as the checkpoint it came from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from safetensors import safe_open

from rft.__main__ import main as cli_main
from rft.config import BUNDLED_MODEL
from rft.export import ExportError, export_adapter, export_for_dashboard
from rft.models import hub_model_id
from rft.runs import read_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def logits_of(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("Say something short, number 3.", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits


def base_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def exported(tiny_run_dir):
    return export_for_dashboard(tiny_run_dir.parent, tiny_run_dir.name, step=2, merged=True)


def test_the_export_is_a_peft_adapter_with_a_readme_in_the_exports_folder(tiny_run_dir, tiny_model_dir, exported):
    folder = exported["adapter_dir"]
    assert folder == tiny_run_dir.parent / "exports" / f"{tiny_run_dir.name}-step-2" and exported["step"] == 2
    readme = (folder / "README.md").read_text()
    assert str(tiny_model_dir) in readme and "## Training configuration" in readme and "shorter_is_better" in readme
    # A local model is named by its path: there is no Hub id to give.
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    with zipfile.ZipFile(exported["zip"]) as archive:
        names = set(archive.namelist())
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "merged/config.json",
            "merged/model.safetensors", "merged/tokenizer.json"} <= names


def test_the_exported_adapter_gives_the_checkpoints_logits(tiny_run_dir, tiny_model_dir, exported):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    from_checkpoint = PeftModel.from_pretrained(base_model(tiny_model_dir), tiny_run_dir / "checkpoints" / "step-2")
    from_export = PeftModel.from_pretrained(base_model(tiny_model_dir), exported["adapter_dir"])
    expected = logits_of(from_checkpoint, tokenizer)
    assert torch.equal(logits_of(from_export, tokenizer), expected)
    assert not torch.allclose(logits_of(base_model(tiny_model_dir), tokenizer), expected, atol=1e-4)  # it learned

    merged = AutoModelForCausalLM.from_pretrained(exported["merged_dir"])
    merged_tokenizer = AutoTokenizer.from_pretrained(exported["merged_dir"])
    assert torch.allclose(logits_of(merged, merged_tokenizer), expected, atol=1e-4)


def test_a_second_export_replaces_the_first(tiny_run_dir, exported):
    again = export_for_dashboard(tiny_run_dir.parent, tiny_run_dir.name, step=2)
    assert again["adapter_dir"] == exported["adapter_dir"]
    assert not (again["adapter_dir"] / "merged").exists()
    with zipfile.ZipFile(again["zip"]) as archive:
        assert not any(name.startswith("merged/") for name in archive.namelist())


@pytest.mark.parametrize("run_id, step, message", [("../outside", 1, "not a valid run id"),
                                                   ("no-such-run", 1, "does not exist"),
                                                   (None, 7, r"no checkpoint at step 7 \(available: 1, 2, 3\)")])
def test_bad_requests_are_refused(tiny_run_dir, run_id, step, message):
    with pytest.raises(ExportError, match=message):
        export_for_dashboard(tiny_run_dir.parent, run_id or tiny_run_dir.name, step)


def test_the_cli_exports_the_latest_checkpoint(tiny_run_dir, tmp_path):
    out = tmp_path / "my-adapter"
    result = subprocess.run([sys.executable, "-m", "rft", "export", str(tiny_run_dir), "--out", str(out)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "step: 3" in result.stdout
    assert (out / "adapter_model.safetensors").is_file() and (tmp_path / "my-adapter.zip").is_file()


def test_the_cli_names_a_missing_checkpoint(tiny_run_dir, tmp_path, capsys):
    assert cli_main(["export", str(tiny_run_dir), "--step", "9", "--out", str(tmp_path / "out")]) == 2
    assert "no checkpoint at step 9 (available: 1, 2, 3)" in capsys.readouterr().err


def test_an_adapter_of_the_bundled_model_names_its_hub_id_and_keeps_the_local_path_in_the_card(tiny_run_dir, tmp_path):
    """The checkpoint names the de-quantised copy in this machine's cache; the export must load elsewhere."""
    run_dir = tmp_path / "bundled-run"
    shutil.copytree(tiny_run_dir / "checkpoints" / "step-3", run_dir / "checkpoints" / "step-3")
    config = read_config(tiny_run_dir)
    config.model.name_or_path = BUNDLED_MODEL
    (run_dir / "config.yaml").write_text(config.to_yaml())
    trained_from = json.loads((run_dir / "checkpoints" / "step-3" / "adapter_config.json").read_text())[
        "base_model_name_or_path"]

    written = export_adapter(run_dir, tmp_path / "out")
    adapter_config = json.loads((written["adapter_dir"] / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct" == written["base_model"]
    readme = (written["adapter_dir"] / "README.md").read_text()
    assert readme.startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\nlibrary_name: peft\n---")
    assert f"trained on the local copy at `{trained_from}`" in readme


def test_the_hub_id_of_each_kind_of_model_reference(tiny_model_dir):
    assert hub_model_id(BUNDLED_MODEL) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_model_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # a repo in the HF cache
    assert hub_model_id(str(tiny_model_dir)) is None and hub_model_id("models/tiny.gguf") is None


def test_the_cli_merges_in_bf16_the_fp32_merge_rounded(tiny_run_dir, tmp_path):
    for dtype in ("fp32", "bf16"):
        assert cli_main(["export", str(tiny_run_dir), "--step", "2", "--out", str(tmp_path / dtype), "--merged",
                         "--dtype", dtype]) == 0
    with safe_open(tmp_path / "bf16" / "merged" / "model.safetensors", "pt") as bf16, \
            safe_open(tmp_path / "fp32" / "merged" / "model.safetensors", "pt") as fp32:
        assert set(bf16.keys()) == set(fp32.keys())
        for name in fp32.keys():
            assert fp32.get_tensor(name).dtype == torch.float32
            assert torch.equal(bf16.get_tensor(name), fp32.get_tensor(name).to(torch.bfloat16)), name
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16" / "merged").dtype == torch.bfloat16


def test_the_cli_says_when_the_run_directory_does_not_exist(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "runs" / "no-such-run"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "the run directory does not exist" in error and "step None" not in error
