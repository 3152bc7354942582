"""Running one command of a benchmark, shown as it starts and timed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def run_command(cmd: list[str], name: str | None = None, env: dict[str, str] | None = None,
                log: Path | None = None) -> float:
    """Run `cmd` (stopping the benchmark if it fails), printing it first and its wall time after;
    returns the seconds it took. `env`: variables added to this process's; `log`: where its output
    goes instead of this terminal (for commands run side by side)."""
    print(f"== {name + ': ' if name else ''}{' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    environment = {**os.environ, **env} if env else None
    if log is None:
        subprocess.run(cmd, check=True, env=environment)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as f:
            done = subprocess.run(cmd, env=environment, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, cmd, f"see {log}")
    seconds = time.perf_counter() - t0
    print(f"   {seconds:.0f} s{f' ({log})' if log else ''}", flush=True)
    return seconds
