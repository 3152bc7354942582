"""Running one command of a benchmark, shown as it starts and timed."""

from __future__ import annotations

import subprocess
import time


def run_command(cmd: list[str], name: str | None = None) -> float:
    """Run `cmd` (stopping the benchmark if it fails), printing it first and its wall time after;
    returns the seconds it took."""
    print(f"== {name + ': ' if name else ''}{' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    print(f"   {seconds:.0f} s", flush=True)
    return seconds
