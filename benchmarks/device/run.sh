#!/usr/bin/env bash
# On a lent GPU machine, after benchmarks/device/prepare.sh here: every CUDA check of
# benchmarks/cuda_check.py, then pretraining throughput against Hugging Face on the GPU (bf16,
# torch.compile). About 8 minutes on one H200. Results go to $OUT (the device tool's folder),
# at most 8 files: cuda_check.{json,md}, pretrain_throughput_cuda.{json,md}, gpu.txt, logs.tgz.
set -uo pipefail
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl failed: run benchmarks/device/prepare.sh and carry .whl"; exit 1; }
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false SLIMBERT_CACHE=/tmp/slimbert-cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/gpu.txt"
timeout 330 python3 benchmarks/cuda_check.py --data .devdata --out "$OUT" > "$OUT/cuda_check.log" 2>&1
echo "cuda_check exit $?"
timeout 200 python3 benchmarks/pretrain_throughput.py --device cuda --compile --model-config mini \
    --vocab .devdata/vocab --corpus .devdata/corpus.txt --batch-size 256 --steps 30 --warmup 10 --rounds 2 \
    --out "$OUT/pretrain_throughput_cuda" > "$OUT/pretrain_throughput.log" 2>&1
echo "pretrain_throughput exit $?"
(cd "$OUT" && tar czf logs.tgz ./*.log && rm -f ./*.log)
cat "$OUT/cuda_check.md" "$OUT/pretrain_throughput_cuda.md" 2>/dev/null
