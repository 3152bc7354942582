"""Export: a checkpoint stock `transformers` loads (`export_hf`), ONNX, and ONNX Runtime
sessions to serve (and check) the result.

The graph takes `input_ids`, `attention_mask` and `token_type_ids` (int64, shape (batch,
sequence), both axes dynamic) and returns `logits`: (batch, classes) for a classifier,
(batch, sequence, vocabulary) for an MLM model, or the last hidden states (batch, sequence,
hidden) for a bare encoder. `int8=True` adds ONNX Runtime's dynamic int8 quantization of the
graph (per-channel int8 weights), the ONNX counterpart of `slimbert quantize`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimbert.checkpoint import save_checkpoint
from slimbert.compress.prune import dense_equivalent
from slimbert.compress.roformer import export_roformer
from slimbert.config import BertConfig
from slimbert.errors import CheckpointError
from slimbert.io import atomic_write
from slimbert.models.int8 import is_int8
from slimbert.tokenizer import Tokenizer

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model_int8.onnx"


def export_hf(model: nn.Module, tokenizer: Tokenizer | None, directory: str | Path) -> Path:
    """Write a checkpoint stock `transformers` loads: BertModel/ForSequenceClassification/ForMaskedLM,
    or, for a BERT with rotary positions, RoFormerModel/ForMaskedLM (slimbert.compress.roformer).

    A pruned model is written in the uniform shapes `transformers` expects, the removed heads
    and neurons as zeros (slimbert.compress.prune.dense_equivalent): the same outputs, but not
    the smaller size; keep the slimbert checkpoint (or ONNX) for serving."""
    config = model.config
    if getattr(config, "quantization", None):
        raise CheckpointError("an int8 model has no Hugging Face BERT form; export the fp32 model, "
                              "or use --format onnx (which quantizes the ONNX graph instead)")
    if not isinstance(config, BertConfig):
        raise CheckpointError(f"this model is a {config.MODEL_TYPE}, not a BERT; keep it as a slimbert checkpoint")
    if config.is_pruned:
        model = dense_equivalent(model)
        config = model.config
    if config.is_hf_compatible:
        return save_checkpoint(model, tokenizer, directory)
    if config.position_embedding_type == "rope":
        return export_roformer(model, tokenizer, directory)  # or a one-line reason it cannot
    differences = [(config.norm_style != "post", "norm_style='pre'"),
                   (config.position_embedding_type == "sinusoidal", "sinusoidal positions"),
                   (config.attention_type != "mha", "attention_type='gau'"),
                   (config.attention_scale != "sqrt", "attention_scale='log_n'")]
    why = ", ".join(text for differs, text in differences if differs)
    raise CheckpointError(f"this model uses {why}, which Hugging Face BERT cannot compute; "
                          "keep it as a slimbert checkpoint")


class _Outputs(nn.Module):
    """Tensor in, tensor out: what an ONNX graph can express of slimbert's ModelOutput."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.logits if out.logits is not None else out.last_hidden_state


def _plain_fp32(model: nn.Module) -> nn.Module:
    """The fp32 model ONNX export starts from (an int8 torch model is dequantized first)."""
    if is_int8(model):
        raise CheckpointError("export the fp32 model with --int8 instead: ONNX Runtime quantizes "
                              "the graph itself (PyTorch's int8 modules do not export)")
    return model.float() if next(model.parameters()).dtype != torch.float32 else model


def export_onnx(model: nn.Module, path: str | Path, int8: bool = False, opset: int = 18) -> list[Path]:
    """Write `path` (an .onnx file) and, with `int8`, its int8 twin beside it; returns the files."""
    if not isinstance(model.config, BertConfig):
        raise CheckpointError(f"ONNX export covers BERT models; this is a {model.config.MODEL_TYPE} "
                              "(serve it with PyTorch, or its int8 form)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _plain_fp32(model).cpu().eval()
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2,
                                                                     max=model.config.max_position_embeddings)
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long),
               torch.zeros(2, 8, dtype=torch.long))
    example[1][1, 5:] = 0  # a padded row, so the mask path is what gets traced
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp_file = Path(tmp) / ONNX_NAME
        try:
            program = torch.onnx.export(
                _Outputs(model), example, dynamo=True, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=["logits"],
                dynamic_shapes={name: {0: batch, 1: seq} for name in INPUT_NAMES})
            program.save(str(tmp_file), external_data=False)
        except Exception as e:  # the exporter's own errors are long; keep the first line
            raise CheckpointError(f"ONNX export failed: {str(e).splitlines()[0]}") from e
        atomic_write(path, lambda p: shutil.copyfile(tmp_file, p))
    files = [path]
    if int8:
        files.append(quantize_onnx(path, path.with_name(ONNX_INT8_NAME)))
    return files


def quantize_onnx(src: Path, dst: Path) -> Path:
    """ONNX Runtime dynamic quantization: int8 weights per output channel, activations per batch."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        # The exporter's intermediate shape annotations trip the quantizer's own shape
        # inference; without them it infers everything again, consistently.
        graph = onnx.load(str(src))
        graph.graph.ClearField("value_info")
        plain = Path(tmp) / "plain.onnx"
        onnx.save(graph, str(plain))
        tmp_file = Path(tmp) / dst.name
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # a "consider pre-processing" hint on every call
        try:
            quantize_dynamic(str(plain), str(tmp_file), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        atomic_write(dst, lambda p: shutil.copyfile(tmp_file, p))
    return dst


class OnnxModel:
    """An ONNX Runtime session with the call signature of a slimbert model (numpy in between).
    It runs on `threads` threads, by default torch's (`torch.get_num_threads()`), so that both
    are timed on the same cores; ONNX Runtime's own default is every physical core."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {"input_ids": input_ids.numpy(),
                 "attention_mask": (attention_mask if attention_mask is not None
                                    else torch.ones_like(input_ids)).numpy(),
                 "token_type_ids": (token_type_ids if token_type_ids is not None
                                    else torch.zeros_like(input_ids)).numpy()}
        return torch.from_numpy(np.asarray(self.session.run(None, feeds)[0]))
