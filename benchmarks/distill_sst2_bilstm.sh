#!/usr/bin/env bash
# The BiLSTM target rows of BENCHMARKS.md: Tang et al.'s recipe on a slice of SST-2 train.
# Per seed, on the first N training sentences:
#   bilstm-labels        the BiLSTM on gold labels alone, 2 epochs
#   bilstm-aug<C>        the BiLSTM distilled (logit MSE) with C augmented copies per sentence
# then one `slimbert report` of every finished run against the teacher.
#
#   bash benchmarks/distill_sst2_bilstm.sh TEACHER_DIR OUT_DIR N COPIES AUG_EPOCHS [SEED...]
#
# e.g. N=10000 COPIES=20 AUG_EPOCHS=1 (BENCHMARKS "10,000 sentences and 20 copies").
# A run whose results.json exists is skipped. The augmented set and the teacher's logits over it
# are cached (SLIMBERT_CACHE) and shared by every seed: the augmentation seed is fixed.
set -euo pipefail
teacher=${1:?teacher dir}
out=${2:?output dir}
n=${3:?number of training sentences}
copies=${4:?augmented copies per sentence}
aug_epochs=${5:?epochs of the augmented run}
shift 5
[ $# -gt 0 ] && seeds=("$@") || seeds=(1 2 3)
data=${SLIMBERT_DATA:-../shared/data}/glue
py=${PYTHON:-.venv/bin/python}
common=(--teacher "$teacher" --task sst2 --data-dir "$data" --max-train-examples "$n"
        --student bilstm --batch-size 64 --no-progress)
for seed in "${seeds[@]}"; do
  run() { name=$1; shift; [ -f "$out/$name-s$seed/results.json" ] || $py -m slimbert distill "${common[@]}" --seed "$seed" --out "$out/$name-s$seed" "$@"; }
  run bilstm-labels --labels-only --epochs 2
  run "bilstm-aug$copies" --augment "$copies" --epochs "$aug_epochs" --save-every-steps 1000
done
$py -m slimbert report "$out"/*-s[0-9]* --teacher "$teacher" --task sst2 --data-dir "$data" \
  --rounds 3 --threads 2 --out "$out/report" --no-progress
