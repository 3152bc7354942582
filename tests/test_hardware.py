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


def test_bf16_on_cuda_is_never_refused(monkeypatch):
    monkeypatch.setattr(hardware, "detect_machine", lambda: AVX2_ONLY)
    check_bf16(torch.device("cuda"), "--precision bf16")
