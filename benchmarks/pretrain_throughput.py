"""Pretraining throughput: slimbert's masked-LM loop against Hugging Face `BertForMaskedLM` +
`Trainer`, and the scaling of slimbert's loop from 1 to 2 DDP processes.

Comparison (the default). In one process, round after round, both systems train a fresh model
of the same shape (`--model-config`, default Turc et al.'s mini, 4 x 256) with the same
vocabulary, on the same text (the first `--corpus-mb` MB of the corpus files), at the same
sequence length, micro-batch, optimizer (AdamW, lr, weight decay 0.01, clipping at 1.0) and
thread count:
  - slimbert: `slimbert.training.trainer.Trainer` over `PackedMLMBatches` (the corpus tokenized
    once into shards, packed into full 128-token sequences, masked 80/10/10 per sample) with
    `MaskedLMObjective` (the vocabulary head on the masked positions only), as `slimbert
    pretrain` builds them;
  - Hugging Face: `BertForMaskedLM` of the same config, the text tokenized and packed into
    128-token blocks by `group_texts` as `examples/pytorch/language-modeling/run_mlm.py` does,
    `DataCollatorForLanguageModeling(mlm_probability=0.15)` and `Trainer` (its default optimizer,
    no evaluation, saving or logging, `dataloader_num_workers=0`, `use_cpu=True` unless `--device cuda`).
Each run takes `--warmup` steps, then `--steps` timed optimizer steps; tokens/s = steps x
batch x seq_length / seconds of those steps. The timed window holds the data of every step
(masking, collation) and the whole step (forward, backward, clipping, optimizer, schedule),
and nothing done once per run (tokenizing, building the model, the final checkpoint). The
order of the two alternates from round to round, so machine noise hits both; fp32 always,
bf16 autocast too where the CPU has native bf16 (AVX512-BF16 / AMX). Reported: the median,
min and max over the rounds of slimbert / HF tokens/s.

    python benchmarks/pretrain_throughput.py --model-config mini --batch-size 64 \
        --steps 20 --warmup 3 --rounds 3 --threads 2 --corpus ../shared/data/pretrain/wikipedia/*.txt

DDP scaling (`--ddp`). slimbert's same loop under `torchrun` (gloo, CPU processes) at the same
global batch, in three set-ups run round-robin: 1 process x 1 thread, 1 process x `--threads`
threads (the same total threads as 2 processes) and 2 processes x 1 thread (half the global
batch each). Scaling efficiency = tokens/s(2 x 1 thread) / (2 x tokens/s(1 x 1 thread));
speed-up = tokens/s(2 x 1 thread) / tokens/s(1 x `--threads` threads).

    python benchmarks/pretrain_throughput.py --ddp --model-config mini --batch-size 64 \
        --steps 20 --warmup 3 --rounds 3 --threads 2 --corpus ../shared/data/pretrain/wikipedia/*.txt

On a GPU (`--device cuda`, with `--compile` for both systems' `torch.compile`), both systems
train there, fp32 and bf16 autocast where the GPU has bf16; every step's end is timed after a
`torch.cuda.synchronize()`, so no queued work is missed:

    python benchmarks/pretrain_throughput.py --device cuda --compile --model-config mini \
        --batch-size 256 --steps 30 --warmup 10 --rounds 2 --corpus wiki-00.txt

Writes OUT.json and OUT.md (`--out`, default benchmarks/results/pretrain_throughput, or
benchmarks/results/pretrain_throughput_ddp with --ddp). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from itertools import chain
from pathlib import Path

import torch

from slimbert.checkpoint import load_tokenizer, resolve
from slimbert.data.corpus import TokenCorpus
from slimbert.data.masking import SampleMasker
from slimbert.data.packed import PackedMLMBatches
from slimbert.errors import ConfigError
from slimbert.hardware import check_device, cpu_busy, detect_machine
from slimbert.models import build_model, count_parameters
from slimbert.recipes.pretrain import MODEL_PRESETS, model_config
from slimbert.training.objectives import MaskedLMObjective
from slimbert.training.trainer import TrainConfig, Trainer, init_distributed

# BertConfig fields that transformers' BertConfig takes under the same names.
HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
             "type_vocab_size", "layer_norm_eps", "pad_token_id", "initializer_range")
BYTES_PER_TOKEN = 4.0  # of Wikipedia text per WordPiece token (about 5 measured; 4 errs towards more text)
DDP_SETUPS = ("1 process x 1 thread", "1 process x {t} threads", "2 processes x 1 thread")


# ------------------------------------------------------------------------------- data


def corpus_slice(files: list[str], megabytes: float, dest: Path) -> Path:
    """The first `megabytes` MB of the files, in order, cut at a line end, written to `dest`:
    the one text both systems train on."""
    limit, written = int(megabytes * 1e6), 0
    with open(dest, "wb") as out:
        for name in files:
            with open(name, "rb") as f:
                for line in f:
                    out.write(line)
                    written += len(line)
                    if written >= limit:
                        return dest
            out.write(b"\n")  # a blank line: the next file starts a new document
    return dest


def hf_blocks(text: Path, vocab: str, lowercase: bool, strip_accents: bool | None, seq_length: int, work: Path):
    """run_mlm.py's data: the lines of the text tokenized (with [CLS]/[SEP] and the special
    tokens mask), concatenated, cut into blocks of `seq_length` tokens by `group_texts`."""
    from datasets import Dataset, disable_progress_bars
    from transformers import BertTokenizerFast

    disable_progress_bars()

    tokenizer = BertTokenizerFast(vocab_file=str(resolve(vocab) / "vocab.txt"), do_lower_case=lowercase,
                                  strip_accents=strip_accents)
    lines = text.read_text(encoding="utf-8").splitlines()
    dataset = Dataset.from_dict({"text": lines})

    def tokenize(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples):  # as in run_mlm.py
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = len(next(iter(concatenated.values()))) // seq_length * seq_length
        return {k: [t[i:i + seq_length] for i in range(0, total, seq_length)] for k, t in concatenated.items()}

    tokenized = dataset.map(tokenize, batched=True, remove_columns=["text"], keep_in_memory=True)
    return tokenizer, tokenized.map(group_texts, batched=True, keep_in_memory=True)


# --------------------------------------------------------------------------- slimbert


def synced_time(device: str) -> float:
    """The time, once the GPU has finished what was queued (CUDA runs asynchronously)."""
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter()


class ClockedSource:
    """A batch source that notes the time whenever the Trainer asks for the next step: mark k
    is when step k + 1 is done (its optimizer step and schedule included)."""

    def __init__(self, source: PackedMLMBatches, device: str = "cpu"):
        self.source = source
        self.device = device
        self.marks: list[float] = []

    def __getattr__(self, name: str):
        return getattr(self.source, name)

    def epoch_batches(self, epoch: int):
        for step in self.source.epoch_batches(epoch):
            yield step
            self.marks.append(synced_time(self.device))


def run_slimbert(corpus: TokenCorpus, tokenizer, args, precision: str, rank: int = 0, world: int = 1) -> dict:
    """Train a fresh model for warm-up + timed steps (+1, whose end is not timed); the seconds
    of the timed steps, as this process saw them."""
    torch.manual_seed(args.seed)
    net = build_model(model_config(args.model_config, len(tokenizer), tokenizer.pad_id, "absolute"))
    masker = SampleMasker.for_tokenizer(tokenizer, 0.15, False, args.seed)
    per_process = args.batch_size // world
    source = ClockedSource(PackedMLMBatches(corpus, args.seq_length, per_process, 1, masker, args.seed, rank,
                                            world), args.device)
    total = args.warmup + args.steps + 1
    if source.steps_per_epoch < total:
        raise SystemExit(f"the corpus slice gives {source.steps_per_epoch} steps of {args.batch_size} sequences, "
                         f"fewer than the {total} of a run; raise --corpus-mb")
    train = TrainConfig(max_steps=total, batch_size=per_process, lr=args.lr, weight_decay=0.01, warmup_ratio=0.1,
                        max_grad_norm=1.0, optimizer="adamw", precision=precision, seed=args.seed, progress=False,
                        device=args.device, compile=args.compile)
    with tempfile.TemporaryDirectory() as out:
        Trainer(net, MaskedLMObjective(), source, train, out, tokenizer=tokenizer).fit()
    start, end = source.marks[args.warmup - 1], source.marks[args.warmup + args.steps - 1]
    return {"seconds": end - start, "tokens_per_s": args.steps * args.batch_size * args.seq_length / (end - start),
            "parameters": count_parameters(net), "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------- Hugging Face


def run_hf(blocks, hf_tokenizer, tokenizer, args, precision: str, work: Path) -> dict:
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class StepClock(TrainerCallback):
        """The time at the end of step `warmup` and of step `warmup + steps`."""

        def __init__(self):
            self.start = self.end = None

        def on_step_end(self, train_args, state, control, **kwargs):
            if state.global_step == args.warmup:
                self.start = synced_time(args.device)
                self.threads = torch.get_num_threads()  # what the Trainer runs with, after its own setup
            elif state.global_step == args.warmup + args.steps:
                self.end = synced_time(args.device)

    ours = model_config(args.model_config, len(tokenizer), tokenizer.pad_id, "absolute")
    if not ours.is_hf_compatible:
        raise SystemExit(f"--model-config {args.model_config}: not a model transformers' BERT computes")
    torch.manual_seed(args.seed)
    model = BertForMaskedLM(BertConfig(**{k: getattr(ours, k) for k in HF_FIELDS}))
    total = args.warmup + args.steps
    train_args = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=args.batch_size, max_steps=total,
        learning_rate=args.lr, weight_decay=0.01, warmup_steps=int(0.1 * total), max_grad_norm=1.0,
        lr_scheduler_type="linear", bf16=precision == "bf16", use_cpu=args.device == "cpu",
        torch_compile=args.compile, eval_strategy="no",
        save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        seed=args.seed)
    clock = StepClock()
    collator = DataCollatorForLanguageModeling(tokenizer=hf_tokenizer, mlm_probability=0.15)
    trainer = Trainer(model=model, args=train_args, train_dataset=blocks, data_collator=collator,
                      callbacks=[clock])
    trainer.train()
    seconds = clock.end - clock.start
    return {"seconds": seconds, "tokens_per_s": args.steps * args.batch_size * args.seq_length / seconds,
            "parameters": model.num_parameters(), "threads": clock.threads, "optimizer": getattr(train_args.optim, "value", str(train_args.optim))}


# ------------------------------------------------------------------------------ runs


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def compare(args, corpus: TokenCorpus, tokenizer, text: Path, work: Path, machine) -> dict:
    import transformers

    transformers.logging.set_verbosity_error()
    hf_tokenizer, blocks = hf_blocks(text, args.vocab, tokenizer.lowercase, tokenizer.strip_accents,
                                     args.seq_length, work)
    if len(blocks) < (args.warmup + args.steps) * args.batch_size:
        raise SystemExit(f"the corpus slice gives {len(blocks)} blocks for Hugging Face, fewer than "
                         f"{(args.warmup + args.steps) * args.batch_size}; raise --corpus-mb")
    bf16 = torch.cuda.is_bf16_supported() if args.device != "cpu" else machine.bf16_native
    precisions = ["fp32"] + (["bf16"] if bf16 else [])
    if not bf16:
        print(f"bf16 skipped: {args.device} only emulates it ({machine.line()})", flush=True)
    runs = {p: {"slimbert": [], "hf": []} for p in precisions}
    info: dict = {}
    for r in range(args.rounds):
        for precision in precisions:
            order = ("slimbert", "hf") if r % 2 == 0 else ("hf", "slimbert")
            for system in order:
                if system == "slimbert":
                    result = run_slimbert(corpus, tokenizer, args, precision)
                else:
                    result = run_hf(blocks, hf_tokenizer, tokenizer, args, precision, work)
                runs[precision][system].append(result["tokens_per_s"])
                info[system] = {k: v for k, v in result.items() if k not in ("seconds", "tokens_per_s")}
                print(f"round {r + 1} {precision} {system}: {result['tokens_per_s']:.0f} tokens/s "
                      f"({result['seconds']:.1f} s for {args.steps} steps, {result['threads']} threads)", flush=True)
    rows = []
    for precision, by in runs.items():
        ratios = [s / h for s, h in zip(by["slimbert"], by["hf"])]
        rows.append({"precision": precision, "slimbert_tokens_per_s": spread(by["slimbert"]),
                     "hf_tokens_per_s": spread(by["hf"]), "slimbert_over_hf": spread(ratios)})
    return {"rows": rows, "systems": info, "hf_blocks": len(blocks),
            "bf16": "measured" if bf16 else f"skipped (emulated on this {args.device})"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, processes: int, threads: int, work: Path) -> float:
    """The script's worker under torchrun: tokens/s of slimbert's loop on `processes` x `threads`."""
    result = work / f"worker-{processes}x{threads}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
           f"--master_port={free_port()}", __file__, "--worker", str(result), "--work-dir", str(work),
           "--threads", str(threads), "--model-config", args.model_config, "--vocab", args.vocab,
           "--seq-length", str(args.seq_length), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--lr", str(args.lr), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"torchrun failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())["tokens_per_s"]


def scaling(args, work: Path) -> dict:
    if args.batch_size % 2:
        raise SystemExit(f"--batch-size {args.batch_size}: must be even, to split over 2 processes")
    setups = [(1, 1), (1, args.threads), (2, 1)]
    names = [n.format(t=args.threads) for n in DDP_SETUPS]
    runs: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = list(zip(names, setups))
        for name, (processes, threads) in (order if r % 2 == 0 else order[::-1]):
            tps = launch(args, processes, threads, work)
            runs[name].append(tps)
            print(f"round {r + 1} {name}: {tps:.0f} tokens/s", flush=True)
    one, same_threads, two = (statistics.median(runs[n]) for n in names)
    return {"setups": {n: spread(v) for n, v in runs.items()},
            "efficiency": two / (2 * one), "speedup_over_1x1": two / one, "speedup_same_threads": two / same_threads,
            "efficiency_rounds": [t / (2 * o) for t, o in zip(runs[names[2]], runs[names[0]])]}


def worker(args) -> None:
    """One torchrun process: slimbert's loop on its share of the global batch (rank 0 writes)."""
    rank, world = init_distributed()
    tokenizer = load_tokenizer(args.vocab)
    corpus = TokenCorpus.build([Path(args.work_dir) / "corpus.txt"], tokenizer, Path(args.work_dir) / "cache",
                               progress=False, build=False)
    result = run_slimbert(corpus, tokenizer, args, "fp32", rank, world)
    if world > 1:  # the slowest process's time
        seconds = torch.tensor(result["seconds"])
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
        result["seconds"] = float(seconds)
        result["tokens_per_s"] = args.steps * args.batch_size * args.seq_length / result["seconds"]
    if rank == 0:
        Path(args.worker).write_text(json.dumps({**result, "processes": world, "threads": args.threads}))


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# Pretraining throughput ({m['date']})", "",
             f"Machine: {m['machine']}. torch {m['torch']}, transformers {m['transformers']}.",
             (f"Model: {m['model_config']} ({m['parameters']['slimbert'] / 1e6:.2f} M parameters in slimbert"
              + (f", {m['parameters']['hf'] / 1e6:.2f} M in HF" if "hf" in m["parameters"] else "")
              + f"), vocabulary {m['vocab']} ({m['vocab_size']} "
              f"tokens), sequences of {m['seq_length']}, batch {m['batch_size']}, AdamW lr {m['lr']}; "
              f"{m['warmup']} warm-up steps, then {m['steps']} timed steps, {m['rounds']} rounds."),
             f"Corpus: the first {m['corpus_mb']} MB of {m['corpus_files']} file(s) ({m['corpus']}).",
             f"Load average {m['load_start']:.1f} at the start, {m['load_end']:.1f} at the end ({os.cpu_count()} CPUs; "
             "a one-minute average, so it counts the minute before the start and the run's own threads)."
             + ("" if m.get("cpu_busy_start") is None else
                f" CPUs busy in the 2 s before the start: {m['cpu_busy_start']:.0%}."),
             f"Command: `{m['command']}`", ""]
    if (m.get("cpu_busy_start") or 0) > 0.25:
        lines += [("**The machine was busy when this ran (other processes used the CPUs): the figures are not "
                   "reliable; with several threads, other processes' load slows each step many times over.**"), ""]
    if "compare" in report:
        c = report["compare"]
        where = (f"{m['threads']} threads" if m.get("device", "cpu") == "cpu"
                 else f"on {m['device']} ({m.get('gpu')})")
        lines += [(f"{where}, one process{', torch.compile' if m.get('compile') else ''}. "
                   f"HF optimizer: {c['systems']['hf']['optimizer']}; bf16: {c['bf16']}."), "",
                  "| precision | slimbert tokens/s | HF Trainer tokens/s | slimbert / HF (median) | min | max |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in c["rows"]:
            ratio = row["slimbert_over_hf"]
            lines.append(f"| {row['precision']} | {row['slimbert_tokens_per_s']['median']:.0f} | "
                         f"{row['hf_tokens_per_s']['median']:.0f} | {ratio['median']:.2f}x | {ratio['min']:.2f}x | "
                         f"{ratio['max']:.2f}x |")
    if "ddp" in report:
        d = report["ddp"]
        lines += ["slimbert's loop under torchrun (gloo), fp32, the same global batch in every set-up.", "",
                  "| set-up | tokens/s (median) | min | max |", "|---|---:|---:|---:|"]
        for name, s in d["setups"].items():
            lines.append(f"| {name} | {s['median']:.0f} | {s['min']:.0f} | {s['max']:.0f} |")
        lines += ["", (f"2-process scaling efficiency: {d['efficiency']:.0%} (tokens/s of 2 x 1 thread over twice "
                       f"1 x 1 thread); speed-up {d['speedup_over_1x1']:.2f}x over 1 x 1 thread, "
                       f"{d['speedup_same_threads']:.2f}x over 1 process x {m['threads']} threads (same total "
                       "threads).")]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", default=sorted(glob.glob("../shared/data/pretrain/wikipedia/*.txt")),
                   help="raw text files (default: ../shared/data/pretrain/wikipedia/*.txt)")
    p.add_argument("--corpus-mb", type=float, help="MB of text taken from the start of the corpus "
                   "(default: what the run needs, with a margin)")
    p.add_argument("--model-config", default="mini", help=f"{' | '.join(MODEL_PRESETS)} or a config.json")
    p.add_argument("--vocab", default="bundled:minilm-l6", help="vocabulary, as `slimbert pretrain --vocab`")
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64, help="sequences per optimizer step (global with --ddp)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first (at least 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (with --ddp: of the 1-process run "
                   "compared at the same total threads)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (both systems train on the GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile in both systems (Trainer's compile, "
                   "HF TrainingArguments(torch_compile=True))")
    p.add_argument("--ddp", action="store_true", help="measure 1 -> 2 process scaling instead of the comparison")
    p.add_argument("--out", help="OUT.json and OUT.md (default: benchmarks/results/pretrain_throughput[_ddp])")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # a torchrun process of --ddp: where its result goes
    p.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise SystemExit(f"--device {args.device}: expected cpu, cuda or cuda:N")
    try:
        check_device(args.device)
    except ConfigError as e:
        raise SystemExit(f"--{e}") from None
    if args.ddp and args.device != "cpu":
        raise SystemExit("--ddp measures CPU processes (gloo); leave --device cpu")
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return

    command = "python " + shlex.join(sys.argv)
    out = Path(args.out or ("benchmarks/results/pretrain_throughput" + ("_ddp" if args.ddp else "")))
    machine = detect_machine()
    print(machine.line(), flush=True)
    load_start = os.getloadavg()[0]
    busy_start = cpu_busy()
    needed_tokens = (args.warmup + args.steps + 1) * args.batch_size * args.seq_length
    megabytes = args.corpus_mb or round(1.5 * needed_tokens * BYTES_PER_TOKEN / 1e6 + 0.5, 1)
    tokenizer = load_tokenizer(args.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = corpus_slice(args.corpus, megabytes, work / "corpus.txt")
        # tokenized once, before anything is timed (the workers of --ddp read these shards)
        corpus = TokenCorpus.build([text], tokenizer, work / "cache", progress=False)
        torch.manual_seed(args.seed)
        slim_params = count_parameters(build_model(model_config(args.model_config, len(tokenizer),
                                                                tokenizer.pad_id, "absolute")))
        report: dict = {}
        if args.ddp:
            report["ddp"] = scaling(args, work)
        else:
            report["compare"] = compare(args, corpus, tokenizer, text, work, machine)
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = "not installed"
    parameters = {"slimbert": slim_params}
    if "compare" in report:
        parameters["hf"] = report["compare"]["systems"]["hf"]["parameters"]
    report["meta"] = {
        "date": date.today().isoformat(), "command": command, "machine": machine.line(),
        "machine_detail": machine.as_dict(), "torch": torch.__version__, "transformers": transformers_version,
        "threads": args.threads, "device": args.device, "compile": args.compile,
        "gpu": torch.cuda.get_device_name(args.device) if args.device != "cpu" else None,
        "model_config": args.model_config, "parameters": parameters, "vocab": args.vocab,
        "vocab_size": len(tokenizer), "seq_length": args.seq_length, "batch_size": args.batch_size,
        "lr": args.lr, "warmup": args.warmup, "steps": args.steps, "rounds": args.rounds,
        "corpus": args.corpus[0] + (" ..." if len(args.corpus) > 1 else ""), "corpus_files": len(args.corpus),
        "corpus_mb": megabytes, "corpus_tokens": corpus.num_tokens, "load_start": load_start,
        "load_end": os.getloadavg()[0], "cpu_busy_start": busy_start}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
