#!/usr/bin/env bash
# General (task-agnostic) distillation row of BENCHMARKS.md: the bundled MiniLM-L6 distilled into
# `bert:layers=3` (from its layers 0, 2, 4) on raw text (WikiText-2, Multi30k English and the SST-2
# training sentences, labels dropped), then task-distilled on SST-2 exactly like the `bert3-distilled`
# rows of benchmarks/distill_sst2.sh (same teacher, same 5,000 rows, 2 epochs, seeds 1-3). The control,
# `bert3-pretrained-distilled`, starts from the same MiniLM layers 0, 2, 4 without general distillation.
#
# The corpus is the three sources' lines of 3+ words shuffled together (seeded), first LINES of them
# (default 24,000: what one CPU session affords), cut at 64 tokens.
#
#   bash benchmarks/general_distill_sst2.sh TEACHER_DIR OUT_DIR [TRAIN_EXAMPLES] [LINES]
set -euo pipefail
teacher=${1:?fine-tuned SST-2 teacher dir}
out=${2:?output dir}
n=${3:-5000}
lines=${4:-24000}
data=${SLIMBERT_DATA:-../shared/data}
py=${PYTHON:-.venv/bin/python}
resume() { [ -d "$1/last" ] && echo --resume || true; }
mkdir -p "$out"
corpus=$out/corpus.txt
{ cat "$data/wikitext-2/wiki.valid.tokens" "$data/wikitext-2/wiki.test.tokens" "$data/multi30k/train.en"
  tail -n +2 "$data/glue/sst2/train.tsv" | cut -f1; } | awk 'NF >= 3' \
  | shuf -n "$lines" --random-source=<(yes) > "$corpus"
g=$out/bert3-general
[ -f "$g/results.json" ] || $py -m slimbert distill-general --teacher bundled:minilm-l6 --student bert:layers=3 \
  --corpus "$corpus" --max-length 64 --epochs 1 --batch-size 32 --precision bf16 --seed 1 --save-every-steps 100 \
  --no-progress --out "$g" $(resume "$g")
p=$out/bert3-pretrained
[ -f "$p/model.safetensors" ] || $py -c "import sys; from slimbert import load_model
from slimbert.checkpoint import load_tokenizer, save_checkpoint
from slimbert.compress.students import keep_layers
save_checkpoint(keep_layers(load_model('bundled:minilm-l6'), [0, 2, 4]), load_tokenizer('bundled:minilm-l6'), sys.argv[1])" "$p"
for seed in 1 2 3; do
  for name in general pretrained; do
    r=$out/bert3-$name-distilled-s$seed
    [ -f "$r/results.json" ] || $py -m slimbert distill --teacher "$teacher" --student "$out/bert3-$name" --task sst2 \
      --data-dir "$data/glue" --max-train-examples "$n" --epochs 2 --precision bf16 --batch-size 32 \
      --seed "$seed" --no-progress --out "$r" $(resume "$r")
  done
done
