"""One checkpoint, several ways to serve it: the backends `slimbert bench` compares.

    torch             the checkpoint as saved, in slimbert's own model (eager)
    torch-int8        dynamic int8 quantization of its attention and head layers (slimbert quantize)
    torch-int8-all    dynamic int8 quantization of every Linear layer (--int8-scope all)
    torch-bf16        bfloat16 weights (slimbert quantize --dtype bf16)
    onnxruntime       exported to ONNX, run by ONNX Runtime (CPU provider)
    onnxruntime-int8  the same graph quantized to int8 by ONNX Runtime
    hf                the same weights in Hugging Face `transformers` (SDPA attention)
    torch-cuda        the checkpoint on the GPU, fp32 (inputs copied there, logits copied back)
    torch-cuda-bf16   the same with bfloat16 weights (native on every GPU since Ampere)

Each backend is built from the checkpoint directory into a work folder, so every backend of a
checkpoint serves exactly the same weights.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimbert.checkpoint import load_model, load_tokenizer, save_checkpoint
from slimbert.compress.export import OnnxModel, export_hf, export_onnx, quantize_onnx
from slimbert.compress.quantize import quantize_int8, to_bf16
from slimbert.config import BACKENDS, BertConfig
from slimbert.errors import SlimbertError
from slimbert.models.int8 import is_int8

REFERENCES = ("hf", "onnxruntime")  # measured in every run, where the model allows
# What a backend needs installed beyond torch (the dynamo ONNX exporter needs onnxscript).
LIBRARIES = {"onnxruntime": ("onnx", "onnxscript", "onnxruntime"),
             "onnxruntime-int8": ("onnx", "onnxscript", "onnxruntime"), "hf": ("transformers",)}


class BackendUnavailable(SlimbertError):
    """This backend cannot serve this checkpoint (e.g. ONNX for a BiLSTM)."""


@dataclass
class Served:
    """A model ready to call: `forward(input_ids=, attention_mask=, token_type_ids=) -> logits`."""

    backend: str
    forward: Callable[..., torch.Tensor]
    file_bytes: int  # the files this backend serves from
    dtype: str


def _dir_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir()
               if f.suffix in (".safetensors", ".onnx", ".bin"))


def _torch_forward(model: nn.Module) -> Callable[..., torch.Tensor]:
    def forward(**inputs) -> torch.Tensor:
        out = model(**inputs)
        return out.logits if out.logits is not None else out.last_hidden_state
    return forward


def _hf_model(directory: Path) -> nn.Module:
    import transformers  # build() checked that it is installed

    config = transformers.AutoConfig.from_pretrained(directory)
    arch = (config.architectures or ["BertModel"])[0]
    cls = getattr(transformers, arch)
    return cls.from_pretrained(directory, attn_implementation="sdpa").eval()


def _hf_forward(model: nn.Module) -> Callable[..., torch.Tensor]:
    def forward(**inputs) -> torch.Tensor:
        out = model(**inputs)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state
    return forward


def check_backend(backend: str) -> None:
    """Raise SlimbertError for an unknown backend, BackendUnavailable if what it needs is not installed."""
    if backend not in BACKENDS:
        raise SlimbertError(f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}")
    missing = [name for name in LIBRARIES.get(backend, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailable(f"the {backend} backend needs `pip install {' '.join(missing)}`")
    if backend.startswith("torch-cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"the {backend} backend needs a CUDA GPU, and torch sees none")


def _cuda_forward(model: nn.Module) -> Callable[..., torch.Tensor]:
    """`model` on the GPU; the logits come back to the CPU, which also waits for the GPU to finish."""
    def forward(**inputs) -> torch.Tensor:
        out = model(**{k: v.to("cuda", non_blocking=True) for k, v in inputs.items()})
        return (out.logits if out.logits is not None else out.last_hidden_state).float().cpu()
    return forward


def converted(model: nn.Module, backend: str) -> nn.Module:
    """`model` as a torch backend serves it: bf16 weights (`-bf16`), int8 in every Linear
    (`-int8-all`) or in the attention layers (`-int8`), uncalibrated; as it is for torch and
    torch-cuda."""
    if backend in ("torch", "torch-cuda"):
        return model
    if backend.endswith("-bf16"):
        return to_bf16(model)
    return quantize_int8(model, "all" if backend.endswith("-all") else "attention")


def build(checkpoint: str | Path, backend: str, workdir: Path, model: nn.Module | None = None) -> None:
    """Write what `backend` serves `checkpoint` from into `workdir` (nothing for torch).
    `model` is the checkpoint already loaded (it is not changed); the onnxruntime backends
    share one workdir: the graph exported for one is reused by the other."""
    check_backend(backend)
    if backend in ("torch", "torch-cuda"):
        return
    model = load_model(checkpoint) if model is None else model
    if is_int8(model):
        raise BackendUnavailable("the checkpoint is already int8; bench it with the torch backend")
    if backend.startswith("torch-"):
        save_checkpoint(converted(model, backend), None, workdir)
        return
    if not isinstance(model.config, BertConfig):
        raise BackendUnavailable(f"a {model.config.MODEL_TYPE} student serves with torch backends only")
    workdir.mkdir(parents=True, exist_ok=True)
    if backend.startswith("onnxruntime"):
        path = workdir / "model.onnx"
        if not path.exists():
            export_onnx(model, path)
        if backend == "onnxruntime-int8" and not (workdir / "model_int8.onnx").exists():
            quantize_onnx(path, workdir / "model_int8.onnx")
        return
    export_hf(model.float(), load_tokenizer(checkpoint), workdir)  # pruned models pad back with zeros


def load(checkpoint: str | Path, backend: str, workdir: Path, threads: int | None = None) -> Served:
    """The model `build` prepared, loaded from its files as a user would serve it."""
    checkpoint = Path(checkpoint)
    if backend.startswith("torch-cuda"):
        model = load_model(workdir if backend.endswith("-bf16") else checkpoint, check_vocab=False)
        if is_int8(model):
            raise BackendUnavailable("int8 checkpoints serve on the CPU; bench them with the torch backend")
        files = workdir if backend.endswith("-bf16") else checkpoint
        return Served(backend, _cuda_forward(model.to("cuda").eval()), _dir_bytes(files),
                      "bfloat16" if backend.endswith("-bf16") else "float32")
    if backend == "torch":
        model = load_model(checkpoint)
        dtype = "int8" if is_int8(model) else str(next(model.parameters()).dtype).replace("torch.", "")
        return Served(backend, _torch_forward(model), _dir_bytes(checkpoint), dtype)
    if backend.startswith("torch-"):
        return Served(backend, _torch_forward(load_model(workdir, check_vocab=False)), _dir_bytes(workdir),
                      backend.split("-")[1])
    if backend.startswith("onnxruntime"):
        path = workdir / ("model_int8.onnx" if backend.endswith("int8") else "model.onnx")
        return Served(backend, OnnxModel(path, threads), path.stat().st_size,
                      "int8" if backend.endswith("int8") else "float32")
    return Served(backend, _hf_forward(_hf_model(workdir)), _dir_bytes(workdir), "float32")

