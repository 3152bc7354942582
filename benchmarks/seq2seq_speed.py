"""Generation speed of slimbert's Seq2SeqTransformer: KV cache against no cache, and against
Hugging Face `MarianMTModel.generate` on the same model, in one run.

What it measures: tokens generated per second (sentences x generated tokens / wall time; a
beam search counts each sentence's output once, not its beams), on `--threads` CPU threads
(default 2), at batch 1 and batch 32, greedy and beam 5, for exactly N = 32, 64 and 128
generated tokens per sentence (</s> is forbidden before token N and forced at token N, the
same way for every system, so random or trained weights decode the same lengths). Systems:

- slimbert, KV cache (`SearchConfig(use_cache=True)`): self-attention K/V appended per step,
  cross-attention K/V computed once per source;
- slimbert, no cache: every step recomputes the whole prefix (the speed-up of the cache is
  its time over the cached time);
- HF `MarianMTModel.generate(use_cache=True)` on the same weights, exported with
  `slimbert.compress.export_marian.to_marian` (same logits; for a model Marian cannot express,
  a Marian model of the same shape with its own random weights). Same batch, beam, forced
  length (`min_new_tokens` = N - 1, `max_new_tokens` = N, `forced_eos_token_id`), <pad> and <s>
  suppressed as slimbert does, `early_stopping=True` (slimbert's rule: done with K finished
  hypotheses), length penalty 1.

Timing: per (batch, beam), one warm-up run of every system; then for each N, `--rounds`
rounds that run every system once in turn (round-robin, so machine noise hits all of them);
the median is reported, with min and max. A no-cache run slower than `--slow-run-s` is not
repeated; once the run has taken `--budget-s` no no-cache run is repeated, and after
`--deadline-s` no more no-cache runs start (the rounds each median rests on are recorded, 0
for a run skipped). Batch 1 decodes `--batch1-sentences` sentences one at a time per run;
batch 32 decodes one padded batch of 32.

Sources: with `--model DIR` (a slimbert translation checkpoint), the first sentences of
Multi30k test_2016_flickr in `--src-lang`, encoded with the model's tokenizer; without it, a
fresh seeded model of `--hidden/--layers/--heads/--ffn/--vocab` (default: the shape
`slimbert train-seq2seq` trains on Multi30k) fed random ids of realistic lengths (~13 tokens).

    .venv/bin/python benchmarks/seq2seq_speed.py --threads 2 --out benchmarks/results

writes seq2seq_speed.json and seq2seq_speed.md under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from slimbert.compress.export_marian import to_marian
from slimbert.config import Seq2SeqTransformerConfig
from slimbert.data.parallel import encode_sources, pad_ids, read_text_lines
from slimbert.errors import CheckpointError
from slimbert.generation import SearchConfig, generate
from slimbert.hardware import detect_machine
from slimbert.models.seq2seq import Seq2SeqTransformer

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
SYSTEMS = ("slimbert cache", "slimbert no cache", "HF generate")


# ----------------------------------------------------------------------------- inputs


def fresh_model(args) -> Seq2SeqTransformer:
    torch.manual_seed(args.seed)
    config = Seq2SeqTransformerConfig(vocab_size=args.vocab, hidden_size=args.hidden, encoder_layers=args.layers,
                                      decoder_layers=args.layers, num_attention_heads=args.heads,
                                      intermediate_size=args.ffn, dropout=0.0, max_source_length=128,
                                      max_target_length=max(args.lengths))
    return Seq2SeqTransformer(config).eval()


def random_sources(n: int, config, seed: int) -> list[list[int]]:
    """n id sequences ending in </s>, lengths ~ N(13, 4) clipped to [5, 32], ids never special."""
    g = torch.Generator().manual_seed(seed)
    lengths = (torch.randn(n, generator=g) * 4 + 13).round().clamp(5, 32).long().tolist()
    first = max(config.pad_token_id, config.bos_token_id, config.eos_token_id) + 1  # past the specials
    return [torch.randint(first, config.vocab_size, (t - 1,), generator=g).tolist() + [config.eos_token_id]
            for t in lengths]


def batches_of(sources: list[list[int]], batch_size: int, count: int, pad_id: int):
    """`count` padded (ids, mask) batches of `batch_size` sentences, in file order."""
    return [pad_ids(sources[i * batch_size:(i + 1) * batch_size], pad_id) for i in range(count)]


# ----------------------------------------------------------------------------- systems


def run_slimbert(model, batches, beam: int, n: int, use_cache: bool) -> tuple[float, list[list[int]]]:
    search = SearchConfig(beam_size=beam, nbest=1, length_penalty=1.0, min_length=n - 1, max_length=n,
                          max_len_a=0.0, max_len_b=n, use_cache=use_cache)
    tokens = []
    start = time.perf_counter()
    for ids, mask in batches:
        for hyps in generate(model, ids, mask, search):
            tokens.append(hyps[0].tokens + [model.config.eos_token_id])
    return time.perf_counter() - start, tokens


def run_hf(hf, batches, beam: int, n: int) -> tuple[float, list[list[int]]]:
    options = {"num_beams": beam, "do_sample": False, "use_cache": True, "max_new_tokens": n,
               "min_new_tokens": n - 1}
    if beam > 1:  # slimbert's rule: a sentence is done with K finished hypotheses
        options.update(early_stopping=True, length_penalty=1.0)
    tokens = []
    start = time.perf_counter()
    for ids, mask in batches:
        out = hf.generate(input_ids=ids, attention_mask=mask, **options)  # (B, 1 + n): <s> first
        tokens.extend(out[:, 1:].tolist())
    return time.perf_counter() - start, tokens


def reference_for(model: Seq2SeqTransformer, positions: int):
    """(HF model, how it relates to `model`): the exported weights, or a same-shape stand-in."""
    try:
        return to_marian(model, max_positions=positions), "same weights (exported to MarianMT; same logits)"
    except CheckpointError as e:
        from transformers import MarianConfig, MarianMTModel

        c = model.config
        hf = MarianMTModel(MarianConfig(
            vocab_size=c.vocab_size, d_model=c.hidden_size, encoder_layers=c.encoder_layers,
            decoder_layers=c.decoder_layers, encoder_attention_heads=c.num_attention_heads,
            decoder_attention_heads=c.num_attention_heads, encoder_ffn_dim=c.intermediate_size,
            decoder_ffn_dim=c.intermediate_size, activation_function=c.hidden_act,
            max_position_embeddings=positions, scale_embedding=c.scale_embeddings, pad_token_id=c.pad_token_id,
            eos_token_id=c.eos_token_id, decoder_start_token_id=c.bos_token_id,
            forced_eos_token_id=c.eos_token_id)).eval()
        hf.generation_config.suppress_tokens = [c.pad_token_id, c.bos_token_id]
        return hf, f"same shape, random weights ({e})"


# ----------------------------------------------------------------------------- report


def markdown(results: dict) -> str:
    m = results["meta"]
    lines = [f"# Seq2SeqTransformer generation speed ({m['date']})", "",
             (f"Machine: {m['machine']}. torch {m['torch']}, transformers {m['transformers']}, "
              f"{m['threads']} threads."),
             (f"Model: {m['model']} ({m['parameters'] / 1e6:.2f} M parameters). "
              f"HF reference: {m['reference']}."),
             f"Sources: {m['sources']}.",
             (f"Cached and uncached decoding gave the same tokens in {m['cache_equals_no_cache']}. "
              f"Whole run: {m['wall_s']:.0f} s{'' if m['complete'] else ' (interrupted)'}; load average "
              f"{m['load_average_start'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at the end "
              f"({os.cpu_count()} CPUs)."),
             f"Command: `{m['command']}`", "",
             ("Tokens generated per second (sentences x tokens; beams not counted), median of "
              f"up to {m['rounds']} rounds after a warm-up."), "",
             ("| batch | search | tokens | slimbert cache | slimbert no cache | cache speed-up | HF generate | "
              "slimbert / HF | same tokens as HF | rounds (cache / no cache / HF) |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in results["settings"]:
        search = "greedy" if row["beam"] == 1 else f"beam {row['beam']}"
        tps = {s: row["systems"][s]["tokens_per_s"] for s in SYSTEMS if s in row["systems"]}
        nocache = f"{tps['slimbert no cache']:.0f}" if "slimbert no cache" in tps else "-"
        speedup = f"{row['cache_speedup']:.2f}x" if row.get("cache_speedup") else "-"
        lines.append(f"| {row['batch']} | {search} | {row['tokens']} | {tps['slimbert cache']:.0f} | {nocache} | "
                     f"{speedup} | {tps['HF generate']:.0f} | {row['slimbert_over_hf']:.2f}x | "
                     f"{row['same_tokens_as_hf']:.0%} | "
                     + " / ".join(str(row["systems"].get(s, {}).get("rounds", 0)) for s in SYSTEMS) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a slimbert Seq2SeqTransformer checkpoint (default: a fresh one)")
    p.add_argument("--src-lang", default="de", help="with --model: Multi30k source language (de or en)")
    p.add_argument("--data-dir", default=str(MULTI30K), help="Multi30k directory (test_2016_flickr.{de,en})")
    p.add_argument("--hidden", type=int, default=256, help="fresh model: d_model")
    p.add_argument("--layers", type=int, default=3, help="fresh model: encoder and decoder blocks each")
    p.add_argument("--heads", type=int, default=4, help="fresh model: attention heads")
    p.add_argument("--ffn", type=int, default=1024, help="fresh model: feed-forward width")
    p.add_argument("--vocab", type=int, default=8000, help="fresh model: joint vocabulary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--beams", default="1,5")
    p.add_argument("--lengths", default="32,64,128", help="generated tokens per sentence, </s> included")
    p.add_argument("--batch1-sentences", type=int, default=4, help="sentences decoded one by one per batch-1 run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--slow-run-s", type=float, default=15.0, help="a no-cache run this slow is not repeated")
    p.add_argument("--budget-s", type=float, default=240.0, help="after this long, no-cache runs are not repeated")
    p.add_argument("--deadline-s", type=float, default=420.0, help="after this long, no more no-cache runs")
    p.add_argument("--no-cache-max-tokens", type=int, default=128,
                   help="skip the no-cache system above this many generated tokens")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    args.lengths = [int(x) for x in args.lengths.split(",")]
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    beams = [int(x) for x in args.beams.split(",")]

    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    if args.model:
        from slimbert.recipes.translate import load_translator

        model, tokenizer = load_translator(args.model, "cpu")
        if not isinstance(model.config, Seq2SeqTransformerConfig):
            raise SystemExit(f"{args.model}: a {model.config.MODEL_TYPE}, not a Seq2SeqTransformer")
        model.config = model.config.replace(max_target_length=max(model.config.max_target_length,
                                                                  max(args.lengths)))
        path = Path(args.data_dir) / f"test_2016_flickr.{args.src_lang}"
        need = max(batch_sizes) if max(batch_sizes) > 1 else args.batch1_sentences
        sources, _ = encode_sources(tokenizer, read_text_lines(path)[:max(need, args.batch1_sentences)],
                                    model.config.max_source_length)
        source_text = f"the first sentences of {path.name}, encoded with the model's tokenizer"
        model_text = args.model
    else:
        model = fresh_model(args)
        sources = random_sources(max(max(batch_sizes), args.batch1_sentences), model.config, args.seed)
        source_text = "random ids, lengths ~N(13, 4) clipped to [5, 32], </s> last"
        c = model.config
        model_text = (f"fresh seeded Seq2SeqTransformer: hidden {c.hidden_size}, {c.encoder_layers}+"
                      f"{c.decoder_layers} layers, {c.num_attention_heads} heads, FFN {c.intermediate_size}, "
                      f"vocab {c.vocab_size}, {c.norm_style}-norm, {c.position_embedding_type} positions, "
                      f"{c.hidden_act}, scale_embeddings={c.scale_embeddings}, tied={c.tie_embeddings}")
    model.eval()
    positions = max(max(map(len, sources)), max(args.lengths)) + 2
    hf, reference = reference_for(model, positions)
    pad = model.config.pad_token_id
    machine = detect_machine()

    meta = {"load_average_start": os.getloadavg(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine.line(),
            "cpu": machine.as_dict(), "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "model": model_text, "reference": reference,
            "hf_attention": hf.config._attn_implementation,
            "parameters": sum(t.numel() for t in model.parameters()),
            "hf_parameters": sum(t.numel() for t in hf.parameters() if t.requires_grad),
            "sources": source_text, "mean_source_tokens": statistics.mean(map(len, sources)),
            "rounds": args.rounds, "batch1_sentences": args.batch1_sentences, "slow_run_s": args.slow_run_s,
            "command": "python benchmarks/seq2seq_speed.py " + " ".join(
                f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items() if v is not None and k not in ("out", "data_dir"))}
    settings = []
    t_start = time.perf_counter()
    plan = [(b, k, n) for b in batch_sizes for k in beams for n in args.lengths]
    bar = tqdm(total=len(plan) * args.rounds * len(SYSTEMS), desc="seq2seq speed", unit="run")
    for b in batch_sizes:
        batches = batches_of(sources, b, args.batch1_sentences if b == 1 else 1, pad)
        for k in beams:
            bar.set_postfix_str(f"warm-up batch {b} beam {k}")
            n0 = min(args.lengths)
            run_slimbert(model, batches, k, n0, True)
            run_slimbert(model, batches, k, n0, False)
            run_hf(hf, batches, k, n0)
            for n in args.lengths:
                bar.set_postfix_str(f"batch {b} beam {k} tokens {n}")
                times: dict[str, list[float]] = {s: [] for s in SYSTEMS}
                outputs: dict[str, list[list[int]]] = {}
                skip_nocache = n > args.no_cache_max_tokens or time.perf_counter() - t_start > args.deadline_s
                for r in range(args.rounds):
                    elapsed = time.perf_counter() - t_start
                    over_budget, over_deadline = r > 0 and elapsed > args.budget_s, r > 0 and elapsed > args.deadline_s
                    for system in SYSTEMS:
                        if over_deadline or system == "slimbert no cache" and (skip_nocache or over_budget or (
                                times[system] and times[system][-1] > args.slow_run_s)):
                            bar.update()
                            continue
                        if system == "HF generate":
                            seconds, tokens = run_hf(hf, batches, k, n)
                        else:
                            seconds, tokens = run_slimbert(model, batches, k, n, system == "slimbert cache")
                        times[system].append(seconds)
                        outputs.setdefault(system, tokens)
                        bar.update()
                sentences = sum(ids.shape[0] for ids, _ in batches)
                row = {"batch": b, "beam": k, "tokens": n, "sentences": sentences, "systems": {}}
                for system, ts in times.items():
                    if ts:
                        med = statistics.median(ts)
                        row["systems"][system] = {"median_s": med, "min_s": min(ts), "max_s": max(ts),
                                                  "rounds": len(ts), "tokens_per_s": sentences * n / med}
                assert all(len(t) == n for t in outputs["slimbert cache"]), "a hypothesis missed the forced length"
                s = row["systems"]
                if "slimbert no cache" in s:
                    row["cache_speedup"] = s["slimbert no cache"]["median_s"] / s["slimbert cache"]["median_s"]
                    row["cache_equals_no_cache"] = outputs["slimbert cache"] == outputs["slimbert no cache"]
                row["slimbert_over_hf"] = s["slimbert cache"]["tokens_per_s"] / s["HF generate"]["tokens_per_s"]
                row["same_tokens_as_hf"] = statistics.mean(
                    a == h for a, h in zip(outputs["slimbert cache"], outputs["HF generate"]))
                settings.append(row)
                save(meta, settings, Path(args.out), t_start, complete=False)
                tqdm.write(f"batch {b:>2} beam {k} tokens {n:>3}: " + ", ".join(
                    f"{name} {v['tokens_per_s']:.0f} tok/s" for name, v in s.items())
                    + f"; slimbert/HF {row['slimbert_over_hf']:.2f}x"
                    + (f"; cache speed-up {row['cache_speedup']:.2f}x" if "cache_speedup" in row else ""))
    bar.close()
    print(save(meta, settings, Path(args.out), t_start, complete=True))


def save(meta: dict, settings: list[dict], out: Path, t_start: float, complete: bool) -> str:
    """Write the JSON and Markdown (after every setting, so an interrupted run keeps its rows)."""
    meta["wall_s"] = time.perf_counter() - t_start
    meta["load_average_end"] = os.getloadavg()
    meta["complete"] = complete
    checked = [row["cache_equals_no_cache"] for row in settings if "cache_equals_no_cache" in row]
    meta["cache_equals_no_cache"] = f"{sum(checked)} of {len(checked)} settings"
    results = {"meta": meta, "settings": settings}
    out.mkdir(parents=True, exist_ok=True)
    (out / "seq2seq_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (out / "seq2seq_speed.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
