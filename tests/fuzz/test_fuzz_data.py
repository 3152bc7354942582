"""Fuzzing the data a user gives: training files (TSV, CSV, JSONL; encodings, field counts,
quoting, line endings, labels) through `slimbert finetune`, and `slimbert predict`'s input.

Each case is a valid file, or a valid file with one known fault in it. A valid file must train,
with exactly its rows and exactly its classes (nothing dropped, nothing merged, nothing made up);
a faulty one must stop with one line naming the file and, where the fault is on a line, that
line."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import LABELS, assert_clean_failure, cases, run_cli, tiny_checkpoints

pytestmark = pytest.mark.slow

WORDS = "the a movie film was good great bad awful fine plot actors boring fun not very it".split()
ODD = ["café", "naïve", "中文", "😀", ",", '"quoted"', "it's", "\\", ";", "a|b", "#1"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("models"))


# ------------------------------------------------------------------------------- training files


def texts(fmt: str):
    """A non-empty text; CSV and JSONL texts may hold newlines and tabs (quoted or escaped)."""
    words = st.sampled_from(WORDS + ODD)
    if fmt != "tsv":
        words = words | st.sampled_from(["new\nline", "tab\there", "\r\n"] if fmt == "jsonl" else
                                        ["new\nline", "two\n\nlines"])
    return st.lists(words, min_size=1, max_size=5).map(" ".join).filter(lambda t: t.strip())


# Class labels are names or integers. A name here may be any run of Unicode letters, including
# "nan" or "inf", which are names, not numbers.
NAMES = st.text(st.characters(categories=["L"]), min_size=1, max_size=6)
INTS = st.integers(-3, 10**12)

FAULTS = ["latin1", "fields", "duplicate_header", "empty_text", "nul_label", "decimal_label", "single_class",
          "two_spellings", "bool_label", "list_label", "float_label", "bad_json", "duplicate_key",
          "text_not_a_string", "directory", "missing"]


@dataclass
class DataCase:
    fmt: str
    header: bool
    text_col: str
    label_col: str
    classes: list  # str or int, distinct
    rows: list[tuple[str, int]]  # (text, class index)
    fault: str
    faulty_row: int  # the row the fault is put in
    bom: bool
    newline: str
    blank_after: set[int] = field(default_factory=set)  # rows followed by a blank line
    label_as_string: list[bool] = field(default_factory=list)  # JSONL: an int class written "3"
    label_padding: list[str] = field(default_factory=list)  # spaces around a label (stripped)

    def expected_mapping(self) -> dict[str, str]:
        """What the learned classes must be: sorted, numerically when every label is an integer."""
        labels = [str(c) for c in self.classes]
        if all(isinstance(c, int) for c in self.classes):
            labels = [str(c) for c in sorted(self.classes)]
        else:
            labels = sorted(labels)
        return {str(i): v for i, v in enumerate(labels)}


@st.composite
def data_cases(draw, fault: str) -> DataCase:
    """A file with `fault` in it ("none": a valid file)."""
    fmt = draw(st.sampled_from(["tsv", "csv", "jsonl"]))
    header = fmt == "jsonl" or draw(st.booleans())
    kinds = draw(st.sampled_from(["names", "ints", "mixed"]))
    label = {"names": NAMES, "ints": INTS, "mixed": NAMES | INTS}[kinds]
    classes = draw(st.lists(label, min_size=2, max_size=4, unique_by=str))
    if fault in ("bool_label", "list_label", "float_label", "bad_json", "duplicate_key", "text_not_a_string"):
        fmt, header = "jsonl", True
    if fault in ("fields", "duplicate_header"):  # faults of a header and its fields
        fmt, header = draw(st.sampled_from(["tsv", "csv"])), True
    if fault in ("decimal_label", "two_spellings") and not any(isinstance(c, int) for c in classes):
        classes[0] = draw(st.integers(0, 99))
    if fault == "latin1":  # the one non-ASCII text is the faulty row's
        text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
        classes = [c if isinstance(c, int) else f"c{i}" for i, c in enumerate(classes)]
    else:
        text = texts(fmt)
    n = draw(st.integers(len(classes), 12))
    order = [i % len(classes) for i in range(n)]  # every class at least once
    order = draw(st.permutations(order))
    rows = [(draw(text), k) for k in order]
    return DataCase(
        fmt=fmt, header=header,
        text_col=draw(st.sampled_from(["text", "sentence", "review"])) if header else "0",
        label_col=draw(st.sampled_from(["label", "y", "class"])) if header else "1",
        classes=classes, rows=rows, fault=fault, faulty_row=draw(st.integers(0, n - 1)),
        bom=draw(st.booleans()), newline=draw(st.sampled_from(["\n", "\r\n"])),
        blank_after=set(draw(st.lists(st.integers(0, n - 1), max_size=2))),
        label_as_string=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        label_padding=draw(st.lists(st.sampled_from(["", " ", "  "]), min_size=n, max_size=n)))


def render(case: DataCase) -> tuple[bytes, int]:
    """The file's bytes and the line on which the faulty row starts."""
    rows = list(case.rows)
    if case.fault == "single_class":
        rows = [(t, 0) for t, _ in rows]
    lines: list[str] = []  # each a record, which may span lines (CSV quoting)
    fault_line = 0

    def csv_line(fields: list[str]) -> str:
        buf = io.StringIO()
        csv.writer(buf).writerow(fields)  # its "\r\n" makes it quote fields that hold a line break
        return buf.getvalue()[:-2]

    if case.header and case.fmt != "jsonl":
        names = [case.text_col, case.label_col, "id"]
        if case.fault == "duplicate_header":
            names[2] = case.label_col
        lines.append("\t".join(names) if case.fmt == "tsv" else csv_line(names))
    if case.fault == "two_spellings":  # an extra row: one of the integer classes, written another way
        c = next(x for x in case.classes if isinstance(x, int))
        rows.insert(case.faulty_row, (rows[case.faulty_row][0], case.classes.index(c)))
    for r, (text, k) in enumerate(rows):
        c = case.classes[k]
        label: object = c
        if r == case.faulty_row:
            fault = case.fault
            if fault == "latin1":
                text = "café " + text
            elif fault == "empty_text":
                text = "   "
            elif fault == "nul_label":
                label = f"{c}\x00"
            elif fault == "decimal_label":
                c = next(x for x in case.classes if isinstance(x, int))
                label = f"{c}.0"
            elif fault == "two_spellings":
                label = f"+{c}" if c >= 0 else f"-0{-c}"
            elif fault == "bool_label":
                label = True
            elif fault == "list_label":
                label = [c]
            elif fault == "float_label":
                label = 1.5
            elif fault == "text_not_a_string":
                text = [text]  # type: ignore[assignment]
        if isinstance(label, (int, str)) and not isinstance(label, bool):
            i = r % len(case.label_padding)  # (two_spellings adds a row)
            if case.fmt != "jsonl" or isinstance(label, str) or case.label_as_string[i]:
                label = case.label_padding[i] + str(label) + case.label_padding[i]
        if case.fmt == "jsonl":
            obj = {case.text_col: text, case.label_col: label, "id": r}
            line = json.dumps(obj, ensure_ascii=r % 2 == 0 and case.fault != "latin1")
            if r == case.faulty_row and case.fault == "bad_json":
                line = line[:-1]
            if r == case.faulty_row and case.fault == "duplicate_key":
                line = line[:-1] + f", {json.dumps(case.label_col)}: {json.dumps(label)}}}"
        else:
            fields = [text, str(label), str(r)]
            if r == case.faulty_row and case.fault == "fields":
                fields.append("extra")
            line = "\t".join(fields) if case.fmt == "tsv" else csv_line(fields)
        if r == case.faulty_row:
            fault_line = 1 + sum(x.count("\n") + 1 for x in lines)
        lines.append(line)
        if r in case.blank_after:
            lines.append("")
    text = "\n".join(lines) + "\n"
    if case.newline == "\r\n":  # only the line breaks between records: CSV keeps quoted ones as they are
        text = "\r\n".join(lines) + "\r\n"
    data = text.encode("latin-1" if case.fault == "latin1" else "utf-8")
    if case.bom and case.fault != "latin1":
        data = b"\xef\xbb\xbf" + data
    return data, fault_line


def expected_error(case: DataCase, path: Path, fault_line: int) -> tuple[str, ...]:
    """What the one error line must contain (any one of)."""
    at_line = f"{path}:{fault_line}:"
    return {
        "latin1": (f"{at_line} not UTF-8",),
        "fields": (f"{at_line} 4 fields",),
        "duplicate_header": (f"{path}:1: column '{case.label_col}' appears twice",),
        "empty_text": (f"{at_line} empty text",),
        "nul_label": (at_line,),
        "decimal_label": (at_line,),
        "single_class": (f"{path}: every label in column '{case.label_col}'",),
        "two_spellings": (f"{path}: label column '{case.label_col}' writes one class two ways",),
        "bool_label": (at_line,),
        "list_label": (at_line,),
        "float_label": (at_line,),
        "bad_json": (f"{at_line} invalid JSON",),
        "duplicate_key": (f"{at_line} key",),
        "text_not_a_string": (at_line,),
        "directory": (f"{path}: is a directory",),
        "missing": (f"{path}: file not found",),
    }[case.fault]


@settings(max_examples=cases("data_files_valid"))
@given(case=data_cases("none"))
def test_a_valid_training_file_trains_exactly_its_rows_and_classes(models, case):
    train_on(models, case)


@pytest.mark.parametrize("fault", FAULTS)
@settings(max_examples=cases("data_files_per_fault"))
@given(data=st.data())
def test_a_faulty_training_file_is_refused_naming_the_line(models, fault, data):
    train_on(models, data.draw(data_cases(fault)))


def train_on(models, case: DataCase) -> None:
    """Fine-tune on the file of `case`: it trains exactly its rows and classes, or its fault is
    refused in one line naming the file (and the line)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / f"train.{case.fmt}"
        data, fault_line = render(case)
        if case.fault == "directory":
            path.mkdir()
        elif case.fault != "missing":
            path.write_bytes(data)
        argv = ["finetune", "--model", models["encoder"], "--train-file", path, "--out", tmp / "out",
                "--text-col", case.text_col, "--label-col", case.label_col, "--max-steps", "1",
                "--batch-size", "8", "--no-progress"]
        if not case.header:
            argv.append("--no-header")
        outcome = run_cli(argv)
        if case.fault != "none":
            assert_clean_failure(outcome, *expected_error(case, path, fault_line))
            return
        assert outcome.code == 0, "a valid file was refused\n" + outcome.describe() + f"\nfile: {data!r}"
        mapping = case.expected_mapping()
        config = json.loads((tmp / "out" / "config.json").read_text())
        results = json.loads((tmp / "out" / "results.json").read_text())
        assert config["id2label"] == mapping, data
        assert results["labels"] == mapping and results["train_examples"] == len(case.rows), data
        shown = ", ".join(f"{i} = {v}" for i, v in mapping.items())
        assert f"labels {shown}" in outcome.out


# ------------------------------------------------------------------------------ predict's input

LINE_KINDS = ["text", "text", "pair", "empty", "blank", "three_fields", "half_pair", "latin1"]


@st.composite
def predict_inputs(draw) -> tuple[list[str], str, str, bool, bool]:
    """(line kinds, line ending, output format, whether the input comes as a file, whether the
    last line ends without a line break)."""
    allowed = draw(st.sampled_from([["text", "empty", "blank"], ["pair", "empty"], LINE_KINDS]))
    kinds = draw(st.lists(st.sampled_from(allowed), max_size=8))
    return (kinds, draw(st.sampled_from(["\n", "\r\n"])), draw(st.sampled_from(["tsv", "jsonl"])),
            draw(st.booleans()), draw(st.booleans()))


def predict_line(kind: str, i: int) -> bytes:
    words = WORDS[i % len(WORDS)] + " " + WORDS[(3 * i + 1) % len(WORDS)]
    return {"text": words.encode(), "pair": f"{words}\t{WORDS[i % 5]}".encode(), "empty": b"",
            "blank": b"  \t ", "three_fields": b"a\tb\tc", "half_pair": f"\t{words}".encode(),
            "latin1": "caf\xe9 au lait".encode("latin-1")}[kind]


def predict_error(kinds: list[str]) -> tuple[int, str] | None:
    """The line predict must refuse, and what the error says, or None when it must answer."""
    for i, kind in enumerate(kinds, start=1):
        if kind == "latin1":  # read before anything else is looked at
            return i, "not UTF-8"
    first = None
    for i, kind in enumerate(kinds, start=1):
        if kind == "three_fields":
            return i, "3 tab-separated fields"
        if kind == "half_pair":
            return i, "empty text"
        if kind in ("text", "pair"):
            if first is None:
                first = kind
            elif kind != first:
                return i, "give one kind of input per run"
    return None


@settings(max_examples=cases("predict_input"))
@given(case=predict_inputs())
def test_predict_answers_every_input_line_in_order_or_names_the_true_line(models, case):
    kinds, newline, fmt, as_file, unterminated = case
    data = b"".join(predict_line(k, i) + newline.encode() for i, k in enumerate(kinds))
    if unterminated and kinds and kinds[-1] != "empty":
        data = data[:-len(newline)]
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["predict", "--model", models["classifier"], "--format", fmt]
        if as_file:
            source = Path(tmp) / "input.txt"
            source.write_bytes(data)
            outcome = run_cli([*argv, source])
        else:
            source = "stdin"
            outcome = run_cli(argv, stdin=data)
    error = predict_error(kinds)
    if error is not None:
        line, what = error
        message = assert_clean_failure(outcome, f"{source}:{line}:")
        assert what in message, outcome.describe()
        return
    assert outcome.code == 0, outcome.describe()
    out = outcome.out.splitlines()
    assert len(out) == len(kinds), outcome.describe()  # one answer per input line
    for i, (kind, answer) in enumerate(zip(kinds, out), start=1):
        if fmt == "jsonl":
            record = json.loads(answer)
            assert record["line"] == i
            assert record.get("empty", False) == (kind in ("empty", "blank"))
            if kind not in ("empty", "blank"):
                assert record["label"] in LABELS.values()
        elif kind in ("empty", "blank"):
            assert answer == "\t\t"  # an empty label and empty probabilities
        else:
            label, *probs = answer.split("\t")
            assert label in LABELS.values() and len(probs) == 2
