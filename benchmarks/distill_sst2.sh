#!/usr/bin/env bash
# SST-2 distillation rows of BENCHMARKS.md: each student trained on labels alone, distilled,
# and distilled with Tang et al. augmentation, for 3 seeds. Then `slimbert report` measures
# size, latency and throughput of every run against the teacher in one process.
#
#   bash benchmarks/distill_sst2.sh TEACHER_DIR OUT_DIR [TRAIN_EXAMPLES] [AUGMENT_N]
#
# TEACHER_DIR: the fine-tuned MiniLM-L6 (see "SST-2 fine-tune" in BENCHMARKS.md).
set -euo pipefail
teacher=${1:?teacher dir}
out=${2:?output dir}
n=${3:-5000}
aug=${4:-2}
data=${SLIMBERT_DATA:-../shared/data}/glue
py=${PYTHON:-.venv/bin/python}
common=(--teacher "$teacher" --task sst2 --data-dir "$data" --max-train-examples "$n" --epochs 2 --no-progress)
bert=(--precision bf16 --batch-size 32)
word=(--batch-size 64)
for seed in 1 2 3; do
  run() { name=$1; shift; [ -f "$out/$name-s$seed/results.json" ] || $py -m slimbert distill "${common[@]}" --seed "$seed" --out "$out/$name-s$seed" "$@"; }
  run bert3-labels --student bert:layers=3 --labels-only "${bert[@]}"
  run bert3-distilled --student bert:layers=3 "${bert[@]}"
  run bert3-distilled-aug --student bert:layers=3 --augment "$aug" "${bert[@]}"
  run bilstm-labels --student bilstm --labels-only "${word[@]}"
  run bilstm-distilled --student bilstm "${word[@]}"
  run bilstm-distilled-aug --student bilstm --augment "$aug" "${word[@]}"
  run bert1-distilled --student bert:layers=1 "${bert[@]}"
  run cnn-distilled --student cnn "${word[@]}"
done
