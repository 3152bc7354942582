"""Reading labelled text from TSV, CSV and JSONL files.

Every problem is reported with the file and line number (or, with `skip_bad_rows`, skipped
and counted), so that no row is lost silently.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from slimbert.errors import DataError

Column = str | int  # a header name, or a 0-based index for files without a header


@dataclass
class Example:
    text: str
    text_pair: str | None = None
    label: int | float | None = None  # class index, regression target, or None (unlabelled)


@dataclass
class LabelSpec:
    """How raw label strings become targets.

    values:     the raw strings in class-index order (fixed, e.g. GLUE's), or None to learn them
    regression: targets are floats (STS-B)
    """

    values: tuple[str, ...] | None = None
    regression: bool = False


@dataclass
class ReadStats:
    rows: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.kept} rows"
        reasons = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common())
        return f"{self.kept} of {self.rows} rows kept; skipped: {reasons}"


@dataclass
class Table:
    examples: list[Example]
    label_values: tuple[str, ...] | None  # raw label strings in index order (None: regression)
    stats: ReadStats
    path: Path


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise DataError(f"{path}: unknown file type '{suffix}' (expected .tsv, .csv or .jsonl)")


def _rows(path: Path, fmt: str, has_header: bool):
    """Yield (line number, row) where row is a dict (header/JSONL) or a list (no header)."""
    try:
        f = path.open(encoding="utf-8-sig", newline="")  # -sig: MRPC (like Excel exports) has a BOM
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with f:
        if fmt == "jsonl":
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, DataError(f"{path}:{lineno}: invalid JSON ({e.msg})")
                    continue
                if not isinstance(row, dict):
                    yield lineno, DataError(f"{path}:{lineno}: expected a JSON object per line")
                    continue
                yield lineno, row
            return
        # GLUE's TSVs contain stray quote characters, so TSV is read with quoting disabled.
        reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv"
                  else csv.reader(f))
        header = None
        try:
            for row in reader:
                lineno = reader.line_num
                if header is None and has_header:
                    header = row
                    continue
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if header is not None:
                    if len(row) != len(header):
                        yield lineno, DataError(f"{path}:{lineno}: {len(row)} fields, the header has "
                                                f"{len(header)}")
                        continue
                    yield lineno, dict(zip(header, row))
                else:
                    yield lineno, row
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from None


def _get(row, col: Column, path: Path, lineno: int, what: str) -> str:
    try:
        value = row[col]
    except (KeyError, IndexError):
        if isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: no column '{col}' ({what}); columns are "
                            f"{list(row)}") from None
        raise DataError(f"{path}:{lineno}: no column {col} ({what}); the row has {len(row)} fields") from None
    return "" if value is None else str(value)


def read_table(path: str | Path, text_col: Column, text_pair_col: Column | None = None,
               label_col: Column | None = None, labels: LabelSpec | None = None,
               has_header: bool = True, skip_bad_rows: bool = False,
               max_examples: int | None = None) -> Table:
    """Read a TSV/CSV/JSONL file of (text, [text pair], [label]) rows.

    With `labels.values` None and a label column, the label set is learned from the file
    (sorted; numerically when every label is a number) and returned in `Table.label_values`.
    """
    path = Path(path)
    fmt = file_format(path)
    labels = labels or LabelSpec()
    if fmt == "jsonl":
        has_header = True
    stats = ReadStats()
    raw: list[tuple[int, str, str | None, str | None]] = []

    def bad(err: DataError, reason: str) -> None:
        if not skip_bad_rows:
            raise err
        stats.skipped[reason] += 1

    for lineno, row in _rows(path, fmt, has_header):
        stats.rows += 1
        if isinstance(row, DataError):
            bad(row, "malformed rows")
            continue
        text = _get(row, text_col, path, lineno, "text")
        pair = _get(row, text_pair_col, path, lineno, "text pair") if text_pair_col is not None else None
        label = _get(row, label_col, path, lineno, "label").strip() if label_col is not None else None
        if not text.strip() or (pair is not None and not pair.strip()):
            bad(DataError(f"{path}:{lineno}: empty text"), "empty texts")
            continue
        if label is not None and label == "":
            bad(DataError(f"{path}:{lineno}: empty label"), "empty labels")
            continue
        raw.append((lineno, text, pair, label))
        if max_examples is not None and len(raw) >= max_examples:
            break

    values = labels.values
    if label_col is not None and not labels.regression and values is None:
        values = _learn_label_values(r[3] for r in raw)
    index = {v: i for i, v in enumerate(values)} if values is not None else {}
    examples = []
    for lineno, text, pair, label in raw:
        target: int | float | None = None
        if label is not None:
            if labels.regression:
                try:
                    target = float(label)
                except ValueError:
                    target = math.nan
                if not math.isfinite(target):
                    bad(DataError(f"{path}:{lineno}: label '{label}' is not a number"), "bad labels")
                    continue
            elif label not in index:
                bad(DataError(f"{path}:{lineno}: unknown label '{label}'; expected one of "
                              f"{list(values)}"), "unknown labels")
                continue
            else:
                target = index[label]
        examples.append(Example(text, pair, target))
    stats.kept = len(examples)
    if not examples:
        raise DataError(f"{path}: no usable rows ({stats.summary()})")
    return Table(examples, None if labels.regression else values, stats, path)


def _learn_label_values(labels) -> tuple[str, ...]:
    distinct = set(labels)
    try:
        return tuple(sorted(distinct, key=float))
    except ValueError:
        return tuple(sorted(distinct))


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a plain-text file (for predict and corpora)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
