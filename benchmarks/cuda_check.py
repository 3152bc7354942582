"""slimbert on a GPU: does every CUDA path run, and give what the CPU gives?

Nothing in slimbert needs a GPU, and the test suite runs on CPUs. This script is the check for
a machine that has one. Each check is independent: one that fails is recorded with its error,
and the rest still run.

- `bert`: a BERT on CUDA against `transformers`' `BertModel` on the same weights, and against
  slimbert on the CPU, fp32 with TF32 off (max |difference| at real tokens); bf16 autocast runs.
- `seq2seq`: a Transformer and an LSTM translation model on CUDA decode the same tokens as on
  the CPU, greedy and beam 5, and cached decoding equals recomputing the prefix there.
- `pretrain`: `slimbert pretrain --device cuda --precision bf16 --compile` from raw text, the
  loss falling and tokens/s from its train_log.jsonl.
- `finetune`: `slimbert finetune` of that model on SST-2 on CUDA, bf16 and compiled.
- `train-seq2seq`: one epoch of `slimbert train-seq2seq` on Multi30k on CUDA, then
  `slimbert evaluate-seq2seq --device cuda`.

    python benchmarks/cuda_check.py --data DIR --out OUT

DIR holds what the commands read: `corpus.txt` (raw text), `vocab/` (a BERT vocab.txt),
`glue/sst2/{train,dev}.tsv` and `multi30k/` (train, val and test_2016_flickr, .de and .en);
`benchmarks/device/prepare.sh` makes it from ../shared/data. A check whose data is missing is
skipped. Writes OUT/cuda_check.json and OUT/cuda_check.md. `--device cpu --quick` runs the
same checks on the CPU (fp32, a few steps), which is how the script itself is tested.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path

import torch
from runner import run_command

from slimbert import BertConfig, build_model, export_hf
from slimbert.config import Seq2SeqLSTMConfig, Seq2SeqTransformerConfig
from slimbert.errors import ConfigError
from slimbert.generation.search import SearchConfig, beam_search, greedy_search
from slimbert.hardware import check_device, detect_machine
from slimbert.models.seq2seq import Seq2SeqLSTM, Seq2SeqTransformer


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def random_batch(vocab: int, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids (batch, length) in [5, vocab) and a 1/0 mask with rows of different lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return ids * mask, mask


# ----------------------------------------------------------------------------- checks


def check_bert(device: str, args) -> dict:
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024)
    ours = build_model(config).eval()
    ids, mask = random_batch(1000, 8, 64, 0)
    with torch.no_grad():
        on_cpu = ours(ids, mask).last_hidden_state
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(ours, None, tmp)
        theirs = transformers.BertModel.from_pretrained(tmp, attn_implementation="sdpa").eval().to(device)
    ours = ours.to(device)
    keep = mask.bool()
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        a = ours(ids, mask).last_hidden_state.cpu()
        b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state.cpu()
        result = {"vs_transformers_same_device": max_diff(a[keep], b[keep]),
                  "vs_slimbert_cpu": max_diff(a[keep], on_cpu[keep])}
        if device != "cpu" and torch.cuda.is_bf16_supported():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                c = ours(ids, mask).last_hidden_state.cpu()
            result["bf16_autocast_vs_fp32"] = max_diff(c[keep], a[keep])
    result["ok"] = result["vs_transformers_same_device"] < 1e-4 and result["vs_slimbert_cpu"] < 1e-3
    return result


def decode_all(model, ids, mask, beam: int, use_cache: bool = True) -> list[list[int]]:
    config = SearchConfig(beam_size=beam, max_length=24, use_cache=use_cache)
    search = greedy_search if beam == 1 else beam_search
    return [h[0].tokens for h in search(model, ids, mask, config)]


def check_seq2seq(device: str, args) -> dict:
    result: dict = {}
    torch.manual_seed(0)
    models = {
        "transformer": Seq2SeqTransformer(Seq2SeqTransformerConfig(
            vocab_size=1000, hidden_size=128, encoder_layers=2, decoder_layers=2, num_attention_heads=4,
            intermediate_size=512)),
        "lstm": Seq2SeqLSTM(Seq2SeqLSTMConfig(vocab_size=1000, hidden_size=64, embedding_dim=64)),
    }
    ids, mask = random_batch(1000, 12, 16, 1)
    ok = True
    for name, model in models.items():
        model = model.eval()
        for beam in (1, 5):
            on_cpu = decode_all(model, ids, mask, beam)
            model.to(device)
            on_device = decode_all(model, ids.to(device), mask.to(device), beam)
            recomputed = decode_all(model, ids.to(device), mask.to(device), beam, use_cache=False)
            model.to("cpu")
            same = sum(a == b for a, b in zip(on_cpu, on_device))
            cached = sum(a == b for a, b in zip(on_device, recomputed))
            result[f"{name}_beam{beam}"] = {"same_as_cpu": f"{same}/{len(on_cpu)}",
                                           "cached_equals_recomputed": f"{cached}/{len(on_cpu)}"}
            ok = ok and cached == len(on_cpu) and same >= len(on_cpu) - 1  # one float tie may flip
    result["ok"] = ok
    return result


def run_cli(argv: list[str], log: Path) -> float:
    """`python -m slimbert ARGV`, its output in `log`; the seconds it took. On failure, the
    error carries the end of the log, so that the report shows why."""
    try:
        return run_command([sys.executable, "-m", "slimbert", *argv], log=log)
    except subprocess.CalledProcessError as e:
        tail = log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"slimbert {argv[0]} exited {e.returncode}:\n{tail}") from None


def training_options(device: str, args) -> list[str]:
    bf16 = device != "cpu" and torch.cuda.is_bf16_supported()
    return (["--device", device, "--no-progress"] + (["--precision", "bf16"] if bf16 else [])
            + (["--compile"] if device != "cpu" else []))


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_pretrain(device: str, args) -> dict:
    corpus, vocab = args.data / "corpus.txt", args.data / "vocab"
    if not corpus.exists() or not (vocab / "vocab.txt").exists():
        return {"skipped": f"no {corpus} or {vocab}/vocab.txt"}
    out = args.work / "pretrained"
    steps = 30 if args.quick else 400
    batch = 16 if args.quick else 256
    seconds = run_cli(["pretrain", "--corpus", str(corpus), "--vocab", str(vocab), "--model-config",
                       "tiny" if args.quick else "mini", "--max-steps", str(steps), "--batch-size", str(batch),
                       "--lr", "1e-3", "--warmup-ratio", "0.05", "--dropout", "0", "--log-every-steps", "10",
                       "--eval-every-steps", str(steps // 3), "--heldout", str(corpus), "--heldout-lines", "200",
                       "--cache-dir", str(args.work / "cache"), "--out", str(out),
                       *training_options(device, args)], args.out / "pretrain.log")
    records = [r for r in read_log(out / "train_log.jsonl") if "train_loss" in r]
    first, last = records[0], records[-1]
    return {"steps": steps, "batch": batch, "seconds": round(seconds, 1),
            "tokens_per_s": last.get("train_tokens_per_s"), "loss_first_period": first["train_loss"],
            "loss_last_period": last["train_loss"], "heldout_ppl": [r.get("eval_heldout_ppl") for r in records],
            "ok": len(records) > 1 and last["train_loss"] < first["train_loss"]}


def check_finetune(device: str, args) -> dict:
    glue, model = args.data / "glue", args.work / "pretrained"
    if not (glue / "sst2" / "train.tsv").exists() or not (model / "model.safetensors").exists():
        return {"skipped": "no SST-2 data, or no pretrained model (the pretrain check failed or was skipped)"}
    out = args.work / "sst2"
    examples = 2000 if args.quick else 20000
    seconds = run_cli(["finetune", "--model", str(model), "--task", "sst2", "--data-dir", str(glue),
                       "--max-train-examples", str(examples), "--epochs", "1", "--batch-size", "32",
                       "--lr", "1e-4", "--out", str(out), *training_options(device, args)],
                      args.out / "finetune.log")
    results = json.loads((out / "results.json").read_text())
    evals = [h for h in results["history"] if "eval_accuracy" in h]
    accuracy = evals[-1]["eval_accuracy"] if evals else None
    return {"train_examples": examples, "seconds": round(seconds, 1), "dev_accuracy": accuracy,
            "ok": accuracy is not None and accuracy > 0.5}


def first_lines(path: Path, n: int, dest: Path) -> Path:
    dest.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return dest


def check_train_seq2seq(device: str, args) -> dict:
    d = args.data / "multi30k"
    if not (d / "train.de").exists():
        return {"skipped": f"no {d}/train.de"}
    out = args.work / "m30k"
    limit = ["--max-steps", "30"] if args.quick else []
    seconds = run_cli(["train-seq2seq", "--train-src", str(d / "train.de"), "--train-tgt", str(d / "train.en"),
                       "--valid-src", str(d / "val.de"), "--valid-tgt", str(d / "val.en"), "--epochs", "1",
                       "--batch-size", "128", "--max-valid-lines", "200", "--out", str(out), *limit,
                       *training_options(device, args)], args.out / "train-seq2seq.log")
    src, ref = d / "test_2016_flickr.de", d / "test_2016_flickr.en"
    if args.quick:  # the first 40 sentences
        src, ref = (first_lines(path, 40, args.work / f"test-{i}.txt") for i, path in enumerate((src, ref)))
    start = time.perf_counter()
    run_cli(["evaluate-seq2seq", "--model", str(out), "--src", str(src), "--ref", str(ref), "--beam", "5",
             "--device", device, "--json"], args.out / "evaluate-seq2seq.log")
    lines = (args.out / "evaluate-seq2seq.log").read_text()
    scores = json.loads(lines[lines.index("{"):])
    return {"train_seconds": round(seconds, 1), "evaluate_seconds": round(time.perf_counter() - start, 1),
            "test_bleu_beam5_after_1_epoch": scores.get("sacrebleu"), "ok": scores.get("sacrebleu") is not None}


CHECKS = {"bert": check_bert, "seq2seq": check_seq2seq, "pretrain": check_pretrain, "finetune": check_finetune,
          "train-seq2seq": check_train_seq2seq}


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# slimbert on {m['device']} ({m['date']})", "", f"GPU: {m['gpu']}. Host: {m['machine']}. "
             f"torch {m['torch']}.", f"Command: `{m['command']}`", "", "| check | result | details |", "|---|---|---|"]
    for name, r in report["checks"].items():
        status = ("skipped" if "skipped" in r else "error" if "error" in r else "ok" if r.get("ok") else "MISMATCH")
        details = {k: v for k, v in r.items() if k not in ("ok", "traceback")}
        lines.append(f"| {name} | {status} | {json.dumps(details)[:400]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="what the training checks read (see above)")
    p.add_argument("--out", type=Path, required=True, help="where cuda_check.json/.md and the logs go")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu to test this script")
    p.add_argument("--quick", action="store_true", help="a few steps of everything, tiny models")
    p.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    args = p.parse_args()
    try:
        check_device(args.device)
    except ConfigError as e:
        raise SystemExit(f"--{e}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"checks": {}, "meta": {
        "date": date.today().isoformat(), "device": args.device, "command": "python " + " ".join(sys.argv),
        "gpu": torch.cuda.get_device_name(args.device) if args.device != "cpu" else None,
        "machine": detect_machine().line(), "torch": torch.__version__}}
    checks = report["checks"]
    with tempfile.TemporaryDirectory() as work:
        args.work = Path(work)
        for name in args.checks:
            start = time.perf_counter()
            try:
                checks[name] = CHECKS[name](args.device, args)
            except Exception as e:  # noqa: BLE001 - every check reports, whatever breaks
                checks[name] = {"error": f"{type(e).__name__}: {e}"[:2000], "traceback": traceback.format_exc()}
            checks[name]["check_seconds"] = round(time.perf_counter() - start, 1)
            print(f"{name}: {json.dumps({k: v for k, v in checks[name].items() if k != 'traceback'})}", flush=True)
            # written after every check, so a run cut short by a time limit keeps what it measured
            (args.out / "cuda_check.json").write_text(json.dumps(report, indent=2) + "\n")
            (args.out / "cuda_check.md").write_text(markdown(report))
    print(markdown(report))
    failed = [n for n, r in checks.items() if "error" in r or ("ok" in r and not r["ok"])]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
