#!/usr/bin/env bash
# Make, in the repo root, what benchmarks/device/run.sh needs on a lent GPU machine. That machine
# reaches nothing outside and receives only the working tree (64 MiB at most), so this writes:
#   .devdata/  corpus.txt (8 MB of Wikipedia), vocab/ (the bundled MiniLM's WordPiece vocabulary),
#              glue/sst2 and multi30k/ from ../shared/data
#   .whl/      the wheels its Python image lacks (datasets and its dill and multiprocess)
# Both are git-ignored; name them in the run's `carry`. Untracked files that git does not ignore
# travel too, so ignore any large ones (a run's checkpoints) for the duration of the call.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
rm -rf .devdata .whl
mkdir -p .devdata/vocab .devdata/glue/sst2 .devdata/multi30k .whl
awk '{ n += length($0) + 1; print } n > 8000000 { exit }' "$DATA/pretrain/wikipedia/wiki-00.txt" > .devdata/corpus.txt
teacher=$("$PY" -c "from slimbert.checkpoint import resolve; print(resolve('bundled:minilm-l6'))")
cp "$teacher/vocab.txt" "$teacher/tokenizer_config.json" .devdata/vocab/
cp "$DATA/glue/sst2/train.tsv" "$DATA/glue/sst2/dev.tsv" .devdata/glue/sst2/
for split in train val test_2016_flickr; do cp "$DATA/multi30k/$split".{de,en} .devdata/multi30k/; done
# the image's Python is 3.12; these three are pure Python
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "datasets==$("$PY" -c 'import datasets; print(datasets.__version__)')" \
    "dill==$("$PY" -c 'import dill; print(dill.__version__)')" \
    "multiprocess==$("$PY" -c 'import multiprocess; print(multiprocess.__version__)')"
du -sh .devdata .whl
echo "next: the device tool's run, with carry [\".devdata\", \".whl\"] and the command: bash benchmarks/device/run.sh"
