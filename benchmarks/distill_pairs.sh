#!/usr/bin/env bash
# MRPC and RTE rows of BENCHMARKS.md: the bundled MiniLM-L6 fine-tuned as teacher (3 seeds), then
# `bert:layers=3` and `bilstm` distilled from the seed-1 teacher (3 seeds each), then
# `slimbert report` per task (size, latency and throughput against the teacher in one process).
#
#   bash benchmarks/distill_pairs.sh OUT_DIR [TASK...]      (default tasks: mrpc rte)
set -euo pipefail
out=${1:?output dir}
shift
tasks=("$@")
[ ${#tasks[@]} -eq 0 ] && tasks=(mrpc rte)
data=${SLIMBERT_DATA:-../shared/data}/glue
py=${PYTHON:-.venv/bin/python}
# an interrupted run (OUT/last written, no results.json yet) continues where it stopped
resume() { [ -d "$1/last" ] && echo --resume || true; }
for task in "${tasks[@]}"; do
  d=$out/$task
  for seed in 1 2 3; do
    t=$d/teacher-s$seed
    [ -f "$t/results.json" ] || $py -m slimbert finetune --model bundled:minilm-l6 \
      --task "$task" --data-dir "$data" --epochs 5 --lr 5e-5 --warmup-ratio 0.1 --batch-size 32 \
      --precision bf16 --seed "$seed" --no-progress --out "$t" $(resume "$t")
  done
  common=(--teacher "$d/teacher-s1" --task "$task" --data-dir "$data" --no-progress)
  for seed in 1 2 3; do
    run() { name=$1; shift; r=$d/$name-s$seed; [ -f "$r/results.json" ] || $py -m slimbert distill "${common[@]}" --seed "$seed" --out "$r" $(resume "$r") "$@"; }
    run bert3-distilled --student bert:layers=3 --epochs 5 --precision bf16 --batch-size 32
    run bilstm-distilled --student bilstm --augment 4 --epochs 5 --batch-size 64
  done
  $py -m slimbert report "$d"/bert3-distilled-s? "$d"/bilstm-distilled-s? "$d"/teacher-s2 "$d"/teacher-s3 \
    --teacher "$d/teacher-s1" --task "$task" --data-dir "$data" --out "$d/report" --rounds 1 --threads 2
done
