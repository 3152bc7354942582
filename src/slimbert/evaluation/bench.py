"""Speed and size measurements shared by `slimbert report` (and the benchmark scripts).

Every figure is taken after a warm-up, with a fixed number of threads, on the same inputs for
every model; ratios are only ever formed between models measured in the same process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.benchmark import Timer

from slimbert.checkpoint import WEIGHTS_NAME, resolve
from slimbert.data.batching import EncodedDataset, collate, model_inputs
from slimbert.models import count_parameters


@dataclass
class SizeInfo:
    parameters: int
    file_bytes: int


def size_of(model: nn.Module, checkpoint: str | Path) -> SizeInfo:
    """Parameter count (`count_parameters`: tied weights once, int8 weights too) and the bytes
    of the checkpoint's weights file(s)."""
    directory = resolve(checkpoint)
    files = list(directory.glob("*.safetensors")) or [directory / WEIGHTS_NAME]
    return SizeInfo(count_parameters(model), sum(f.stat().st_size for f in files if f.exists()))


def latency_batch(data: EncodedDataset, seq_len: int, pad_id: int, n: int = 32) -> list[dict[str, torch.Tensor]]:
    """`n` single-example inputs of exactly `seq_len` tokens, cut from the longest examples
    (shorter ones are repeated to length), for batch-1 latency."""
    order = sorted(range(len(data)), key=lambda i: -len(data.input_ids[i]))[:n]
    batches = []
    for i in order:
        ids = list(data.input_ids[i])
        types = list(data.token_type_ids[i])
        while len(ids) < seq_len:
            ids, types = ids + ids, types + types
        one = EncodedDataset([ids[:seq_len]], [types[:seq_len]], None)
        batches.append(collate(one, [0], pad_id))
    return batches


@torch.inference_mode()
def measure_latency(model, inputs: list[dict[str, torch.Tensor]], warmup: int = 5) -> list[float]:
    """Seconds per forward pass for each input (after `warmup` passes); `model` is any callable
    taking the model inputs as keywords (a module, an ONNX Runtime session wrapper, ...)."""
    if isinstance(model, nn.Module):
        model.eval()
    for batch in inputs[:warmup]:
        model(**model_inputs(batch))
    times = []
    for batch in inputs:
        t0 = time.perf_counter()
        model(**model_inputs(batch))
        times.append(time.perf_counter() - t0)
    return times


@torch.inference_mode()
def timed_pass(forward, batches: list[dict[str, torch.Tensor]], warmup: int = 2) -> tuple[float, torch.Tensor]:
    """Sequences per second over one pass of `batches` (after `warmup` batches), and the logits
    of that pass in batch order (for accuracy)."""
    for batch in batches[:warmup]:
        forward(**model_inputs(batch))
    n = sum(len(b["input_ids"]) for b in batches)
    outputs = []
    t0 = time.perf_counter()
    for batch in batches:
        outputs.append(forward(**model_inputs(batch)))
    seconds = time.perf_counter() - t0
    return n / seconds, torch.cat([o.float() for o in outputs]) if outputs[0].dim() == 2 else torch.empty(0)


# ------------------------------------------------------------------ slimbert bench


def forward_flops(config, batches: list[dict[str, torch.Tensor]]) -> float | None:
    """Multiply-adds x 2 of a BERT encoder forward over `batches` (matmuls only; None if not a BERT).

    Per layer and sequence of T tokens with N heads of size D and an FFN of width I:
    Q, K, V and output projections 2*T*H*(N*D)*4; scores and weighted values 2*2*T*T*(N*D);
    feed-forward 2*2*T*H*I."""
    from slimbert.config import BertConfig

    if not isinstance(config, BertConfig):
        return None
    H, D = config.hidden_size, config.head_dim
    total = 0.0
    for batch in batches:
        B, T = batch["input_ids"].shape
        for layer in range(config.num_hidden_layers):
            ND = config.heads_in_layer(layer) * D
            total += B * (8 * T * H * ND + 4 * T * T * ND + 4 * T * H * config.ffn_size_in_layer(layer))
    return total


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, min_run_time: float = 1.0) -> float:
    """The machine's measured matmul peak for `dtype`: the best block of n x n x n products
    that `torch.utils.benchmark` times (after its warm-up) for `min_run_time` seconds, on the
    threads torch uses now (the Timer's own default would be one)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    timer = Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2 * n ** 3 / min(timer.blocked_autorange(min_run_time=min_run_time).times) / 1e9


def peak_memory_mb(checkpoint: Path, backend: str, workdir: Path, batch_size: int, seq_len: int,
                   threads: int | None) -> float | None:
    """Peak resident memory (MB) a fresh process adds to serve one batch of `batch_size` x
    `seq_len` with `backend`, over what it holds after importing torch and slimbert."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "slimbert.evaluation.bench", "--memory", str(checkpoint), backend,
           str(workdir), str(batch_size), str(seq_len), str(threads or 0)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def _memory_probe(argv: list[str]) -> None:
    import json
    import resource

    checkpoint, backend, workdir, batch_size, seq_len, threads = argv
    if int(threads):
        torch.set_num_threads(int(threads))
    from slimbert.evaluation.backends import load

    def status_mb(field: str) -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
        except OSError:
            return None
        return None

    def peak_mb() -> float:
        return status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from slimbert.checkpoint import load_config

    token = min(1000, load_config(checkpoint).vocab_size - 1)
    try:  # reset the high-water mark, so that the imports' own peak does not count (Linux)
        Path("/proc/self/clear_refs").write_text("5")
        base = status_mb("VmRSS") or peak_mb()
    except OSError:
        base = peak_mb()
    served = load(Path(checkpoint), backend, Path(workdir), int(threads) or None)
    ids = torch.full((int(batch_size), int(seq_len)), token, dtype=torch.long)
    with torch.inference_mode():
        served.forward(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    print(json.dumps({"peak_mb": peak_mb() - base}))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--memory"]:
        _memory_probe(sys.argv[2:])
