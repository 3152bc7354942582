"""One description of "the data of a job": a GLUE task, or the user's own files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slimbert.data.readers import LabelSpec, Table, read_table
from slimbert.data.tasks import TASKS, get_task, load_task
from slimbert.errors import DataError


@dataclass
class TaskData:
    name: str  # GLUE task name, or the train file's stem
    metrics: tuple[str, ...]  # first = the one that picks the best model
    regression: bool
    id2label: dict[int, str]
    train: Table | None
    dev: Table | None

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.id2label)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def label_mapping(self) -> dict[str, str] | str:
        """What the model's outputs mean, for a run's summary: {class index: label}, or
        "regression"."""
        return "regression" if self.regression else {str(i): name for i, name in self.id2label.items()}

    def label_summary(self) -> str:
        """`label_mapping` in one line: "labels 0 = neg, 1 = pos"."""
        if self.regression:
            return "regression: one score per example"
        return "labels " + ", ".join(f"{i} = {name}" for i, name in self.id2label.items())


@dataclass
class FileColumns:
    """Column names (or 0-based indices with --no-header) of the user's own files."""

    text_col: str = "text"
    text_pair_col: str | None = None
    label_col: str = "label"
    has_header: bool = True

    def column(self, value: str | None):
        if value is None or self.has_header:
            return value
        try:
            return int(value)
        except ValueError:
            raise DataError(f"without a header, columns are 0-based numbers, got '{value}'") from None


def load_task_data(task: str | None = None, data_dir: str | Path | None = None,
                   train_file: str | Path | None = None, dev_file: str | Path | None = None,
                   columns: FileColumns | None = None, regression: bool = False,
                   label_values: tuple[str, ...] | None = None, splits: tuple[str, ...] = ("train", "dev"),
                   skip_bad_rows: bool = False, max_train_examples: int | None = None) -> TaskData:
    """Load the train/dev splits of a GLUE task, or of the user's TSV/CSV/JSONL files.

    For the user's files the label set is learned from the train file (or given by
    `label_values`, e.g. from a fine-tuned model's config) and dev labels must belong to it.
    """
    if task is not None:
        spec = get_task(task)
        tables = {s: load_task(spec.name, s, data_dir, skip_bad_rows,
                               max_train_examples if s == "train" else None) for s in splits}
        return TaskData(spec.name, spec.metrics, spec.is_regression, spec.id2label,
                        tables.get("train"), tables.get("dev"))

    files = {"train": train_file, "dev": dev_file}
    if not any(files[s] for s in splits):
        raise DataError("give --task (a GLUE task) or your own --train-file/--dev-file")
    cols = columns or FileColumns()
    label_spec = LabelSpec(label_values, regression)
    tables: dict[str, Table] = {}
    for split in ("train", "dev"):
        if split not in splits or not files[split]:
            continue
        table = read_table(files[split], cols.column(cols.text_col), cols.column(cols.text_pair_col),
                           cols.column(cols.label_col), label_spec, has_header=cols.has_header,
                           skip_bad_rows=skip_bad_rows,
                           max_examples=max_train_examples if split == "train" else None)
        if not regression and label_spec.values is None:
            if split == "train" and len(table.label_values) < 2:
                rows = (f" of the first {max_train_examples} rows (--max-train-examples)"
                        if max_train_examples is not None else "")
                raise DataError(f"{table.path}: every label{rows} in column '{cols.label_col}' is "
                                f"'{table.label_values[0]}'; a classifier needs two classes or more "
                                "(for numeric targets, give --regression)")
            label_spec = LabelSpec(table.label_values, regression)  # dev must use train's labels
        tables[split] = table
    values = label_spec.values or ()
    metrics = (("pearson", "spearman") if regression
               else ("accuracy", "f1") if len(values) == 2 else ("accuracy",))
    name = Path(files["train"] or files["dev"]).stem
    return TaskData(name, metrics, regression, dict(enumerate(values)) if not regression else {},
                    tables.get("train"), tables.get("dev"))


def load_test_file(path: str | Path, data: TaskData, columns: FileColumns | None = None) -> Table:
    """A labelled file of held-out examples in the format of `data`: a GLUE task's own columns
    and labels, or the user's `columns` with the labels of `data`'s train split."""
    if data.name in TASKS:
        spec = get_task(data.name)
        return read_table(path, spec.text_col, spec.text_pair_col, spec.label_col,
                          LabelSpec(spec.label_values, spec.is_regression), has_header=spec.has_header)
    cols = columns or FileColumns()
    values = None if data.regression else tuple(data.id2label[i] for i in sorted(data.id2label))
    return read_table(path, cols.column(cols.text_col), cols.column(cols.text_pair_col), cols.column(cols.label_col),
                      LabelSpec(values, data.regression), has_header=cols.has_header)
