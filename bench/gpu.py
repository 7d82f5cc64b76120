"""What a GPU measurement needs, made here and used there (bench/gpu.sh runs it on the GPU machine).

    python -m bench.gpu prepare .gpu                       here: the folder the GPU call carries
    python -m bench.gpu random-model .gpu/model OUT_DIR    there: the bundled model's shapes, random weights

The GPU machine has no network, and a call carries at most 64 MiB with the working tree. The
bundled model is a 98 MB GGUF file, so it cannot travel; its config and tokenizer (3.5 MB) do, and
the GPU side builds the same architecture with random weights. Speed and memory depend on the
shapes, not on the weights' values; a random model never writes end-of-sequence, so every row
decodes every token, as bench.generation asks of the real one anyway. The GPU image has torch,
accelerate and pandas; the wheels carried are the packages it lacks (TRL and what TRL needs) and
the versions this project is tested with where the image has others.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja")
CARRIED_PACKAGES = ("transformers", "peft", "trl", "datasets", "dill", "multiprocess")
# The GPU image's Python (the device tool's notes): wheels are fetched for it, not for this machine.
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def prepare(folder: Path) -> None:
    """Write folder/model (the bundled model's config and tokenizer, no weights) and folder/wheels
    (CARRIED_PACKAGES at the versions installed here, for the GPU image's Python)."""
    from rft import models
    from rft.config import BUNDLED_MODEL

    copy_model_files(models.resolve_model_dir(BUNDLED_MODEL), folder / "model")
    wheels = folder / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in CARRIED_PACKAGES]
    platforms = [option for platform in GPU_PLATFORMS for option in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", GPU_PYTHON, "--implementation", "cp", *platforms, "--dest", str(wheels), *pins],
                   check=True)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    print(f"{folder}: {', '.join(pins)}; the model's config and tokenizer; {size / 2**20:.1f} MiB in all")


def random_model(model_files: Path, out: Path, seed: int = 0) -> Path:
    """A bf16 model directory of the architecture in `model_files`, with random weights and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_files), dtype=torch.bfloat16)
    model.save_pretrained(out)
    copy_model_files(model_files, out, skip=("config.json",))  # save_pretrained wrote the config
    return out


def copy_model_files(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """The MODEL_FILES that `source` has, copied into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if name not in skip and (source / name).exists():
            shutil.copy2(source / name, target / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_command = commands.add_parser("prepare", help="write the folder the GPU call carries")
    prepare_command.add_argument("folder", type=Path)
    model_command = commands.add_parser("random-model", help="build the random-weight model from the carried files")
    model_command.add_argument("model_files", type=Path)
    model_command.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.folder)
    else:
        print(f"random-weight model: {random_model(args.model_files, args.out)}")


if __name__ == "__main__":
    main()
