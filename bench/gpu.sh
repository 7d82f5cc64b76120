#!/usr/bin/env bash
# The GPU figures in one call of a CUDA machine that has no network (README, "On a GPU"). Prepared
# here by `make gpu-prepare`, which writes .gpu/ (the wheels the GPU image lacks, the bundled
# model's config and tokenizer); the call carries .gpu and runs `bash bench/gpu.sh`. It writes the
# tables to $OUT (bench/results/gpu/ when OUT is unset).
set -euo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/rft-site .gpu/wheels/*.whl
export PYTHONPATH=/tmp/rft-site:$PWD PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/gpu.txt"
python3 -m bench.gpu random-model .gpu/model /tmp/smollm2-135m-random
# Generation alone: the rollout generator against generate(), 16 and 64 rows of 256 tokens, bf16.
python3 -m bench.generation --device cuda --model /tmp/smollm2-135m-random --rows 16 64 --tokens 256 --repeats 3 \
  | tee "$OUT/generation.md"
# Whole GRPO steps against TRL's GRPOTrainer: G = 16, 256-token completions, bf16.
python3 -m bench.run --model /tmp/smollm2-135m-random --generations 16 --completion-length 256 --steps 3 \
  | tee "$OUT/trainers.md"
cp "$(ls -t bench/results/*.json | head -1)" "$OUT/trainers.json"
