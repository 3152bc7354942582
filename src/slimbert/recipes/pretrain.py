"""`slimbert pretrain`: a BERT pretrained with masked-LM on raw text, from scratch or from a checkpoint.

The recipe is BERT's (Devlin et al. 2019) as RoBERTa revised it (Liu et al. 2019): masked-LM
only (no next-sentence prediction), dynamic 80/10/10 masking of 15% of the tokens, full packed
sequences of 128 tokens, large batches through gradient accumulation, AdamW or LAMB (You et al.
2019), linear warm-up and decay over a budget of steps, tokens or time (`--warmup-ratio 0.5`
is Cramming's one-cycle, Geiping & Goldstein 2023).

Model shapes follow Turc et al. 2019 ("Well-Read Students Learn Better"): tiny 2 x 128,
mini 4 x 256, small 4 x 512, medium 8 x 512, base 12 x 768, with 64-wide heads and a 4x
feed-forward, post-norm, and rotary positions (Su et al. 2021; `--positions absolute` for
BERT's learned ones); a config.json file gives any other shape or variant (pre-norm, GAU).

The corpus is tokenized once into memory-mapped shards under the cache (slimbert.data.corpus);
the data position is one global sample index, so a run resumes exactly, replays nothing, and
may resume on another number of processes (slimbert.data.packed).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from slimbert.checkpoint import check_same_vocabulary, load_model, load_tokenizer
from slimbert.config import BertConfig
from slimbert.data.corpus import TokenCorpus, corpus_texts, shard_key
from slimbert.data.masking import SampleMasker
from slimbert.data.packed import PackedMLMBatches
from slimbert.errors import CheckpointError, ConfigError, DataError
from slimbert.evaluation.perplexity import HeldoutMLM, plot_pretraining
from slimbert.hardware import autocast, resolve_device
from slimbert.io import atomic_write_text
from slimbert.models import build_model, count_parameters
from slimbert.recipes.common import positive, resume_point, run_and_record, seed_everything
from slimbert.recipes.distill import default_cache_dir
from slimbert.tokenizer import Tokenizer
from slimbert.training.objectives import MaskedLMObjective
from slimbert.training.optim import build_optimizer
from slimbert.training.sharding import Sharding
from slimbert.training.trainer import TrainConfig, Trainer, data_parallel, gradient_sync, init_distributed

log = logging.getLogger(__name__)

# (layers, hidden size) of the BERT miniatures of Turc et al. 2019; heads are 64 wide and the
# feed-forward 4x the hidden size, as in BERT-base.
MODEL_PRESETS = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
# The presets' positions. Rotary positions won BENCHMARKS.md's architecture table by far (held-out
# perplexity after the same wall-clock); `slimbert export --format hf` writes such a model as
# transformers' RoFormer. "absolute" (BERT's learned positions) loads in BertForMaskedLM as it is.
PRESET_POSITIONS = "rope"
DEFAULT_PRESET = "mini"
DEFAULT_VOCAB_SIZE = 30522
# What pretraining trains with unless told otherwise: one pass over the corpus at RoBERTa's
# small-model learning rate, 6% warm-up, batch 128.
# Checkpoints every 500 steps, for --resume.
TRAIN_DEFAULTS = {"epochs": 1, "lr": 5e-4, "warmup_ratio": 0.06, "batch_size": 128, "weight_decay": 0.01,
                  "save_every_steps": 500}
PLAN_NAME = "pretrain_plan.json"
CURVE_NAME = "pretrain_curve.png"


def parse_duration(text: str) -> float:
    """'2h', '90m', '1h30m', '45s' or plain seconds -> seconds."""
    number = r"(\d+(?:\.\d*)?)"
    m = re.fullmatch(rf"\s*(?:{number}h)?\s*(?:{number}m)?\s*(?:{number}s?)?\s*", str(text))
    if not m or not any(m.groups()):
        raise ValueError(f"expected a duration like 2h, 90m, 1h30m or 3600s, got '{text}'")
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = 3600 * h + 60 * mins + s
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got '{text}'")
    return seconds


@dataclass
class PretrainConfig:
    corpus: list[str]  # raw text files: blank lines between documents (Wikipedia dumps, Gutenberg books)
    out: str  # output directory (the model, BertForMaskedLM layout; last/ for --resume)
    # tiny | mini | small | medium | base (Turc et al. 2019), or a config.json with any BertConfig
    # fields (norm_style, position_embedding_type, ...) (default: mini; with --from, that model)
    model_config: str | None = None
    # dropout of the new model (hidden and attention probabilities), instead of its config's (BERT: 0.1);
    # 0 suits a single pass over the corpus, as in Cramming (Geiping & Goldstein 2023)
    dropout: float | None = None
    # positions of the new model: rope (rotary; the presets' default) or absolute (BERT's learned
    # positions: the output then loads in transformers' BertForMaskedLM as it is); a config.json
    # keeps its own unless this is given
    positions: Literal["rope", "absolute"] | None = None
    # continue pretraining this checkpoint (a bare encoder gets a fresh MLM head); its vocabulary is kept
    init_from: str | None = field(default=None, metadata={"flag": "--from", "metavar": "DIR"})
    # directory with vocab.txt (default: a WordPiece vocabulary trained on the corpus)
    vocab: str | None = None
    vocab_size: int | None = None  # size of the vocabulary trained on the corpus (default: 30522)
    cased: bool = False  # keep case in a vocabulary trained on the corpus
    seq_length: int = 128  # tokens per packed sequence, [CLS] and [SEP] included
    # share of tokens to predict (80% [MASK], 10% random, 10% kept); MosaicBERT uses 0.3
    mask_prob: float = 0.15
    whole_word_mask: bool = False  # choose whole words (all their ## pieces) instead of single tokens
    # sequences per optimizer step over all processes; sets the accumulation to
    # global_batch / (batch_size x processes) (default: batch_size x grad_accum x processes)
    global_batch: int | None = None
    max_tokens: int | None = None  # budget in tokens (sequences x seq_length) instead of --max-steps
    # budget in wall-clock time, e.g. 2h or 90m: the number of steps is estimated once from the
    # measured step time and kept in OUT/pretrain_plan.json, so a resumed run keeps the schedule
    time_budget: float | None = field(default=None, metadata={"parse": parse_duration, "metavar": "DURATION"})
    # where token shards and trained vocabularies are kept (default: $SLIMBERT_CACHE or ~/.cache/slimbert)
    cache_dir: str | None = None
    # shard the parameters, gradients and optimizer state over the torchrun processes (FSDP2), for
    # models that do not fit one device
    fsdp: bool = False
    # split every layer over N processes, Megatron-LM's layout (q/k/v and FFN-in by columns,
    # attention-out and FFN-out by rows); N must equal the torchrun processes
    tensor_parallel: int = 1
    resume: bool = False  # continue from OUT/last (on any number of processes, at the same global batch)
    # a text file scored at every evaluation (--eval-every-steps, and the end of the run): held-out
    # masked-LM loss and perplexity, e.g. WikiText-2's wiki.valid.tokens; OUT then keeps the model
    # of the lowest held-out loss, and OUT/pretrain_curve.png plots both curves against tokens
    heldout: str | None = None
    heldout_lines: int | None = None  # score only the first N non-blank lines of --heldout

    def __post_init__(self) -> None:
        positive(self, "vocab_size", "seq_length", "global_batch", "max_tokens", "time_budget")
        if not self.corpus:
            raise ConfigError("corpus: give at least one text file")
        if self.seq_length < 3:
            raise ConfigError(f"seq_length must be at least 3 ([CLS], a token, [SEP]), got {self.seq_length}")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.init_from and (self.vocab or self.vocab_size or self.model_config or self.dropout is not None
                               or self.positions):
            raise ConfigError("--from keeps that checkpoint's model and vocabulary; drop --vocab, "
                              "--vocab-size, --model-config, --dropout and --positions")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.vocab and self.vocab_size:
            raise ConfigError("give either --vocab (an existing vocabulary) or --vocab-size (train one), "
                              "not both")
        if self.max_tokens and self.time_budget:
            raise ConfigError("give one budget: --max-steps, --max-tokens or --time-budget")
        positive(self, "tensor_parallel", "heldout_lines")
        if self.heldout_lines and not self.heldout:
            raise ConfigError("heldout_lines needs --heldout FILE")
        if self.fsdp and self.tensor_parallel > 1:
            raise ConfigError("give --fsdp or --tensor-parallel, not both")


def train_defaults(config: PretrainConfig) -> dict:
    return dict(TRAIN_DEFAULTS)


# ------------------------------------------------------------------------------- parts


def model_config(spec: str, vocab_size: int, pad_id: int, positions: str | None = None) -> BertConfig:
    """A preset name or a config.json file -> the BertConfig of an MLM model of this vocabulary.
    `positions` replaces the position_embedding_type (None: the preset's, or the file's)."""
    if spec in MODEL_PRESETS:
        layers, hidden = MODEL_PRESETS[spec]
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                            position_embedding_type=positions or PRESET_POSITIONS)
    elif Path(spec).is_file():
        config = BertConfig.load(spec)
    else:
        raise ConfigError(f"model_config must be one of {', '.join(MODEL_PRESETS)} or a config.json file, "
                          f"got '{spec}'")
    if config.vocab_size != vocab_size:
        log.info("vocab_size %d of %s replaced by the vocabulary's %d", config.vocab_size, spec, vocab_size)
    if positions:
        config = config.replace(position_embedding_type=positions)
    return config.replace(vocab_size=vocab_size, pad_token_id=pad_id, head="mlm")


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def corpus_vocabulary(paths: list[str], size: int, lowercase: bool, cache_dir: Path, rank: int = 0,
                      world: int = 1, progress: bool = True) -> Tokenizer:
    """A WordPiece vocabulary trained on the corpus (streamed through `tokenizers`), kept in the
    cache under the corpus files' identity and the options, so that it is trained once."""
    files = [Path(p) for p in paths]
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: file not found" if not f.exists() else f"{f}: is a directory; give files")
    identity = json.dumps([[shard_key(f, "") for f in files], size, lowercase])
    key = hashlib.sha256(identity.encode()).hexdigest()[:20]
    where = cache_dir / "vocab" / key
    if rank == 0 and not where.exists():  # complete once there: written beside, then renamed
        log.info("training a %d-token WordPiece vocabulary on %d file(s)", size, len(files))
        tokenizer = Tokenizer.train(corpus_texts(files), size, lowercase=lowercase, show_progress=progress)
        staged = where.with_name(where.name + ".tmp")
        shutil.rmtree(staged, ignore_errors=True)  # what an interrupted run left
        tokenizer.save(staged)
        staged.rename(where)
    _barrier(world)
    return Tokenizer.from_dir(where)


def budget_steps(config: PretrainConfig, train: TrainConfig, source: PackedMLMBatches) -> int:
    """The number of optimizer steps of the run's budget (0: epochs decide)."""
    if config.max_tokens:
        return math.ceil(config.max_tokens / source.tokens_per_step)
    return train.max_steps


def measure_step_seconds(model: torch.nn.Module, source: PackedMLMBatches, train: TrainConfig,
                         device: torch.device, steps: int = 5, sharding: Sharding | None = None,
                         ddp: bool = False) -> float:
    """Seconds per optimizer step of this process, measured on a copy of the model (one
    warm-up step, then the median of `steps`: one step slowed by something else running on the
    machine does not move the plan), the optimizer included. The copy takes the run's step: it
    is sharded as the run will be (`sharding`), or wrapped in DDP (`ddp`), so the
    communication of those steps is timed too; every process must take part."""
    # a source of its own over the same corpus: the run's source keeps its position
    probe = PackedMLMBatches(source.corpus, source.seq_length, source.batch_size, source.grad_accum,
                             source.masker, source.seed, source.rank, source.world)
    model = copy.deepcopy(model).to(device).train()
    forward_model = model
    if sharding is not None:
        sharding.apply(model, device)
    elif ddp:
        forward_model = data_parallel(model, device)
    optimizer = build_optimizer(model, train.optimizer, train.lr, train.weight_decay)
    objective = MaskedLMObjective()
    # epoch after epoch: a small corpus may hold fewer steps than the probe takes
    batches = itertools.chain.from_iterable(probe.epoch_batches(epoch) for epoch in itertools.count())
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        micro_batches = next(batches)
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1  # gradients are reduced once a step, as in the run
            sync = gradient_sync(model, forward_model, sharding, ddp, last)
            batch = {k: v.to(device) for k, v in batch.items()}
            with sync:
                with autocast(device, train.precision):
                    loss, _ = objective(forward_model, batch)
                loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def plan_time_budget(config: PretrainConfig, train: TrainConfig, net: torch.nn.Module,
                     source: PackedMLMBatches, out: Path, rank: int, world: int,
                     sharding: Sharding | None = None) -> dict:
    """For --time-budget: the steps that fit in it, estimated once from the measured step time
    (the slowest process's), and written to OUT/pretrain_plan.json; a resumed run reads them back."""
    path = out / PLAN_NAME
    if config.resume:
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise CheckpointError(f"{path}: missing or unreadable; it records the steps of the time "
                                  "budget") from None
        if plan.get("time_budget") != config.time_budget:
            raise CheckpointError(f"{path}: the run was planned for a time budget of "
                                  f"{plan.get('time_budget')} s, not {config.time_budget} s")
        return plan
    device = resolve_device(train.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    seconds = torch.tensor(measure_step_seconds(net, source, train, device, sharding=sharding,
                                                ddp=world > 1 and sharding is None))
    if world > 1:
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    step_seconds = float(seconds)
    plan = {"time_budget": config.time_budget, "seconds_per_step": step_seconds,
            "max_steps": max(1, int(config.time_budget / step_seconds)),
            "tokens_per_step": source.tokens_per_step}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(plan, indent=2) + "\n")
    return plan


def pretraining_tokenizer(config: PretrainConfig, last: Path | None, cache: Path, rank: int, world: int,
                          progress: bool) -> Tokenizer:
    """The run's vocabulary: the resumed run's, the continued model's, --vocab, or WordPiece trained
    on the corpus (once, cached)."""
    if config.resume:
        return load_tokenizer(last)
    if config.init_from:
        return load_tokenizer(config.init_from)
    if config.vocab:
        return load_tokenizer(config.vocab)
    return corpus_vocabulary(config.corpus, config.vocab_size or DEFAULT_VOCAB_SIZE, not config.cased, cache,
                             rank, world, progress)


def pretraining_model(config: PretrainConfig, tokenizer: Tokenizer, last: Path | None) -> torch.nn.Module:
    """The BERT with an MLM head to train: the resumed run's, the continued model (a fresh head if it
    had none), or a new one of the preset or config file's shape."""
    if config.resume:
        net = load_model(last)
    elif config.init_from:
        check_same_vocabulary(config.init_from, tokenizer, "its tokenizer's")
        net = load_model(config.init_from, head="mlm")
    else:
        shape = model_config(config.model_config or DEFAULT_PRESET, len(tokenizer), tokenizer.pad_id,
                             config.positions)
        if config.dropout is not None:
            shape = shape.replace(hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)
        net = build_model(shape)
    if not isinstance(net.config, BertConfig) or net.config.head != "mlm":
        raise CheckpointError(f"{config.init_from or last}: pretraining needs a BERT model")
    if config.seq_length > net.config.max_position_embeddings:
        raise ConfigError(f"seq_length {config.seq_length} is longer than the model's "
                          f"max_position_embeddings={net.config.max_position_embeddings}")
    return net


def parallel_layout(config: PretrainConfig, world: int) -> Sharding | None:
    """FSDP2 or tensor parallelism when asked for; None for one process or plain DDP."""
    if config.fsdp:
        return Sharding("fsdp", world)
    if config.tensor_parallel > 1:
        if config.tensor_parallel != world:
            raise ConfigError(f"tensor_parallel {config.tensor_parallel} needs as many processes (torchrun "
                              f"--nproc_per_node {config.tensor_parallel}); this run has {world}")
        return Sharding("tensor", world)
    return None


# ------------------------------------------------------------------------------ recipe


def pretrain(config: PretrainConfig, train: TrainConfig | None = None) -> dict:
    """Pretrain a BERT with masked-LM on `config.corpus`; returns the results (also in
    OUT/results.json). Under torchrun every process runs this; the first one tokenizes."""
    train = train or TrainConfig(**train_defaults(config))
    if train.max_steps and (config.max_tokens or config.time_budget):
        raise ConfigError("give one budget: --max-steps, --max-tokens or --time-budget")
    out = Path(config.out)
    if config.heldout and not Path(config.heldout).is_file():
        raise DataError(f"{config.heldout}: heldout file not found")
    rank, world = init_distributed()
    last = resume_point(out, config.resume)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    seed_everything(train.seed)

    tokenizer = pretraining_tokenizer(config, last, cache, rank, world, train.progress)
    if rank == 0:
        corpus = TokenCorpus.build(config.corpus, tokenizer, cache / "corpus", progress=train.progress)
    _barrier(world)
    if rank != 0:
        corpus = TokenCorpus.build(config.corpus, tokenizer, cache / "corpus", progress=False, build=False)

    net = pretraining_model(config, tokenizer, last)
    sharding = parallel_layout(config, world)
    # The processes that read different data: all of them, but under tensor parallelism one.
    replicas = world if sharding is None else sharding.data_parallel_size
    data_rank = rank if replicas > 1 else 0
    grad_accum = train.grad_accum
    if config.global_batch:
        per_step = train.batch_size * replicas
        if config.global_batch % per_step:
            raise ConfigError(f"global_batch {config.global_batch} is not a multiple of batch_size x "
                              f"processes = {train.batch_size} x {replicas}")
        grad_accum = config.global_batch // per_step
    masker = SampleMasker.for_tokenizer(tokenizer, config.mask_prob, config.whole_word_mask, train.seed)
    source = PackedMLMBatches(corpus, config.seq_length, train.batch_size, grad_accum, masker, train.seed,
                              data_rank, replicas)
    train = replace(train, grad_accum=grad_accum, max_steps=budget_steps(config, train, source))
    plan = None
    if config.time_budget:
        plan = plan_time_budget(config, train, net, source, out, rank, world, sharding)
        train = replace(train, max_steps=plan["max_steps"])

    evaluate = None
    if config.heldout:
        try:
            heldout = HeldoutMLM(tokenizer, config.heldout, config.seq_length, max_lines=config.heldout_lines)
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"heldout: {e}") from None

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            score = heldout(model)
            return {"heldout_mlm_loss": score.loss, "heldout_ppl": score.perplexity}

    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(net, MaskedLMObjective(), source, train, out, tokenizer=tokenizer, sharding=sharding,
                      evaluate=evaluate, main_metric="heldout_mlm_loss" if evaluate else None, minimize=True)
    total = trainer.total_steps()
    log.info("pretraining a %d-layer x %d BERT (%.1f M parameters) on %d sequences of %d tokens "
             "(%d documents): %d steps of %d sequences on %d process(es)",
             net.config.num_hidden_layers, net.config.hidden_size, count_parameters(net) / 1e6,
             source.num_samples, config.seq_length, corpus.num_documents, total, source.global_batch, world)
    results = {
        "job": "pretrain",
        "corpus": [str(p) for p in config.corpus],
        "corpus_tokens": corpus.num_tokens,
        "corpus_documents": corpus.num_documents,
        "corpus_megabytes": sum(s.bytes for s in corpus.shards) / 1e6,
        "sequences": source.num_samples,
        "seq_length": config.seq_length,
        "global_batch": source.global_batch,
        "processes": world,
        "sharding": None if sharding is None else {"kind": sharding.kind, "processes": sharding.world},
        "total_steps": total,
        "tokens_per_step": source.tokens_per_step,
        "planned_tokens": total * source.tokens_per_step,
        "mask_prob": config.mask_prob,
        "whole_word_mask": config.whole_word_mask,
        "model": {"layers": net.config.num_hidden_layers, "hidden": net.config.hidden_size,
                  "heads": net.config.num_attention_heads, "vocab_size": net.config.vocab_size,
                  "parameters": count_parameters(net)},
        "init_from": config.init_from,
        "time_plan": plan,
        "heldout": config.heldout,
    }
    results = run_and_record(trainer, out, config.resume, results)
    if rank == 0 and results["history"]:
        plot_pretraining(results["history"], source.tokens_per_step, out / CURVE_NAME,
                         heldout=Path(config.heldout).name if config.heldout else None)
    return results
