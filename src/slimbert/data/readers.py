"""Reading labelled text from TSV, CSV and JSONL files.

Every problem is reported with the file and line number (or, with `skip_bad_rows`, skipped
and counted), so that no row is lost silently.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
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


def open_text(path: str | Path, newline: str | None = ""):
    """`path` opened for reading as UTF-8 (a BOM is dropped: MRPC, like Excel exports, has one).

    Bytes that are not UTF-8 are kept as surrogates, so that `checked_lines` can name the line
    that holds them; anything that is not a readable file is a DataError naming it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a file")
    try:
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline=newline)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def checked_lines(lines: Iterable[str], name: str | Path) -> Iterator[str]:
    """The lines of a text stream read with errors="surrogateescape"; a line that held bytes that
    are not UTF-8 is a DataError naming `name`, the line and the fix."""
    for lineno, line in enumerate(lines, start=1):
        bad = _NOT_UTF8.search(line)
        if bad is not None:
            byte = ord(bad.group()) - 0xDC00
            raise DataError(f"{name}:{lineno}: not UTF-8 text (byte 0x{byte:02X} at character "
                            f"{bad.start() + 1}); re-save it as UTF-8")
        yield line


class _BadValue(DataError):
    """A value of the wrong kind in one row: skipped and counted with `skip_bad_rows`."""


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json `object_pairs_hook`: a key given twice is an error, not the last one silently."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _rows(path: Path, fmt: str, has_header: bool):
    """Yield (line number, row) where row is a dict (header/JSONL) or a list (no header)."""
    with open_text(path) as f:
        lines = checked_lines(f, path)
        if fmt == "jsonl":
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, object_pairs_hook=_unique_keys)
                except json.JSONDecodeError as e:
                    yield lineno, DataError(f"{path}:{lineno}: invalid JSON ({e.msg})")
                    continue
                except _DuplicateKey as e:
                    yield lineno, DataError(f"{path}:{lineno}: key '{e}' appears twice in the object")
                    continue
                if not isinstance(row, dict):
                    yield lineno, DataError(f"{path}:{lineno}: expected a JSON object per line")
                    continue
                yield lineno, row
            return
        # GLUE's TSVs contain stray quote characters, so TSV is read with quoting disabled.
        reader = (csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv"
                  else csv.reader(lines))
        header = None
        end = 0  # the last line of the previous record: a quoted field may span lines
        try:
            for row in reader:
                lineno, end = end + 1, reader.line_num  # errors name the record's first line
                if header is None and has_header:
                    header = row
                    _check_header(header, path, lineno)
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


def _check_header(header: list[str], path: Path, lineno: int) -> None:
    """A column named twice would silently read the last one: refuse it. (Unnamed columns, as
    trailing separators make, cannot be asked for by name.)"""
    first: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name.strip() and name in first:
            raise DataError(f"{path}:{lineno}: column '{name}' appears twice in the header (fields "
                            f"{first[name]} and {i}); rename one")
        first[name] = i


def _value(row, col: Column, path: Path, lineno: int, what: str):
    try:
        return row[col]
    except (KeyError, IndexError):
        if isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: no column '{col}' ({what}); columns are "
                            f"{list(row)}") from None
        raise DataError(f"{path}:{lineno}: no column {col} ({what}); the row has {len(row)} fields") from None


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _text(row, col: Column, path: Path, lineno: int, what: str) -> str:
    """The text in column `col`: a string (JSON values of other types are refused)."""
    value = _value(row, col, path, lineno, what)
    if not isinstance(value, str):
        raise _BadValue(f"{path}:{lineno}: {what} '{col}' holds {_type_name(value)}; expected a string")
    return value


# A number written with a decimal point or an exponent: a target to regress, not a class.
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(?=[eE]))([eE][+-]?\d+)?", re.ASCII)
# A label that is a number ("nan" and "inf" are names here, as are digits of other scripts).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


def _as_number(label: str) -> int | float:
    """The value of a label that `_NUMBER` matches (integers exactly, however long)."""
    if _INTEGER.fullmatch(label):
        try:
            return int(label)
        except ValueError:  # longer than Python converts
            pass
    return float(label)
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _label(row, col: Column, path: Path, lineno: int, regression: bool,
           known: tuple[str, ...] | None = None) -> str:
    """The label in column `col` as a string: class labels are strings or integers, regression
    targets numbers. Anything else (a boolean, a list, a decimal class, a control character)
    would make a class nobody meant, so it is an error."""
    value = _value(row, col, path, lineno, "label")
    where = f"{path}:{lineno}: label column '{col}'"
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _BadValue(f"{where} holds {_type_name(value)} ({json.dumps(value)[:40]}); labels are "
                        + ("numbers (--regression)" if regression else "strings or integers"))
    if isinstance(value, float):
        if regression:
            return repr(value)
        raise _BadValue(f"{where} holds the decimal number {value!r}; class labels are strings or integers "
                        "(for numeric targets, give --regression)")
    label = str(value).strip()
    bad = _CONTROL.search(label)
    if bad is not None:
        raise _BadValue(f"{where} holds {label!r}, with the control character U+{ord(bad.group()):04X}; "
                        "remove it")
    if not regression and _DECIMAL.fullmatch(label) and label not in (known or ()):
        raise _BadValue(f"{where} holds the decimal number '{label}'; class labels are strings or "
                        "integers (write it as an integer, or for numeric targets give --regression)")
    return label


def read_table(path: str | Path, text_col: Column, text_pair_col: Column | None = None,
               label_col: Column | None = None, labels: LabelSpec | None = None,
               has_header: bool = True, skip_bad_rows: bool = False,
               max_examples: int | None = None) -> Table:
    """Read a TSV/CSV/JSONL file of (text, [text pair], [label]) rows.

    With `labels.values` None and a label column, the label set is learned from the file
    (sorted; numerically when every label is a number) and returned in `Table.label_values`.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a .tsv, .csv or .jsonl file")
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
        try:
            text = _text(row, text_col, path, lineno, "text column")
            pair = (_text(row, text_pair_col, path, lineno, "text pair column")
                    if text_pair_col is not None else None)
        except _BadValue as e:
            bad(e, "malformed rows")
            continue
        try:
            label = (_label(row, label_col, path, lineno, labels.regression, labels.values)
                     if label_col is not None else None)
        except _BadValue as e:
            bad(e, "bad labels")
            continue
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
        values = _learn_label_values([(r[0], r[3]) for r in raw], path, label_col)
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
                    bad(DataError(f"{path}:{lineno}: label '{label}' is not a number (with --regression, "
                                  "labels are numbers to regress)"), "bad labels")
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


def _learn_label_values(labels: list[tuple[int, str]], path: Path, col: Column) -> tuple[str, ...]:
    """The distinct labels of (line, label) pairs, sorted (numerically when all are numbers).
    One number written two ways ('1' and '01') would be two classes: that is an error."""
    first_line: dict[str, int] = {}
    for lineno, label in labels:
        first_line.setdefault(label, lineno)
    spelled: dict[float, str] = {}
    for label, lineno in first_line.items():
        if not _NUMBER.fullmatch(label):
            continue
        number = _as_number(label)
        if number in spelled:
            other = spelled[number]
            raise DataError(f"{path}: label column '{col}' writes one class two ways: '{other}' (line "
                            f"{first_line[other]}) and '{label}' (line {lineno}); write each class one way")
        spelled[number] = label
    if len(spelled) == len(first_line):
        return tuple(sorted(first_line, key=_as_number))
    return tuple(sorted(first_line))


def read_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a plain-text file (a corpus)."""
    with open_text(path, newline=None) as f:
        return [line.rstrip("\n") for line in checked_lines(f, path) if line.strip()]


def numbered_lines(stream: Iterable[str], name: str | Path) -> list[str]:
    """Every line of a text stream, empty ones included, so that line i of the result is line
    i + 1 of the input (predict answers each line)."""
    return [line.rstrip("\n") for line in checked_lines(stream, name)]


def text_lines(path: str | Path) -> list[str]:
    """Every line of a plain-text file, empty ones included (see `numbered_lines`)."""
    with open_text(path, newline=None) as f:
        return numbered_lines(f, path)
