"""How often int8 agrees with fp32 on SST-2 dev for the test suite's probe classifier.

The probe is what `tests/test_serving.py`'s `sst2_probe` fixture trains: the bundled MiniLM
fine-tuned in fp32 for one epoch on the first N SST-2 training sentences (max length 64, seed 0).
It is quantized with every Linear int8, plain and SmoothQuant-calibrated on the last 512 training
sentences; the agreement of its dev predictions with fp32 is what the test's threshold rests on.

    python benchmarks/int8_probe_agreement.py --data-dir ../shared/data/glue --out runs/int8-probe
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/int8_probe_agreement.py ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slimbert import load_model
from slimbert.checkpoint import load_tokenizer, resolve
from slimbert.compress.quantize import quantize_int8
from slimbert.data.batching import encode_examples
from slimbert.data.sources import load_task_data
from slimbert.hardware import detect_machine
from slimbert.inference import predict_logits
from slimbert.recipes.finetune import FinetuneConfig, finetune
from slimbert.training.trainer import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="the GLUE folder")
    ap.add_argument("--out", required=True, help="where the probe is trained (reused when it exists)")
    ap.add_argument("--train-examples", type=int, default=2000)
    args = ap.parse_args()
    out = Path(args.out)
    if not (out / "config.json").exists():
        data = load_task_data("sst2", args.data_dir, splits=("train",), max_train_examples=args.train_examples)
        finetune(FinetuneConfig(out=str(out), model=str(resolve("bundled:minilm-l6")), max_length=64), data,
                 TrainConfig(epochs=1, batch_size=32, lr=1e-4, warmup_ratio=0.1, progress=False, seed=0))
    tokenizer = load_tokenizer(out)
    dev = encode_examples(load_task_data("sst2", args.data_dir, splits=("dev",)).dev.examples, tokenizer, 128)
    train = load_task_data("sst2", args.data_dir, splits=("train",)).train.examples
    calibration = encode_examples(train[-512:], tokenizer, 128)
    fp32 = load_model(out)
    reference = predict_logits(fp32, dev, 0).argmax(-1)
    print(detect_machine().line())
    print(f"probe accuracy: {100 * (reference == dev.labels).float().mean():.2f}")
    for name, sample in (("plain", None), ("smoothquant", calibration)):
        predictions = predict_logits(quantize_int8(fp32, "all", sample), dev, 0).argmax(-1)
        print(f"int8 every Linear, {name}: agreement {100 * (predictions == reference).float().mean():.2f}%")


if __name__ == "__main__":
    main()
