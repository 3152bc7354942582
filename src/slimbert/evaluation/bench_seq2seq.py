"""`slimbert bench-seq2seq`: translation models x serving backends, BLEU against speed.

Backends (each serves the same weights as the checkpoint):

    torch              the checkpoint in slimbert's model, KV-cached search (`slimbert.generation`),
                       served as `slimbert translate` does: fp32, the vocabulary projection's
                       weight prepacked by oneDNN on the CPU (`SharedEmbeddings.pack_output`)
    torch-int8         dynamic int8 of the attention projections (encoder and decoder)
    torch-int8-all     dynamic int8 of every Linear, the feed-forward layers too
    torch-bf16         bfloat16 weights; only where the CPU has AVX512-BF16/AMX (or on CUDA)
    ctranslate2        exported to CTranslate2 (`slimbert export --format ctranslate2`), fp32
    ctranslate2-int8   the same model with int8 weights (CTranslate2's per-row scales)
    hf                 Hugging Face `MarianMTModel.generate` on the weights exported to MarianMT
                       (`slimbert.compress.export_marian`; post-norm sinusoidal models only)

What is measured, per model, backend and search (greedy, beam K):
- BLEU (sacreBLEU cased, and the legacy lowercased score) of the whole test set, decoded in
  length-sorted batches of `batch_size`;
- throughput: tokens of the best hypotheses (</s> included) per second over that same pass;
- latency: milliseconds per sentence decoded alone (batch 1), over the first `latency_sentences`
  sentences, mean and 90th percentile;
- agreement: the share of sentences whose output equals torch fp32's, same model and search.
Every system runs once per round, in turn (round-robin, after a warm-up of one batch and one
sentence each), on the same sentences and threads; speeds are medians over the rounds. Each speed is also given as a
ratio: to torch fp32 of the same model and search, and to the first model's torch beam search
(the teacher's beam throughput, the usual baseline of a distilled student).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from slimbert.checkpoint import save_checkpoint
from slimbert.compress.export_ctranslate2 import CTranslate2Translator, export_ctranslate2
from slimbert.compress.export_marian import to_marian
from slimbert.compress.quantize import quantize_int8, to_bf16
from slimbert.config import SEQ2SEQ_BACKENDS
from slimbert.data.parallel import pad_ids
from slimbert.errors import CheckpointError, SlimbertError
from slimbert.evaluation.bench_run import draw_frontier, ratio_axis
from slimbert.evaluation.bleu import bleu_scores
from slimbert.evaluation.report import SEED_SUFFIX
from slimbert.generation import Hypothesis, SearchConfig, target_vocabulary, translate
from slimbert.generation.search import length_limits
from slimbert.generation.translation import Translations, translate_ids
from slimbert.hardware import detect_machine
from slimbert.io import atomic_write, atomic_write_text
from slimbert.modules import PackedLinear

VOCAB = "+vocab"  # suffix of a backend served over the target vocabulary only (--target-vocabulary)


class BackendUnavailable(SlimbertError):
    """This backend cannot serve this model on this machine (the row is skipped, with the reason)."""


def _nothing() -> None:
    return None


@dataclass
class Engine:
    """One model served one way: `translate(lines, search, batch_size) -> Translations`, between
    `open()` and `close()` (untimed), which load and release what only this engine needs."""

    label: str  # the model's name in tables and plots
    backend: str
    translate: Callable[[Sequence[str], SearchConfig, int], Translations]
    file_bytes: int
    open: Callable[[], None] = _nothing
    close: Callable[[], None] = _nothing


class CTranslate2Engine:
    """A CTranslate2 model that is loaded only for its turn. CTranslate2 runs its own OpenMP
    threads (its own copy of libgomp), which keep spinning after a call for as long as the
    translator lives. Left loaded beside torch in one process on a 2-core machine, they took
    cores from the torch rows measured after them: a Seq-KD student's torch int8 greedy
    decoding fell from about 9,000 to 4,200 tokens/s, and recovered once the translator was
    deleted. Each turn therefore loads the translator and deletes it afterwards."""

    def __init__(self, directory: Path, compute_type: str, threads: int):
        self.directory, self.compute_type, self.threads = directory, compute_type, threads
        self.translator: CTranslate2Translator | None = None

    def open(self) -> None:
        self.translator = CTranslate2Translator(self.directory, compute_type=self.compute_type,
                                                threads=self.threads)

    def close(self) -> None:
        self.translator = None
        gc.collect()

    def translate(self, lines: Sequence[str], search: SearchConfig, batch_size: int) -> Translations:
        if self.translator is None:
            raise RuntimeError("CTranslate2Engine.translate before open()")
        return self.translator.translate(lines, search, batch_size)


def _bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.suffix in (".safetensors", ".bin"))


def _hf_engine(model, tokenizer) -> Callable[[Sequence[str], SearchConfig, int], Translations]:
    """HF `generate` on the MarianMT export, with slimbert's search rules where HF has them."""
    import transformers

    transformers.logging.set_verbosity_error()  # not a warning per batch about max_length
    hf = to_marian(model).eval()
    config = model.config

    def decode_batch(ids: list[list[int]], search: SearchConfig) -> list[list[Hypothesis]]:
        input_ids, mask = pad_ids(ids, config.pad_token_id)
        limit = int(length_limits(mask.sum(1), search, config.max_target_length).max())
        options = {"num_beams": search.beam_size, "do_sample": False, "max_new_tokens": limit,
                   "min_new_tokens": search.min_length, "num_return_sequences": 1}
        if search.beam_size > 1:  # slimbert's rule: a sentence is done with K finished hypotheses
            options.update(early_stopping=True, length_penalty=search.length_penalty)
        with torch.inference_mode():
            out = hf.generate(input_ids=input_ids, attention_mask=mask, **options)
        hyps = []
        for row in out[:, 1:].tolist():  # after <s>
            tokens = row[:row.index(config.eos_token_id)] if config.eos_token_id in row else row
            hyps.append([Hypothesis([t for t in tokens if t != config.pad_token_id], float("nan"), float("nan"))])
        return hyps

    return lambda lines, search, batch_size: translate_ids(
        lambda batch: decode_batch(batch, search), tokenizer, lines, config.max_source_length, batch_size)


def engines_for(checkpoint: Path, backends: Sequence[str], workdir: Path, threads: int, label: str,
                model, tokenizer, vocabulary: Sequence[int] | None = None) -> tuple[list[Engine], dict[str, str]]:
    """Every backend of one loaded translation model; and why each unavailable one was skipped.
    With a target `vocabulary`, every torch and CTranslate2 backend is also served restricted
    to it, as a backend of its own named BACKEND+vocab."""
    engines, skipped = [], {}
    machine = detect_machine()
    for backend in backends:
        try:
            if backend not in SEQ2SEQ_BACKENDS:
                raise SlimbertError(f"unknown backend '{backend}'; choose from {', '.join(SEQ2SEQ_BACKENDS)}")
            if backend == "torch":  # as `slimbert translate` serves it: the projection prepacked
                net = copy.deepcopy(model)
                net.embeddings.pack_output()
            elif backend.startswith("torch-int8"):
                if model.config.quantization:
                    raise BackendUnavailable("the checkpoint is already int8")
                net = quantize_int8(model, "all" if backend.endswith("-all") else "attention")
            elif backend == "torch-bf16":
                if not machine.bf16_native:
                    raise BackendUnavailable(f"this CPU ({machine.isa}) only emulates bf16, about 50x slower")
                net = to_bf16(model)
            else:
                net = None
            if net is not None:
                files = (checkpoint if backend == "torch"
                         else save_checkpoint(net, tokenizer, workdir / backend))
                engines.append(Engine(label, backend, _torch_translate(net, tokenizer), _bytes(files)))
                if vocabulary is not None:
                    restricted = copy.deepcopy(net)
                    restricted.embeddings.restrict_output(vocabulary)
                    engines.append(Engine(label, f"{backend}{VOCAB}", _torch_translate(restricted, tokenizer),
                                          _bytes(files)))
                continue
            if backend.startswith("ctranslate2"):
                int8 = backend.endswith("int8")
                for name, allowed in ((backend, None), (f"{backend}{VOCAB}", vocabulary)):
                    if name != backend and allowed is None:
                        continue
                    target = export_ctranslate2(model, tokenizer, workdir / name, int8=int8,
                                                target_vocabulary=allowed)
                    engine = CTranslate2Engine(target, "int8" if int8 else "float32", threads)
                    engines.append(Engine(label, name, engine.translate, _bytes(target), engine.open, engine.close))
                continue
            try:
                engines.append(Engine(label, backend, _hf_engine(model, tokenizer), _bytes(checkpoint)))
            except CheckpointError as e:
                raise BackendUnavailable(str(e)) from None
        except BackendUnavailable as e:
            skipped[backend] = str(e)
    return engines, skipped


def _torch_translate(model, tokenizer):
    return lambda lines, search, batch_size: translate(model, tokenizer, lines, search, batch_size)


@dataclass
class Row:
    model: str
    backend: str
    search: str  # "greedy" or "beam K"
    bleu: float
    legacy_bleu: float
    tokens_per_s: float
    latency_ms: float  # mean, batch 1
    latency_p90_ms: float
    same_as_torch: float | None  # share of outputs equal to torch fp32's (same model and search)
    file_bytes: int
    rounds: int
    vs_torch: float | None = None  # tokens/s over torch fp32's, same model and search
    vs_first_beam: float | None = None  # tokens/s over the first model's torch beam search
    seconds: list[float] = field(default_factory=list)


def run_bench_seq2seq(models: Sequence[tuple[str, object, object, Path]], backends: Sequence[str],
                      sources: Sequence[str], references: Sequence[str], workdir: Path, beam: int = 5,
                      batch_size: int = 32, latency_sentences: int = 100, rounds: int = 3, threads: int = 2,
                      max_len_a: float = 1.5, max_len_b: int = 10, progress: bool = True,
                      target_text: Sequence[str] | None = None) -> tuple[list[Row], dict]:
    """Measure every (label, model, tokenizer, checkpoint dir) with every backend; rows and metadata.
    `target_text`: lines of target-language text whose pieces the BACKEND+vocab rows decode over."""
    torch.set_num_threads(threads)
    engines, skipped, vocabulary_sizes = [], {}, {}
    for i, (label, model, tokenizer, checkpoint) in enumerate(models):
        vocabulary = target_vocabulary(tokenizer, target_text) if target_text else None
        if vocabulary is not None:
            vocabulary_sizes[label] = [len(vocabulary), len(tokenizer)]
        got, why = engines_for(checkpoint, backends, workdir / f"m{i}", threads, label, model, tokenizer, vocabulary)
        engines += got
        skipped.update({f"{label} {b}": w for b, w in why.items()})
    if not engines:
        raise SlimbertError("no backend can serve these models here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    searches = [1] + ([beam] if beam > 1 else [])
    latency_lines = list(sources[:latency_sentences])
    rows: list[Row] = []
    bar = tqdm(total=len(searches) * (rounds + 1) * len(engines), desc="bench-seq2seq", unit="run",
               disable=not progress)
    for k in searches:
        search = SearchConfig(beam_size=k, max_len_a=max_len_a, max_len_b=max_len_b)
        times: dict[int, list[float]] = {i: [] for i in range(len(engines))}
        latencies: dict[int, list[float]] = {i: [] for i in range(len(engines))}
        outputs: dict[int, Translations] = {}
        for i, engine in enumerate(engines):  # warm-up: one batch, and one sentence alone
            engine.open()
            engine.translate(list(sources[:batch_size]), search, batch_size)
            engine.translate(list(sources[:1]), search, 1)
            engine.close()
            bar.update()
        for _ in range(rounds):
            for i, engine in enumerate(engines):
                bar.set_postfix_str(f"{engine.label} {engine.backend} {'greedy' if k == 1 else f'beam {k}'}")
                engine.open()
                if engine.open is not _nothing:  # loaded afresh: warm it again, untimed
                    engine.translate(list(sources[:batch_size]), search, batch_size)
                result = engine.translate(list(sources), search, batch_size)
                outputs.setdefault(i, result)  # every round decodes the same; BLEU is taken on the first
                times[i].append(result.seconds)
                for line in latency_lines:
                    t0 = time.perf_counter()
                    engine.translate([line], search, 1)
                    latencies[i].append(time.perf_counter() - t0)
                engine.close()
                bar.update()
        for i, engine in enumerate(engines):
            result = outputs[i]
            scores = bleu_scores(result.best, references)
            seconds = statistics.median(times[i])
            lat = sorted(latencies[i]) or [float("nan")]
            torch_i = next((j for j, e in enumerate(engines) if e.label == engine.label and e.backend == "torch"),
                           None)
            same = (None if torch_i is None else
                    statistics.mean(a == b for a, b in zip(result.best, outputs[torch_i].best)))
            rows.append(Row(engine.label, engine.backend, "greedy" if k == 1 else f"beam {k}", scores.sacrebleu,
                            scores.legacy, result.generated_tokens / seconds, 1000 * statistics.mean(lat),
                            1000 * lat[int(0.9 * (len(lat) - 1))], same, engine.file_bytes, len(times[i]),
                            seconds=times[i]))
    bar.close()
    _ratios(rows, models[0][0], beam)
    machine = detect_machine()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine.line(),
            "torch": torch.__version__, "threads": threads, "sentences": len(sources),
            "latency_sentences": len(latency_lines), "batch_size": batch_size, "beam": beam, "rounds": rounds,
            "max_len_a": max_len_a, "max_len_b": max_len_b, "skipped": skipped,
            "target_vocabulary": vocabulary_sizes,  # per model: [pieces kept, vocabulary size]
            "torch_projection": "prepacked" if PackedLinear.available() else "plain",
            "load_average": os.getloadavg()}
    return rows, meta


def _ratios(rows: list[Row], first: str, beam: int) -> None:
    by_key = {(r.model, r.backend, r.search): r for r in rows}
    base = by_key.get((first, "torch", f"beam {beam}")) or by_key.get((first, "torch", "greedy"))
    for r in rows:
        ref = by_key.get((r.model, "torch", r.search))
        r.vs_torch = r.tokens_per_s / ref.tokens_per_s if ref else None
        r.vs_first_beam = r.tokens_per_s / base.tokens_per_s if base else None


def seed_groups(rows: list[Row]) -> dict[tuple[str, str, str], list[Row]]:
    """The rows by (model name without its seed suffix NAME-sN, backend, search), in first-seen
    order: the seeds of one recipe fall together, any other model stands alone."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((SEED_SUFFIX.sub("", r.model), r.backend, r.search), []).append(r)
    return groups


def pooled(rows: list[Row]) -> list[dict]:
    """Runs that differ only by seed (NAME-s1, NAME-s2, ...), one entry per name, backend and
    search: the mean and sample standard deviation of BLEU and tokens/s over the seeds."""
    out = []
    for (name, backend, search), members in seed_groups(rows).items():
        if len(members) < 2:
            continue
        entry = {"model": name, "backend": backend, "search": search, "seeds": len(members)}
        for field_name in ("bleu", "legacy_bleu", "tokens_per_s", "vs_first_beam"):
            values = [getattr(r, field_name) for r in members if getattr(r, field_name) is not None]
            entry[field_name] = statistics.mean(values) if values else None
            entry[f"{field_name}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(entry)
    return out


def markdown(rows: list[Row], meta: dict, command: str = "") -> str:
    lines = [f"# Translation models x backends ({meta['date']})", "",
             (f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads. "
              f"{meta['sentences']} test sentences in batches of {meta['batch_size']} (BLEU and tokens/s); "
              f"latency: {meta['latency_sentences']} sentences one at a time. Median of {meta['rounds']} "
              "round-robin rounds after a warm-up."), ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [("| model | backend | search | BLEU | legacy BLEU | tokens/s | x torch | x first model's beam | "
               "ms/sentence (p90) | same as torch | MB |"),
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in rows:
        lines.append(f"| {r.model} | {r.backend} | {r.search} | {r.bleu:.2f} | {r.legacy_bleu:.2f} | "
                     f"{r.tokens_per_s:.0f} | {fmt(r.vs_torch, '.2f')}x | {fmt(r.vs_first_beam, '.2f')}x | "
                     f"{r.latency_ms:.1f} ({r.latency_p90_ms:.1f}) | {fmt(r.same_as_torch, '.1%')} | "
                     f"{r.file_bytes / 1e6:.1f} |")
    seeds = pooled(rows)
    if seeds:
        lines += ["", "Seeds pooled (mean ± sample standard deviation):", "",
                  "| model | backend | search | seeds | BLEU | legacy BLEU | tokens/s | x first model's beam |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for e in seeds:
            lines.append(f"| {e['model']} | {e['backend']} | {e['search']} | {e['seeds']} | "
                         f"{e['bleu']:.2f} ± {e['bleu_sd']:.2f} | {e['legacy_bleu']:.2f} ± {e['legacy_bleu_sd']:.2f} | "
                         f"{e['tokens_per_s']:.0f} ± {e['tokens_per_s_sd']:.0f} | "
                         f"{fmt(e['vs_first_beam'], '.2f')}x |")
    sizes = meta.get("target_vocabulary") or {}
    if sizes:
        lines.append("\n`+vocab` rows decode over the target vocabulary only (the pieces the --target-vocabulary "
                     "text uses): " + ", ".join(f"{m} {k:,} of {v:,} pieces" for m, (k, v) in sizes.items()) + ".")
    for name, why in meta.get("skipped", {}).items():
        lines.append(f"\nSkipped {name}: {why}")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """BLEU against throughput relative to the first model's beam search (log scale), as for the
    encoders: a colour per backend, o for greedy and s for beam search, seeds of one recipe as one
    point (mean, with the standard deviation of BLEU), the model's name beside its points when
    there are several models, the frontier, and lines at the first model's beam BLEU and 1 BLEU
    below it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    relative = all(r.vs_first_beam is not None for r in rows)
    # one point per model (seeds NAME-sN pooled: their mean, with the BLEU spread), backend and search
    points = []  # (name, backend, search, x, bleu, bleu sd)
    for (name, backend, search), members in seed_groups(rows).items():
        xs = [r.vs_first_beam if relative else r.tokens_per_s for r in members]
        bleus = [r.bleu for r in members]
        points.append((name if len(members) > 1 else members[0].model, backend, search, statistics.mean(xs),
                       statistics.mean(bleus), statistics.stdev(bleus) if len(bleus) > 1 else 0.0))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = {b: plt.get_cmap("tab20")(i) for i, b in enumerate(dict.fromkeys(r.backend for r in rows))}
    several = len({p[0] for p in points}) > 1
    for backend in colours:
        for search_kind, marker in (("greedy", "o"), ("beam", "s")):
            mine = [p for p in points if p[1] == backend and p[2].startswith(search_kind)]
            if mine:
                ax.errorbar([p[3] for p in mine], [p[4] for p in mine], yerr=[p[5] for p in mine], fmt=marker,
                            markersize=6, capsize=2, color=colours[backend],
                            label=backend if search_kind == "greedy" else None)
    if several:
        for name, _, _, px, py, _ in points:
            ax.annotate(name, (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
    draw_frontier(ax, [(p[3], p[4]) for p in points])
    handles, _ = ax.get_legend_handles_labels()
    first = rows[0].model
    base = next((r for r in rows if r.model == first and r.backend == "torch" and r.search.startswith("beam")),
                None)
    if base is not None:
        ax.axhline(base.bleu, color="gray", lw=0.8, ls="--")
        ax.axhline(base.bleu - 1, color="gray", lw=0.8, ls=":")
        handles.append(Line2D([], [], color="gray", lw=0.8, ls=":", label=f"1 BLEU below {first}'s {base.search}"))
    if relative:
        ratio_axis(ax)
        ax.set_xlabel(f"generated tokens per second relative to {first}'s torch "
                      f"{base.search if base else 'greedy'} (log)")
    else:
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens per second (log)")
    ax.set_ylabel("sacreBLEU (cased)")
    ax.set_title("BLEU against throughput (o greedy, s beam search)")
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)


def write_bench_seq2seq(rows: list[Row], meta: dict, out: str | Path, command: str = "",
                        stem: str = "bench") -> Path:
    """OUT/STEM.json, STEM.md and STEM.png (`slimbert report` writes report.*)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.json", json.dumps({"meta": meta, "command": command,
                                                        "rows": [asdict(r) for r in rows],
                                                        "seeds_pooled": pooled(rows)}, indent=2) + "\n")
    atomic_write_text(out / f"{stem}.md", markdown(rows, meta, command))
    plot(rows, out / f"{stem}.png")
    return out
