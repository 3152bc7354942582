"""Raw-text corpora for pretraining: documents -> token shards on disk -> packed sequences.

Documents. A corpus file is read as blocks of non-blank lines separated by blank lines; the
lines of a block are joined with spaces. That one rule reads both layouts of the usual
corpora: a Wikipedia dump with one paragraph per line and a blank line between articles (a
block is an article), and Project Gutenberg books hard-wrapped at ~70 characters with blank
lines between paragraphs (a block is a paragraph, its wrapped lines joined). WordPiece treats
every run of whitespace alike, so joining with a space loses nothing.

Shards. Every corpus file is tokenized once, in batched calls on the `tokenizers` library's
threads, and written as a flat stream of token ids with [SEP] after each document:
CACHE/<file stem>-<key>.tokens, raw little-endian uint16 (uint32 when the vocabulary has 65,536
tokens or more), plus a <key>.json beside it with its counts. The key hashes the file's
resolved path, size and modification time with the vocabulary (tokens and casing), so a changed
file or another vocabulary is tokenized again and everything else is reused. Documents are read
line by line and written batch by batch: peak memory does not grow with the corpus (one very
long block is cut into pieces of `DOC_PIECE_CHARS` at line ends, within the same document).

Packing (RoBERTa's FULL-SENTENCES, Liu et al. 2019, §4.2; Cramming, Geiping & Goldstein 2023):
sample i of length L is [CLS] + stream[i (L-2) : (i+1) (L-2)] + [SEP] over the concatenated
shards. Every sequence is full (no padding), a [SEP] separates documents inside it, and any
sample is read in O(1) from the memory-mapped shards, so a run resumes at any sample without
reading what came before, and the sequence length is chosen per run without tokenizing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from slimbert.errors import DataError
from slimbert.io import atomic_write_text
from slimbert.tokenizer import Tokenizer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of the shard files; part of the cache key
DOC_PIECE_CHARS = 1 << 20  # a longer block is tokenized in pieces, cut at line ends
BATCH_CHARS = 1 << 20  # characters handed to the tokenizer per batched call (bounds the memory)
_BOM = b"\xef\xbb\xbf"


# ------------------------------------------------------------------------- documents


def read_documents(path: str | Path, piece_chars: int = DOC_PIECE_CHARS) -> Iterator[tuple[str, bool, int]]:
    """The documents of a text file, as (text, ends_document, bytes read so far).

    A document is a block of non-blank lines; blank lines separate documents. A block longer
    than `piece_chars` comes in several pieces (cut at line ends), only the last with
    `ends_document`. Bytes that are not UTF-8 are a DataError naming the line."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a text file")
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    with f:
        parts: list[str] = []
        size = done = 0
        for lineno, raw in enumerate(f, start=1):
            done += len(raw)
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02X} at byte "
                                f"{e.start + 1} of the line); re-save it as UTF-8") from None
            if not line:
                if parts:
                    yield " ".join(parts), True, done
                    parts, size = [], 0
                continue
            parts.append(line)
            size += len(line)
            if size >= piece_chars:
                yield " ".join(parts), False, done
                parts, size = [], 0
        if parts:
            yield " ".join(parts), True, done


Document = tuple[str, bool, int]  # (text, ends_document, bytes read so far)


def _batches(documents: Iterator[Document], max_chars: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc[0])
        if chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


# ---------------------------------------------------------------------------- shards


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits in it, else uint32 (little-endian either way)."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def vocabulary_fingerprint(tokenizer: Tokenizer) -> str:
    """A hash of the tokens (in id order) and the casing options: what the ids of a text depend on."""
    h = hashlib.sha256()
    h.update("\n".join(sorted(tokenizer.vocab, key=tokenizer.vocab.__getitem__)).encode())
    casing = [tokenizer.lowercase, tokenizer.strip_accents, tokenizer.handle_chinese_chars]
    h.update(json.dumps(casing).encode())
    return h.hexdigest()


def shard_key(path: Path, vocabulary: str) -> str:
    """The cache key of a corpus file's shard: the file's identity and the vocabulary's hash."""
    st = path.stat()
    identity = json.dumps([FORMAT_VERSION, str(path.resolve()), st.st_size, st.st_mtime_ns, vocabulary])
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Shard:
    """One corpus file, tokenized: a flat stream of ids on disk."""

    path: Path  # the .tokens file
    source: str  # the corpus file it was made from
    tokens: int  # ids in the stream, the [SEP]s included
    documents: int
    bytes: int  # size of the corpus file
    seconds: float  # how long tokenizing it took (when it was made)


def tokenize_file(source: Path, tokenizer: Tokenizer, dest: Path, bar: tqdm | None = None) -> Shard:
    """Tokenize `source` into the shard file `dest` (written under a temporary name, then
    renamed), one batched tokenizer call per `BATCH_CHARS` of text."""
    dtype = token_dtype(len(tokenizer))
    sep = tokenizer.sep_id
    tokens = documents = done = 0
    in_document = False  # the current document has tokens (an empty one gets no [SEP])
    t0 = time.perf_counter()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for batch in _batches(read_documents(source), BATCH_CHARS):
                pieces: list[list[int]] = []
                for (_, ends, _), ids in zip(batch, tokenizer.encode_ids([text for text, _, _ in batch])):
                    pieces.append(ids)
                    in_document = in_document or bool(ids)
                    if ends and in_document:
                        pieces.append([sep])
                        documents += 1
                        in_document = False
                n = sum(map(len, pieces))
                out.write(np.fromiter(chain.from_iterable(pieces), dtype=dtype, count=n).tobytes())
                tokens += n
                if bar is not None:
                    bar.update(batch[-1][2] - done)
                done = batch[-1][2]
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Shard(dest, str(source), tokens, documents, source.stat().st_size, time.perf_counter() - t0)


def _read_meta(meta: Path) -> Shard | None:
    try:
        d = json.loads(meta.read_text(encoding="utf-8"))
        shard = Shard(meta.with_name(d["file"]), d["source"], int(d["tokens"]), int(d["documents"]),
                      int(d["bytes"]), float(d["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: made again
    itemsize = np.dtype(d.get("dtype", "<u2")).itemsize
    if not shard.path.exists() or shard.path.stat().st_size != shard.tokens * itemsize:
        return None
    return shard


def corpus_shards(paths: Sequence[str | Path], tokenizer: Tokenizer, cache_dir: str | Path,
                  progress: bool = True, build: bool = True) -> list[Shard]:
    """The shard of every corpus file, tokenizing those not in `cache_dir` yet (with a progress
    bar in bytes). With `build=False` a missing shard is an error (the other processes of a
    distributed run read what the first one made)."""
    cache = Path(cache_dir)
    files = [Path(p) for p in paths]
    for f in files:
        if f.is_dir():
            raise DataError(f"{f}: is a directory; give the text files in it (e.g. {f}/*.txt)")
        if not f.exists():
            raise DataError(f"{f}: file not found")
    vocabulary = vocabulary_fingerprint(tokenizer)
    keyed = [(f, shard_key(f, vocabulary)) for f in files]
    shards: dict[Path, Shard] = {}
    todo = []
    for f, key in keyed:
        shard = _read_meta(cache / f"{key}.json")
        if shard is not None:
            shards[f] = shard
        else:
            todo.append((f, key))
    if todo and not build:
        raise DataError(f"{todo[0][0]}: no token shard in {cache}; it is made by the first process")
    if todo:
        cache.mkdir(parents=True, exist_ok=True)
        total = sum(f.stat().st_size for f, _ in todo)
        with tqdm(total=total, unit="B", unit_scale=True, desc="tokenize", disable=not progress,
                  dynamic_ncols=True) as bar:
            for f, key in todo:
                shard = tokenize_file(f, tokenizer, cache / f"{f.stem}-{key}.tokens", bar)
                meta = {"file": shard.path.name, "source": shard.source, "tokens": shard.tokens,
                        "documents": shard.documents, "bytes": shard.bytes, "seconds": shard.seconds,
                        "dtype": token_dtype(len(tokenizer)).str, "vocabulary": vocabulary,
                        "format": FORMAT_VERSION}
                atomic_write_text(cache / f"{key}.json", json.dumps(meta, indent=1) + "\n")
                shards[f] = shard
        made = [shards[f] for f, _ in todo]
        seconds = sum(s.seconds for s in made)
        log.info("tokenized %d file(s), %.1f MB, in %.1f s (%.1f MB/s)", len(made), total / 1e6, seconds,
                 total / 1e6 / max(seconds, 1e-9))
    return [shards[f] for f in files]


# --------------------------------------------------------------------------- packing


class TokenCorpus:
    """The shards of a corpus as one memory-mapped stream, read as packed sequences."""

    def __init__(self, shards: Sequence[Shard], cls_id: int, sep_id: int, vocab_size: int):
        self.shards = list(shards)
        self.cls_id, self.sep_id = cls_id, sep_id
        dtype = token_dtype(vocab_size)
        kept = [s for s in self.shards if s.tokens]
        self._arrays = [np.memmap(s.path, dtype=dtype, mode="r", shape=(s.tokens,)) for s in kept]
        self._starts = np.cumsum([0] + [s.tokens for s in kept]).tolist()  # stream offset of each shard
        self.samples_read = 0  # sequences read so far (what a resumed run must not spend on skipped data)

    @classmethod
    def build(cls, paths: Sequence[str | Path], tokenizer: Tokenizer, cache_dir: str | Path,
              progress: bool = True, build: bool = True) -> TokenCorpus:
        shards = corpus_shards(paths, tokenizer, cache_dir, progress, build)
        return cls(shards, tokenizer.cls_id, tokenizer.sep_id, len(tokenizer))

    @property
    def num_tokens(self) -> int:
        return self._starts[-1]

    @property
    def num_documents(self) -> int:
        return sum(s.documents for s in self.shards)

    def num_samples(self, seq_length: int) -> int:
        """Full sequences of `seq_length` tokens (the last partial one is dropped, not padded)."""
        if seq_length < 3:
            raise ValueError(f"seq_length must be at least 3 ([CLS], a token, [SEP]), got {seq_length}")
        return self.num_tokens // (seq_length - 2)

    def _span(self, start: int, end: int) -> np.ndarray:
        """stream[start:end], across shard boundaries."""
        i = bisect_right(self._starts, start) - 1
        parts = []
        while start < end:
            offset = start - self._starts[i]
            take = min(end - start, len(self._arrays[i]) - offset)
            parts.append(self._arrays[i][offset:offset + take])
            start += take
            i += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def samples(self, indices: Sequence[int], seq_length: int) -> np.ndarray:
        """(B, L) int64: sample i is [CLS] + stream[i (L-2) : (i+1) (L-2)] + [SEP]."""
        body = seq_length - 2
        out = np.empty((len(indices), seq_length), dtype=np.int64)
        out[:, 0], out[:, -1] = self.cls_id, self.sep_id
        n = self.num_samples(seq_length)
        for row, i in enumerate(indices):
            i = int(i)
            if not 0 <= i < n:
                raise IndexError(f"sample {i} out of range: the corpus holds {n} sequences of {seq_length}")
            out[row, 1:-1] = self._span(i * body, (i + 1) * body)
        self.samples_read += len(indices)
        return out


def corpus_texts(paths: Sequence[str | Path]) -> Iterator[str]:
    """The documents of the corpus files, one after another, streamed (for vocabulary training)."""
    for path in paths:
        for text, _, _ in read_documents(path):
            yield text
