"""The device a job runs on, the precision it computes in there, and what the machine has."""

from __future__ import annotations

import importlib.util
import platform
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from slimbert.errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" is CUDA when present, else the CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """Autocast context for "bf16"/"fp16"; a no-op for "fp32"."""
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_device(device: str, precision: str = "fp32") -> None:
    """Refuse, before any work, a device this machine does not have and a precision it cannot
    run there: a ConfigError naming the option."""
    try:
        resolved = resolve_device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: this machine has no CUDA device "
                              f"(or this PyTorch build has no CUDA); use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), numbered from 0")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r}: this machine has no Apple MPS device; use --device cpu")
    elif resolved.type != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if precision == "fp16" and resolved.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (it trains with loss scaling there); "
                          "use bf16 or fp32 on the CPU")


# ------------------------------------------------------------------ what the machine has

# CPU flags (/proc/cpuinfo) that give bf16 matmuls a native path: without one of them, oneDNN
# emulates bf16 and a matmul runs tens of times slower than in fp32 (0.3 against 17 GFLOP/s
# measured on an AVX2-only AMD EPYC).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86, x86, and aarch64's Features entry
REPORTED_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx512f", "avx2", "bf16")


@dataclass(frozen=True)
class Machine:
    """The CPU (and GPU) a job runs on, as the speed figures depend on it."""

    cpu_model: str  # e.g. "AMD EPYC 7B13"
    isa: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", "DEFAULT", ...
    flags: tuple[str, ...]  # the REPORTED_FLAGS the CPU has
    threads: int  # torch threads
    cuda: str | None = None  # "NVIDIA H200 (sm_90)" when a GPU is visible
    onnx_providers: tuple[str, ...] = ()  # ONNX Runtime's execution providers, when it is installed

    @property
    def bf16_native(self) -> bool:
        """bf16 matmuls run natively on this CPU (AVX512-BF16 or AMX); otherwise they are emulated."""
        if "avx2" in self.flags and self.isa == "AVX2":  # x86 kernels held to AVX2 (ATEN_CPU_CAPABILITY)
            return False
        return any(flag in self.flags for flag in BF16_FLAGS)

    def line(self) -> str:
        """One line for every table and JSON: CPU model, ISA, threads, bf16 native or not."""
        extras = ", ".join(f for f in self.flags if f not in ("avx2", "avx512f"))
        bf16 = "bf16 native" if self.bf16_native else "bf16 emulated (slow)"
        gpu = f"; GPU {self.cuda}" if self.cuda else ""
        return (f"{self.cpu_model}, {self.isa}{f' ({extras})' if extras else ''}, {self.threads} "
                f"thread{'s' if self.threads != 1 else ''}, {bf16}{gpu}")

    def as_dict(self) -> dict:
        return {"cpu_model": self.cpu_model, "isa": self.isa, "flags": list(self.flags), "threads": self.threads,
                "cuda": self.cuda, "onnx_providers": list(self.onnx_providers), "bf16_native": self.bf16_native,
                "line": self.line()}


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; ("unknown CPU", {}) where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown CPU", set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, flags=re.M)
    return (model.group(1).strip() if model else platform.processor() or "unknown CPU",
            set(flags.group(1).split()) if flags else set())


def detect_machine() -> Machine:
    """What this machine has: CPU model and ISA, the flags that matter, threads, CUDA."""
    model, flags = _cpuinfo()
    cuda = None
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        cuda = f"{torch.cuda.get_device_name()} (sm_{major}{minor})"
    providers: tuple[str, ...] = ()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    return Machine(model, torch.backends.cpu.get_cpu_capability(), tuple(f for f in REPORTED_FLAGS if f in flags),
                   torch.get_num_threads(), cuda, providers)


def gpu_bf16_native() -> bool:
    """Whether a GPU is visible and computes bf16 natively (Ampere, sm_80, and later)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def check_bf16(device: torch.device | str, what: str, force: bool = False) -> None:
    """Refuse bf16 on a CPU or GPU that only emulates it (a ConfigError naming `what`), unless
    `force`. CPUs with AVX512-BF16/AMX and GPUs from Ampere (sm_80) on pass."""
    device = resolve_device(device) if isinstance(device, str) else device
    if force or device.type not in ("cpu", "cuda"):
        return
    if device.type == "cuda":  # (no GPU at all is check_device's error)
        if torch.cuda.is_available() and not gpu_bf16_native():
            raise ConfigError(f"{what}: this GPU ({torch.cuda.get_device_name(device)}) has no native bf16 "
                              "(it arrived with Ampere, sm_80); use fp16 or fp32, or add --force")
        return
    machine = detect_machine()
    if not machine.bf16_native:
        raise ConfigError(f"{what}: this CPU ({machine.cpu_model}, {machine.isa}, no AVX512-BF16/AMX) only "
                          "emulates bf16, about 50x slower than fp32; use fp32 (or int8 to serve: slimbert "
                          "quantize), or add --force")


def cpu_busy(seconds: float = 2.0) -> float | None:
    """The share of all CPUs' time spent busy over the next `seconds` (from /proc/stat), before a
    timing starts: what other processes are using. None where /proc/stat is missing. (A load
    average is not this: it lags by a minute and counts the timing's own threads.)"""
    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = sample()
    if first is None:
        return None
    time.sleep(seconds)
    second = sample()
    total, idle = second[0] - first[0], second[1] - first[1]
    return 1 - idle / total if total > 0 else None
