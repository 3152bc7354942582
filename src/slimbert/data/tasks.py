"""GLUE tasks: where their files are, what their columns mean, how they are scored.

Local copies use GLUE's own TSV layout (as written by GLUE's download script). Without a local
directory, the same tasks load from the Hugging Face hub through `datasets` (needs network).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slimbert.data.readers import Column, Example, LabelSpec, ReadStats, Table, read_table
from slimbert.errors import DataError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_col: Column
    text_pair_col: Column | None
    label_col: Column
    label_values: tuple[str, ...] | None  # raw labels in class order; None = regression
    label_names: tuple[str, ...] | None  # human names, same order
    metrics: tuple[str, ...]  # computed at evaluation; the first is the one that picks the best model
    has_header: bool = True
    dirnames: tuple[str, ...] = ()  # folder names a GLUE copy may use
    dev_file: str = "dev.tsv"
    hub_name: str = ""
    hub_fields: tuple[str, str | None] = ("sentence", None)
    hub_dev_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return self.label_values is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_values is None else len(self.label_values)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names)) if self.label_names else {}

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


_ENTAIL = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("sst2", "sentence", None, "label", ("0", "1"), ("negative", "positive"), ("accuracy",),
             dirnames=("SST-2",)),
    TaskSpec("cola", 3, None, 1, ("0", "1"), ("unacceptable", "acceptable"), ("matthews_corr", "accuracy"),
             has_header=False, dirnames=("CoLA",)),
    TaskSpec("mrpc", "#1 String", "#2 String", "Quality", ("0", "1"), ("not_equivalent", "equivalent"),
             ("f1", "accuracy"), dirnames=("MRPC",), hub_fields=("sentence1", "sentence2")),
    TaskSpec("stsb", "sentence1", "sentence2", "score", None, None, ("pearson", "spearman"),
             dirnames=("STS-B",), hub_fields=("sentence1", "sentence2")),
    TaskSpec("rte", "sentence1", "sentence2", "label", _ENTAIL, _ENTAIL, ("accuracy",),
             dirnames=("RTE",), hub_fields=("sentence1", "sentence2")),
    TaskSpec("qnli", "question", "sentence", "label", _ENTAIL, _ENTAIL, ("accuracy",),
             dirnames=("QNLI",), hub_fields=("question", "sentence")),
    TaskSpec("qqp", "question1", "question2", "is_duplicate", ("0", "1"), ("not_duplicate", "duplicate"),
             ("f1", "accuracy"), dirnames=("QQP",), hub_fields=("question1", "question2")),
    TaskSpec("mnli", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
             ("entailment", "neutral", "contradiction"), ("accuracy",), dirnames=("MNLI",),
             dev_file="dev_matched.tsv", hub_fields=("premise", "hypothesis"),
             hub_dev_split="validation_matched"),
    TaskSpec("wnli", "sentence1", "sentence2", "label", ("0", "1"), ("not_entailment", "entailment"),
             ("accuracy",), dirnames=("WNLI",), hub_fields=("sentence1", "sentence2")),
]}
SPLITS = ("train", "dev")


def get_task(name: str) -> TaskSpec:
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise DataError(f"unknown task '{name}'; GLUE tasks are {sorted(TASKS)} "
                        "(use --train-file/--dev-file with --text-col/--label-col for your own data)")
    return TASKS[key]


def task_dir(task: TaskSpec, data_dir: str | Path) -> Path:
    """The folder holding a task's files: DATA_DIR/sst2, DATA_DIR/SST-2, or DATA_DIR itself."""
    data_dir = Path(data_dir)
    for name in (task.name, *task.dirnames):
        if (data_dir / name).is_dir():
            return data_dir / name
    if (data_dir / "train.tsv").exists() or (data_dir / task.dev_file).exists():
        return data_dir
    raise DataError(f"{data_dir}: no folder for task '{task.name}' (looked for "
                    f"{', '.join((task.name, *task.dirnames))})")


def load_task(name: str, split: str, data_dir: str | Path | None = None, skip_bad_rows: bool = False,
              max_examples: int | None = None) -> Table:
    """Examples of a GLUE task split ("train" or "dev"), from `data_dir` or else the hub."""
    task = get_task(name)
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; expected one of {SPLITS}")
    if data_dir is None:
        return load_task_from_hub(task, split, max_examples)
    path = task_dir(task, data_dir) / ("train.tsv" if split == "train" else task.dev_file)
    if not path.exists():
        raise DataError(f"{path}: file not found (the {split} split of {task.name})")
    return read_table(path, task.text_col, task.text_pair_col, task.label_col,
                      LabelSpec(task.label_values, task.is_regression), has_header=task.has_header,
                      skip_bad_rows=skip_bad_rows, max_examples=max_examples)


def load_task_from_hub(task: TaskSpec, split: str, max_examples: int | None = None) -> Table:
    """GLUE through `datasets.load_dataset("nyu-mll/glue", ...)`; its label indices follow GLUE's
    class order, which is the order of `TaskSpec.label_values`."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"no --data-dir given for {task.name}, and loading GLUE from the Hugging "
                        "Face hub needs `pip install 'slimbert[hub]'`") from None
    hub_split = "train" if split == "train" else task.hub_dev_split
    try:
        ds = datasets.load_dataset("nyu-mll/glue", task.hub_name or task.name, split=hub_split)
    except Exception as e:  # offline, unknown config...: say what was tried
        raise DataError(f"could not load GLUE {task.name}/{hub_split} from the Hugging Face hub "
                        f"({e}); pass --data-dir with a local copy") from None
    return table_from_records(task, ds, source=f"hub:nyu-mll/glue/{task.name}/{hub_split}",
                              max_examples=max_examples)


def table_from_records(task: TaskSpec, records, source: str, max_examples: int | None = None) -> Table:
    """Examples from an iterable of dicts in the hub's GLUE schema."""
    text_field, pair_field = task.hub_fields
    examples = []
    for i, row in enumerate(records):
        label = row["label"]
        if not task.is_regression and not 0 <= int(label) < task.num_labels:
            raise DataError(f"{source}: row {i}: label {label} outside 0..{task.num_labels - 1} "
                            "(the hub's unlabelled test split?)")
        examples.append(Example(row[text_field], row[pair_field] if pair_field else None,
                                float(label) if task.is_regression else int(label)))
        if max_examples is not None and len(examples) >= max_examples:
            break
    stats = ReadStats(rows=len(examples), kept=len(examples))
    return Table(examples, task.label_values, stats, Path(source))
