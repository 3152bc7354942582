#!/usr/bin/env bash
# The SST-2 accuracy-speed frontier of BENCHMARKS.md: the runs that trade accuracy for speed,
# from the fine-tuned teacher, then one `slimbert report` of all of them, each served in fp32,
# bf16 and ONNX Runtime int8 (plus SmoothQuant int8 checkpoints), so that every ratio comes from
# the same process and every point is on one plot.
#
#   bash benchmarks/frontier_sst2.sh TEACHER_DIR OUT_DIR
#
# TEACHER_DIR: the MiniLM-L6 fine-tuned on SST-2 ("SST-2 fine-tune" in BENCHMARKS.md).
# Each step is skipped when its output exists, so the script can be re-run after an interruption.
set -euo pipefail
teacher=${1:?teacher dir}
out=${2:?output dir}
data=${SLIMBERT_DATA:-../shared/data}/glue
py=${PYTHON:-.venv/bin/python}
task=(--task sst2 --data-dir "$data" --no-progress)
done_() { [ -f "$1/results.json" ] || [ -f "$1/prune.json" ]; }

# 1. A 3-layer student (teacher layers 0,2,4), distilled on all 67k SST-2 sentences.
done_ "$out/bert3-full" || $py -m slimbert distill --teacher "$teacher" --student bert:layers=3 "${task[@]}" \
  --epochs 2 --precision bf16 --batch-size 32 --seed 1 --out "$out/bert3-full"

# 1b. The same student with Tang et al.'s augmentation (2 copies of every sentence, 200k in all).
done_ "$out/bert3-full-aug" || $py -m slimbert distill --teacher "$teacher" --student bert:layers=3 "${task[@]}" \
  --epochs 2 --precision bf16 --batch-size 32 --seed 1 --augment 2 --save-every-steps 1000 --out "$out/bert3-full-aug"

# 1c. The same student as in 1, trained 4 epochs instead of 2 (no augmentation), seeds 1 and 2.
done_ "$out/bert3-full-e4" || $py -m slimbert distill --teacher "$teacher" --student bert:layers=3 "${task[@]}" \
  --epochs 4 --precision bf16 --batch-size 32 --seed 1 --save-every-steps 1000 --out "$out/bert3-full-e4"
done_ "$out/bert3-full-e4-seed2" || $py -m slimbert distill --teacher "$teacher" --student bert:layers=3 "${task[@]}" \
  --epochs 4 --precision bf16 --batch-size 32 --seed 2 --save-every-steps 1000 --out "$out/bert3-full-e4-seed2"

# 2. Heads and neurons pruned from the teacher, recovered by distillation (20k sentences, 1 epoch).
done_ "$out/heads50-ffn50-rec" || $py -m slimbert prune --model "$teacher" --heads 0.5 --ffn 0.5 "${task[@]}" \
  --out "$out/heads50-ffn50-rec" --recover-epochs 1 --teacher "$teacher" --max-train-examples 20000 \
  --precision bf16 --lr 5e-5

# 3. More feed-forward pruning, recovered on all 67k sentences.
done_ "$out/heads50-ffn70-rec" || $py -m slimbert prune --model "$teacher" --heads 0.5 --ffn 0.7 "${task[@]}" \
  --out "$out/heads50-ffn70-rec" --recover-epochs 1 --teacher "$teacher" --precision bf16 --lr 1e-4

# 4. The teacher's recipe again with LayerDrop 0.2, then layers dropped from each teacher.
done_ "$out/teacher-layerdrop" || $py -m slimbert finetune --model bundled:minilm-l6 "${task[@]}" \
  --epochs 1 --lr 1e-4 --warmup-ratio 0.06 --batch-size 32 --precision bf16 --seed 42 \
  --layerdrop 0.2 --out "$out/teacher-layerdrop"
for keep in 0,2,4 0,1,3,5; do
  name=keep${keep//,/}
  done_ "$out/layerdrop-$name" || $py -m slimbert prune --model "$out/teacher-layerdrop" --layers keep=$keep \
    "${task[@]}" --out "$out/layerdrop-$name"
  done_ "$out/plain-$name" || $py -m slimbert prune --model "$teacher" --layers keep=$keep \
    "${task[@]}" --out "$out/plain-$name"
done

# 5. The distilled student pruned in turn, recovered from the teacher.
done_ "$out/bert3-full-heads50-rec" || $py -m slimbert prune --model "$out/bert3-full" --heads 0.5 "${task[@]}" \
  --out "$out/bert3-full-heads50-rec" --recover-epochs 1 --teacher "$teacher" --max-train-examples 20000 \
  --precision bf16 --lr 5e-5

done_ "$out/bert3-full-aug-heads50-rec" || $py -m slimbert prune --model "$out/bert3-full-aug" --heads 0.5 "${task[@]}" \
  --out "$out/bert3-full-aug-heads50-rec" --recover-epochs 1 --teacher "$teacher" --max-train-examples 20000 \
  --precision bf16 --lr 5e-5

# 5c. The 4-epoch students with 25% and 50% of their heads pruned, no recovery.
for run in bert3-full-e4 bert3-full-e4-seed2; do
  for h in 25 50; do
    done_ "$out/$run-heads$h" || $py -m slimbert prune --model "$out/$run" --heads 0.$h "${task[@]}" \
      --out "$out/$run-heads$h"
  done
done

# 6. SmoothQuant-calibrated int8 checkpoints (every Linear) of the teacher and the students.
for run in "$teacher" "$out/bert3-full" "$out/bert3-full-heads50-rec" "$out/heads50-ffn50-rec" "$out/heads50-ffn70-rec"; do
  q=$out/$(basename "$run")-int8
  [ -f "$q/config.json" ] || $py -m slimbert quantize --model "$run" --task sst2 --data-dir "$data" --out "$q"
done

# 7. One report of everything (seed 1 of step 1c), each run also served in bf16 and by ONNX
#    Runtime int8; then one report of the 4-epoch students of both seeds and their pruned heads.
$py -m slimbert report "$out"/bert3-full "$out"/bert3-full-heads50-rec "$out"/bert3-full-aug "$out"/bert3-full-aug-heads50-rec/pruned \
  "$out"/bert3-full-e4 "$out"/bert3-full-e4-heads25 "$out"/bert3-full-e4-heads50 "$out"/heads50-ffn50-rec "$out"/heads50-ffn70-rec \
  "$out"/layerdrop-keep024 "$out"/layerdrop-keep0135 "$out"/plain-keep024 "$out"/plain-keep0135 \
  "$out"/teacher-layerdrop "$out"/*-int8 --teacher "$teacher" \
  --backend torch torch-bf16 onnxruntime-int8 --rounds 3 --threads 2 \
  --task sst2 --data-dir "$data" --out "$out/report" --no-progress
$py -m slimbert report "$out"/bert3-full-e4 "$out"/bert3-full-e4-seed2 "$out"/bert3-full-e4{,-seed2}-heads{25,50} \
  --teacher "$teacher" --backend torch torch-bf16 onnxruntime-int8 --rounds 3 --threads 2 \
  --task sst2 --data-dir "$data" --out "$out/report-e4" --no-progress
