#!/usr/bin/env bash
# SST-2 teacher row of BENCHMARKS.md: the bundled MiniLM-L6 fine-tuned on all of SST-2 train
# (1 epoch, bf16 autocast), once per seed. Seed 42 is the teacher every SST-2 student learns from.
#
#   bash benchmarks/teacher_sst2.sh OUT_PREFIX [SEED...]     (default seeds: 42 43 44)
# writes OUT_PREFIX-sSEED (seed 42: OUT_PREFIX itself, the `runs/minilm-sst2-full` of the docs)
set -euo pipefail
prefix=${1:?output prefix, e.g. runs/minilm-sst2-full}
shift
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(42 43 44)
data=${SLIMBERT_DATA:-../shared/data}/glue
py=${PYTHON:-.venv/bin/python}
resume() { [ -d "$1/last" ] && echo --resume || true; }
for seed in "${seeds[@]}"; do
  out=$prefix-s$seed
  [ "$seed" = 42 ] && out=$prefix
  [ -f "$out/results.json" ] && continue
  $py -m slimbert finetune --model bundled:minilm-l6 --task sst2 --data-dir "$data" --out "$out" \
    --epochs 1 --lr 1e-4 --warmup-ratio 0.06 --batch-size 32 --precision bf16 --seed "$seed" \
    --save-every-steps 500 --no-progress $(resume "$out")
done
