"""Tokenizing a pretraining corpus into token shards: throughput (MB/s) and peak memory, 1x and Nx.

Each size runs in a fresh process that tokenizes every file into an empty cache
(`slimbert.data.corpus.corpus_shards`, what `slimbert pretrain` does on its first run) and
reports its own peak resident memory (ru_maxrss) and the memory right after its imports. The
Nx corpus is the same files under N names each (hard links, or copies across file systems), so
that every one of them is tokenized. Peak memory that does not grow with N is the claim.

    python benchmarks/corpus_tokenize.py --corpus ../shared/data/pretrain/wikipedia/*.txt \\
        ../shared/data/pretrain/books/*.txt --vocab bundled:minilm-l6 --copies 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


def child(cache: str, vocab: str, files: list[str]) -> None:
    """Tokenize `files` into `cache`; print what it measured as one JSON line."""
    from slimbert.checkpoint import load_tokenizer
    from slimbert.data.corpus import corpus_shards

    tokenizer = load_tokenizer(vocab)
    after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    shards = corpus_shards(files, tokenizer, cache, progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "files": len(files), "megabytes": sum(s.bytes for s in shards) / 1e6,
        "tokens": sum(s.tokens for s in shards), "documents": sum(s.documents for s in shards),
        "seconds": seconds, "mb_per_s": sum(s.bytes for s in shards) / 1e6 / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mb": after_imports,
    }))


def copies_of(files: list[Path], n: int, where: Path) -> list[str]:
    out = []
    for i in range(n):
        for f in files:
            dest = where / f"copy{i}" / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dest)
            except OSError:
                shutil.copyfile(f, dest)
            out.append(str(dest))
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", required=True)
    p.add_argument("--vocab", default="bundled:minilm-l6")
    p.add_argument("--copies", type=int, nargs="+", default=[1, 4])
    p.add_argument("--out", default="benchmarks/results/corpus_tokenize.json")
    args = p.parse_args()
    files = [Path(f).resolve() for f in args.corpus]
    runs = []
    with tempfile.TemporaryDirectory(dir=Path(args.out).parent) as tmp:
        for n in args.copies:
            names = copies_of(files, n, Path(tmp) / f"x{n}")
            cache = Path(tmp) / f"cache{n}"
            proc = subprocess.run([sys.executable, __file__, "--child", str(cache), args.vocab, *names],
                                  capture_output=True, text=True, check=True)
            run = {"copies": n, **json.loads(proc.stdout.strip().splitlines()[-1])}
            runs.append(run)
            print(f"{n}x: {run['megabytes']:.0f} MB, {run['tokens'] / 1e6:.1f} M tokens in "
                  f"{run['seconds']:.1f} s = {run['mb_per_s']:.2f} MB/s; peak RSS {run['peak_rss_mb']:.0f} MB "
                  f"({run['rss_after_imports_mb']:.0f} MB after imports)")
            shutil.rmtree(cache)
    result = {"date": date.today().isoformat(), "vocab": args.vocab, "threads": os.cpu_count(),
              "corpus": [str(f) for f in args.corpus], "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
