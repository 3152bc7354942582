"""GLUE and user-file loading, error reporting, batching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimbert import DataError
from slimbert.data.batching import (collate, encode_examples, length_bucketed_batches, padding_tokens,
                                    random_batches)
from slimbert.data.readers import Example, LabelSpec, read_lines, read_table
from slimbert.data.sources import FileColumns, load_task_data
from slimbert.data.tasks import get_task, load_task, table_from_records
from slimbert.evaluation.metrics import compute_metrics

# (task, split, rows, count of class 0) as documented in shared/data/PROVENANCE.md
GLUE_COUNTS = [("sst2", "train", 67349, 29780), ("sst2", "dev", 872, 428), ("mrpc", "train", 3668, 1194),
               ("mrpc", "dev", 408, 129), ("cola", "train", 8551, 2528), ("cola", "dev", 1043, 322),
               ("rte", "train", 2490, 1249), ("rte", "dev", 277, 146), ("qnli", "dev", 5463, 2702),
               ("stsb", "train", 5749, None), ("stsb", "dev", 1500, None)]


@pytest.mark.parametrize("task,split,rows,zeros", GLUE_COUNTS)
def test_glue_files_load_completely(glue_dir, task, split, rows, zeros):
    table = load_task(task, split, glue_dir)
    assert len(table.examples) == rows and not table.stats.skipped
    labels = [e.label for e in table.examples]
    if zeros is None:
        assert all(0.0 <= x <= 5.0 for x in labels)
    else:
        assert labels.count(0) == zeros
    pair = get_task(task).text_pair_col is not None
    assert all((e.text_pair is not None) == pair and e.text.strip() for e in table.examples)


def test_mrpc_bom_does_not_break_the_header(glue_dir):
    first = load_task("mrpc", "train", glue_dir).examples[0]
    assert first.text.startswith("Amrozi accused his brother") and first.label == 1


def test_missing_split_names_the_file(glue_dir):
    with pytest.raises(DataError, match=r"qnli/train\.tsv: file not found"):
        load_task("qnli", "train", glue_dir)


def test_unknown_task():
    with pytest.raises(DataError, match="unknown task 'sst3'"):
        get_task("sst3")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_string_labels_learns_the_mapping(tmp_path):
    train = write(tmp_path / "train.csv", 'review,sentiment\n"great, really",pos\nawful,neg\nfine,pos\n')
    dev = write(tmp_path / "dev.csv", "review,sentiment\nbad,neg\n")
    data = load_task_data(train_file=train, dev_file=dev, columns=FileColumns("review", None, "sentiment"))
    assert data.id2label == {0: "neg", 1: "pos"}
    assert [e.label for e in data.train.examples] == [1, 0, 1]
    assert data.train.examples[0].text == "great, really"
    assert data.dev.examples[0].label == 0 and data.metrics == ("accuracy", "f1")


def test_jsonl_pairs_and_regression(tmp_path):
    rows = [{"a": "x y", "b": "y z", "score": 3.5}, {"a": "p", "b": "q", "score": "1"}]
    f = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    table = read_table(f, "a", "b", "score", LabelSpec(regression=True))
    assert [(e.text, e.text_pair, e.label) for e in table.examples] == [("x y", "y z", 3.5), ("p", "q", 1.0)]


@pytest.mark.parametrize("content,message", [
    ("text\tlabel\nhello\t1\nbroken row\n", r"d\.tsv:3: 1 fields, the header has 2"),
    ("text\tlabel\n \t1\n", r"d\.tsv:2: empty text"),
    ("sentence\tlabel\nhello\t1\n", r"d\.tsv:2: no column 'text'"),
    ("text\tlabel\nhello\tmaybe\n", r"d\.tsv:2: unknown label 'maybe'"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, message):
    f = write(tmp_path / "d.tsv", content)
    with pytest.raises(DataError, match=message):
        read_table(f, "text", None, "label", LabelSpec(("0", "1")))


def test_skip_bad_rows_counts_what_it_skips(tmp_path):
    f = write(tmp_path / "d.tsv", "text\tlabel\ngood\t1\nbroken\n\t0\nok\t7\nfine\t0\n")
    table = read_table(f, "text", None, "label", LabelSpec(("0", "1")), skip_bad_rows=True)
    assert [e.text for e in table.examples] == ["good", "fine"]
    assert table.stats.rows == 5 and dict(table.stats.skipped) == {
        "malformed rows": 1, "empty texts": 1, "unknown labels": 1}
    assert "2 of 5 rows kept" in table.stats.summary()


def test_bad_json_line(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        read_table(f, "text", None, "label")


def test_dev_label_outside_the_training_labels(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,x\nb,y\n")
    dev = write(tmp_path / "d.csv", "text,label\nc,z\n")
    with pytest.raises(DataError, match=r"d\.csv:2: unknown label 'z'; expected one of \['x', 'y'\]"):
        load_task_data(train_file=train, dev_file=dev)


@pytest.mark.parametrize("name", ["d.tsv", "d.csv", "d.jsonl"])
def test_a_file_that_is_not_utf8_names_the_line_and_the_fix(tmp_path, name):
    rows = {"d.tsv": "text\tlabel\nfine\tx\ncaf\xe9\ty\n", "d.csv": "text,label\nfine,x\ncaf\xe9,y\n",
            "d.jsonl": '{"text": "fine", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n'}[name]
    f = tmp_path / name
    f.write_bytes(rows.encode("latin-1"))
    line, column = (2, 14) if name == "d.jsonl" else (3, 4)
    message = rf"{name}:{line}: not UTF-8 text \(byte 0xE9 at character {column}\); re-save it as UTF-8"
    with pytest.raises(DataError, match=message):
        read_table(f, "text", None, "label")


def test_a_directory_given_as_a_file(tmp_path):
    (tmp_path / "data.tsv").mkdir()
    with pytest.raises(DataError, match=r"data\.tsv: is a directory; give a \.tsv, \.csv or \.jsonl file"):
        load_task_data(train_file=tmp_path / "data.tsv")
    with pytest.raises(DataError, match="is a directory"):
        read_lines(tmp_path / "data.tsv")


@pytest.mark.parametrize("content,message", [
    ('{"text": "a", "label": true}\n', r"d\.jsonl:1: label column 'label' holds a boolean \(true\)"),
    ('{"text": "a", "label": ["x"]}\n', r"d\.jsonl:1: label column 'label' holds a list"),
    ('{"text": "a", "label": {"x": 1}}\n', r"d\.jsonl:1: label column 'label' holds an object"),
    ('{"text": "a", "label": 0}\n{"text": "b", "label": 0.0}\n',
     r"d\.jsonl:2: label column 'label' holds the decimal number 0\.0; .*--regression"),
    ('{"text": "a", "label": "x\\u0000"}\n', r"d\.jsonl:1: label column 'label' holds 'x\\x00', with the "
                                            r"control character U\+0000"),
    ('{"text": ["a"], "label": "x"}\n', r"d\.jsonl:1: text column 'text' holds a list; expected a string"),
    ('{"text": "a", "label": "x", "label": "y"}\n', r"d\.jsonl:1: key 'label' appears twice"),
])
def test_jsonl_labels_are_strings_or_integers(tmp_path, content, message):
    f = write(tmp_path / "d.jsonl", content)
    with pytest.raises(DataError, match=message):
        read_table(f, "text", None, "label")


@pytest.mark.parametrize("content,message", [
    ("text\tlabel\na\tx\x00\nb\tx\n", r"d\.tsv:2: label column 'label' holds 'x\\x00'"),
    ("text\tlabel\na\t0\nb\t0.0\n", r"d\.tsv:3: label column 'label' holds the decimal number '0\.0'"),
    ("text\tlabel\na\t1\nb\t01\nc\t0\n", r"d\.tsv: label column 'label' writes one class two ways: '1' "
                                        r"\(line 2\) and '01' \(line 3\)"),
    ("text\tlabel\tlabel\na\tx\ty\n",
     r"d\.tsv:1: column 'label' appears twice in the header \(fields 2 and 3\)"),
])
def test_labels_that_would_make_classes_nobody_meant_are_refused(tmp_path, content, message):
    f = write(tmp_path / "d.tsv", content)
    with pytest.raises(DataError, match=message):
        read_table(f, "text", None, "label")


def test_integer_labels_are_one_class_however_they_come_and_sort_as_numbers(tmp_path):
    rows = ['{"t": "a", "y": 10}', '{"t": "b", "y": "10"}', '{"t": "c", "y": " 9 "}', '{"t": "d", "y": -1}']
    table = read_table(write(tmp_path / "d.jsonl", "\n".join(rows) + "\n"), "t", None, "y")
    assert table.label_values == ("-1", "9", "10") and [e.label for e in table.examples] == [2, 2, 1, 0]
    names = read_table(write(tmp_path / "n.tsv", "t\ty\na\tnan\nb\tinf\nc\t2\n"), "t", None, "y")
    assert names.label_values == ("2", "inf", "nan")  # words, even when float() would read them


def test_bad_labels_are_skipped_and_counted_with_skip_bad_rows(tmp_path):
    rows = ['{"text": "a", "label": "x"}', '{"text": "b", "label": true}', '{"text": "c", "label": "y"}',
            '{"text": 5, "label": "y"}']
    table = read_table(write(tmp_path / "d.jsonl", "\n".join(rows) + "\n"), "text", None, "label",
                       skip_bad_rows=True)
    assert table.label_values == ("x", "y") and dict(table.stats.skipped) == {"bad labels": 1,
                                                                             "malformed rows": 1}


def test_a_training_file_of_one_class_is_refused_naming_the_column_and_class(tmp_path):
    train = write(tmp_path / "t.csv", "review,sentiment\ngood,pos\ngreat,pos\n")
    message = (r"t\.csv: every label in column 'sentiment' is 'pos'; a classifier needs two classes or more "
               r"\(for numeric targets, give --regression\)")
    with pytest.raises(DataError, match=message):
        load_task_data(train_file=train, columns=FileColumns("review", None, "sentiment"))
    regression = write(tmp_path / "r.csv", "review,sentiment\ngood,1\ngreat,1\n")
    data = load_task_data(train_file=regression, columns=FileColumns("review", None, "sentiment"),
                          regression=True)
    assert data.num_labels == 1 and data.label_mapping() == "regression"


def test_a_quoted_field_over_several_lines_is_reported_at_its_first_line(tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\n"one\ntwo\nthree",x,extra\nok,y\n')
    with pytest.raises(DataError, match=r"d\.csv:2: 3 fields"):
        read_table(f, "text", None, "label")


def test_hub_records_become_examples(monkeypatch):
    datasets = pytest.importorskip("datasets")
    records = datasets.Dataset.from_dict({"sentence1": ["a b", "c"], "sentence2": ["d", "e f"],
                                          "label": [1, 0], "idx": [0, 1]})
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return records

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    table = load_task("rte", "dev")  # no data_dir: the hub path
    assert calls == [("nyu-mll/glue", "rte", "validation")]
    assert [(e.text, e.text_pair, e.label) for e in table.examples] == [("a b", "d", 1), ("c", "e f", 0)]
    unlabeled = datasets.Dataset.from_dict({"sentence": ["x"], "label": [-1]})
    with pytest.raises(DataError, match="outside 0..1"):
        table_from_records(get_task("sst2"), unlabeled, "hub:test")


def test_length_bucketing_halves_padding_on_sst2_train(glue_dir, minilm_dir):
    from slimbert import load_tokenizer

    examples = load_task("sst2", "train", glue_dir).examples
    lengths = encode_examples(examples, load_tokenizer(minilm_dir), 128).lengths
    bucketed = length_bucketed_batches(lengths, 32, seed=0, epoch=0)
    shuffled = random_batches(len(lengths), 32, seed=0)
    assert sorted(i for b in bucketed for i in b) == list(range(len(lengths)))
    assert padding_tokens(lengths, bucketed) <= 0.5 * padding_tokens(lengths, shuffled)


def test_batches_depend_only_on_seed_and_epoch_and_shard_across_processes():
    lengths = list(np.random.default_rng(0).integers(3, 60, size=1000))
    a = length_bucketed_batches(lengths, 16, seed=1, epoch=2)
    assert a == length_bucketed_batches(lengths, 16, seed=1, epoch=2)
    assert a != length_bucketed_batches(lengths, 16, seed=1, epoch=3)
    shards = [length_bucketed_batches(lengths, 16, seed=1, epoch=2, num_replicas=3, rank=r) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))


def test_collate_pads_to_the_longest_in_the_batch(tiny_tokenizer):
    data = encode_examples([Example("good movie", None, 1), Example("the plot was very boring", None, 0)],
                           tiny_tokenizer, 64)
    batch = collate(data, [0, 1], tiny_tokenizer.pad_id)
    assert batch["input_ids"].shape == (2, 7)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    assert batch["input_ids"][0, 4:].tolist() == [tiny_tokenizer.pad_id] * 3
    assert batch["labels"].tolist() == [1, 0]


def test_metrics_against_hand_computations():
    logits = np.array([[2.0, 1.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # predictions 0, 1, 1, 0
    labels = np.array([0, 1, 0, 1])
    m = compute_metrics(("accuracy", "f1", "matthews_corr"), logits, labels)
    # tp=1 fp=1 fn=1 tn=1: accuracy 0.5, F1 = 2*1/(2*1+1+1) = 0.5, MCC = (1-1)/... = 0
    assert m == pytest.approx({"accuracy": 0.5, "f1": 0.5, "matthews_corr": 0.0})
    reg = compute_metrics(("pearson", "spearman"), np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 2.0, 3.0]))
    assert reg["spearman"] == pytest.approx(1.0)
    assert reg["pearson"] == pytest.approx(np.corrcoef([1, 2, 4], [1, 2, 3])[0, 1])
