#!/usr/bin/env bash
# The full-data SST-2 rows of BENCHMARKS.md: students trained on all 67,349 training sentences
# (not the 5,000-row slice of distill_sst2.sh), per seed:
#   bert3-e4             bert:layers=3 (teacher layers 0,2,4), soft CE at T=2, 4 epochs
#   bilstm-labels        the BiLSTM on gold labels alone, 2 epochs
#   bilstm-aug2          the BiLSTM distilled (logit MSE) with 2 augmented copies per sentence, 2 epochs
# then one `slimbert report` of every finished run against the teacher.
#
#   bash benchmarks/distill_sst2_full.sh TEACHER_DIR OUT_DIR [SEED...]     (seeds default to 1 2 3)
#
# A run whose results.json exists is skipped, so the script can be re-run for more seeds.
# Teacher logits are cached (SLIMBERT_CACHE), so later seeds skip the teacher's pass.
set -euo pipefail
teacher=${1:?teacher dir}
out=${2:?output dir}
shift 2
[ $# -gt 0 ] && seeds=("$@") || seeds=(1 2 3)
data=${SLIMBERT_DATA:-../shared/data}/glue
py=${PYTHON:-.venv/bin/python}
common=(--teacher "$teacher" --task sst2 --data-dir "$data" --no-progress)
for seed in "${seeds[@]}"; do
  run() { name=$1; shift; [ -f "$out/$name-s$seed/results.json" ] || $py -m slimbert distill "${common[@]}" --seed "$seed" --out "$out/$name-s$seed" "$@"; }
  run bert3-e4 --student bert:layers=3 --epochs 4 --precision bf16 --batch-size 32 --save-every-steps 1000
  run bilstm-labels --student bilstm --labels-only --epochs 2 --batch-size 64
  run bilstm-aug2 --student bilstm --augment 2 --epochs 2 --batch-size 64
done
$py -m slimbert report "$out"/*-s[0-9]* --teacher "$teacher" --task sst2 --data-dir "$data" \
  --rounds 3 --threads 2 --out "$out/report" --no-progress
