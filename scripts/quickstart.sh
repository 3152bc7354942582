#!/usr/bin/env bash
# Set up, then run the main job on the bundled default: fine-tune the MiniLM-L6 teacher on
# SST-2 (a 6,000-sentence slice, one epoch), distil it into a 3-layer student initialised from
# every other teacher layer, and report both side by side (accuracy, size, latency, throughput,
# plot in runs/quickstart-report/report.png). A few minutes on a 2-core CPU once installed.
# GLUE is read from ../shared/data/glue when present, else downloaded with `datasets`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA_DIR=${DATA_DIR:-../shared/data/glue}
data_args=()
[ -d "$DATA_DIR" ] && data_args=(--data-dir "$DATA_DIR")
.venv/bin/slimbert finetune --model bundled:minilm-l6 --task sst2 "${data_args[@]}" \
    --max-train-examples 6000 --epochs 1 --lr 1e-4 --warmup-ratio 0.06 --out runs/quickstart
.venv/bin/slimbert distill --teacher runs/quickstart --student bert:layers=3 --task sst2 "${data_args[@]}" \
    --max-train-examples 6000 --epochs 1 --out runs/quickstart-student
.venv/bin/slimbert report runs/quickstart-student --teacher runs/quickstart --task sst2 "${data_args[@]}" \
    --out runs/quickstart-report
echo "it 's a charming and often affecting journey ." | .venv/bin/slimbert predict --model runs/quickstart-student
