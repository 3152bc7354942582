"""What the machine has, and bf16 only where it is native."""

from __future__ import annotations

import pytest
import torch

from slimbert import hardware
from slimbert.errors import ConfigError
from slimbert.hardware import Machine, check_bf16, detect_machine

AVX2_ONLY = Machine("AMD EPYC 7B13", "AVX2", ("avx2",), 2)
SAPPHIRE_RAPIDS = Machine("Intel Xeon Platinum 8480+", "AVX512", ("avx512_bf16", "amx_bf16", "avx512_vnni",
                                                                 "avx512f", "avx2"), 2)


def test_detect_machine_reads_this_machine():
    machine = detect_machine()
    assert machine.isa == torch.backends.cpu.get_cpu_capability()
    assert machine.threads == torch.get_num_threads()
    assert machine.cpu_model and machine.cpu_model in machine.line()
    assert machine.as_dict()["bf16_native"] == machine.bf16_native
    onnxruntime = pytest.importorskip("onnxruntime")
    assert machine.onnx_providers == tuple(onnxruntime.get_available_providers())


def test_bf16_is_native_with_avx512_bf16_or_amx_only():
    assert SAPPHIRE_RAPIDS.bf16_native and "bf16 native" in SAPPHIRE_RAPIDS.line()
    assert not AVX2_ONLY.bf16_native and "bf16 emulated" in AVX2_ONLY.line()
    # The flag is there but the kernels are held to AVX2 (ATEN_CPU_CAPABILITY=avx2): emulated.
    assert not Machine("AMD EPYC 9B14", "AVX2", ("avx512_bf16", "avx512f", "avx2"), 2).bf16_native


def test_bf16_is_refused_on_a_cpu_that_only_emulates_it(monkeypatch):
    monkeypatch.setattr(hardware, "detect_machine", lambda: AVX2_ONLY)
    with pytest.raises(ConfigError, match=r"^--precision bf16: this CPU \(AMD EPYC 7B13, AVX2, no AVX512-BF16/AMX\)"
                                          r".*50x slower.*--force"):
        check_bf16("cpu", "--precision bf16")
    check_bf16("cpu", "--precision bf16", force=True)  # --force overrides
    monkeypatch.setattr(hardware, "detect_machine", lambda: SAPPHIRE_RAPIDS)
    check_bf16("cpu", "--precision bf16")


def test_bf16_on_cuda_is_refused_only_on_a_gpu_without_it(monkeypatch):
    monkeypatch.setattr(hardware, "detect_machine", lambda: AVX2_ONLY)  # the CPU does not matter
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    with pytest.raises(ConfigError, match="^--precision bf16: this GPU .Tesla T4. has no native bf16"):
        check_bf16(torch.device("cuda"), "--precision bf16")
    check_bf16(torch.device("cuda"), "--precision bf16", force=True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    check_bf16(torch.device("cuda"), "--precision bf16")


def test_bf16_training_and_bf16_weights_are_refused_from_the_cli_on_an_avx2_cpu(monkeypatch, tiny_checkpoint,
                                                                               tmp_path, capsys):
    from slimbert.cli import main
    from slimbert.training.trainer import TrainConfig

    monkeypatch.setattr(hardware, "detect_machine", lambda: AVX2_ONLY)
    with pytest.raises(ConfigError, match="^precision bf16: this CPU"):
        TrainConfig(precision="bf16", device="cpu")
    assert TrainConfig(precision="bf16", device="cpu", force=True).force
    assert main(["finetune", "--model", str(tiny_checkpoint), "--train-file", "t.tsv", "--dev-file", "d.tsv",
                 "--out", str(tmp_path / "o"), "--precision", "bf16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "AVX2" in err and "--force" in err
    assert main(["quantize", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "q"), "--dtype", "bf16"]) == 2
    assert "dtype bf16: this CPU" in capsys.readouterr().err and not (tmp_path / "q").exists()
    assert main(["quantize", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "q"), "--dtype", "bf16",
                 "--force"]) == 0


def test_bench_tables_carry_the_machine_line_and_mark_emulated_bf16(monkeypatch):
    from slimbert.evaluation.bench_run import BenchRow, dtype_label, markdown

    meta = {"metric": "accuracy", "seq_lens": [16], "batch_size": 32, "matmul_peak_gflops": {"float32": 17.0},
            "task": "sst2", "dev_examples": 8, "threads": 2, "rounds": 1, "skipped": [],
            "machine": AVX2_ONLY.as_dict()}
    assert dtype_label("bf16", meta) == "bf16 (emulated)" and dtype_label("float32", meta) == "float32"
    meta_native = {**meta, "machine": SAPPHIRE_RAPIDS.as_dict()}
    assert dtype_label("bf16", meta_native) == "bf16"
    import dataclasses

    fields = {f.name for f in dataclasses.fields(BenchRow)}
    row = BenchRow(**{k: v for k, v in dict(model="m", backend="torch-bf16", dtype="bf16", score=0.9,
                                             parameters=1, file_bytes=1, throughput=10.0,
                                             latency_ms={16: {"p50": 1.0, "p90": 1.0}}).items() if k in fields})
    table = markdown([row], meta)
    assert "bf16 (emulated)" in table and "Machine: AMD EPYC 7B13, AVX2, 2 threads, bf16 emulated (slow)." in table
