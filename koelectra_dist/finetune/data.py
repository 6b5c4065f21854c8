"""Reading a task's split files (local, s3://, .gz) into examples, with errors that name file and line.

A file is read as its dataset publishes it. With no delimiter set, the header line tells the
format: a tab in it means tab-separated lines split without quoting, as KoELECTRA's readers did
(KorSTS sentences contain bare quotes); no tab but a comma means CSV with quoting (songys'
Question Pair files). Blank lines are skipped.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from koelectra_dist import storage
from koelectra_dist.errors import DataError
from koelectra_dist.finetune.spans import Answer, parse_squad
from koelectra_dist.finetune.task_specs import FinetuneTaskConfig, is_regression, is_span, is_tagging, split_file


@dataclass
class TaskData:
    """One split of a task: texts (a second list for sentence pairs) and label ids, scores, (tagging)
    one list of tag ids per text, a tag per space-separated word, or (spans) questions, their
    contexts and each question's answers."""

    uri: str
    text_a: list[str]
    text_b: list[str] | None
    labels: list[int] | list[float] | list[list[int]] | list[list[Answer]]

    def __len__(self) -> int:
        return len(self.text_a)


def split_uri(data_dir: str, spec: FinetuneTaskConfig, split: str) -> str:
    """Where a split's file is: `<data_dir>/<folder>/<file>`, or the file setting itself when it is
    a full path or URI."""
    name = split_file(spec, split)
    if name is None:
        raise DataError(f"task {spec.name!r} has no {split} file; set {split}_file in finetune.task_specs")
    if "://" in name or name.startswith("/"):
        return name
    return storage.join(data_dir, spec.folder or spec.name, name)


def _column_indexes(spec: FinetuneTaskConfig, header: list[str], uri: str) -> list[int]:
    wanted = [*spec.text_columns, spec.label_column]
    missing = [c for c in wanted if c not in header]
    if missing:
        where = "line 1 (header)" if spec.columns is None else "finetune task columns"
        raise DataError(
            f"{uri} {where}: no column {', '.join(map(repr, missing))} for task {spec.name!r} "
            f"(columns: {', '.join(header)}); fix the file or the task's text_columns/label_column"
        )
    return [header.index(c) for c in wanted]


def _tag_ids(raw: str, text: str, label_ids: dict[str, int], spec: FinetuneTaskConfig, where: str) -> list[int]:
    """A tagging row's tag ids: one known tag per space-separated word of the text."""
    tags, words = raw.split(), text.split()
    if len(tags) != len(words):
        raise DataError(
            f"{where}: {len(words)} words in column {spec.text_columns[0]!r} but {len(tags)} tags in "
            f"{spec.label_column!r}; a tagging task needs one tag per space-separated word"
        )
    unknown = [tag for tag in tags if tag not in label_ids]
    if unknown:
        raise DataError(
            f"{where}: unknown tag {unknown[0]!r} in column {spec.label_column!r} for task {spec.name!r} "
            f"(tags: {', '.join(spec.labels)})"
        )
    return [label_ids[tag] for tag in tags]


def _delimited(lines: Iterable[str], spec: FinetuneTaskConfig) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line, in the format the spec or the header gives."""
    lines = iter(lines)
    numbered = enumerate(lines, start=1)
    first = next(((n, line) for n, line in numbered if line.strip()), None)
    if first is None:
        return
    header = first[1]
    if spec.delimiter is None and spec.columns is None and "\t" not in header and "," in header:
        # CSV: quoted fields may hold commas, quotes and line breaks; the reader counts lines
        reader = csv.reader(itertools.chain([header], lines))
        for fields in reader:
            if any(f.strip() for f in fields):
                yield first[0] - 1 + reader.line_num, fields
        return
    delimiter = spec.delimiter or "\t"
    for number, line in itertools.chain([first], numbered):
        line = line.rstrip("\r\n")
        if line.strip():
            yield number, line.split(delimiter)


def parse_lines(lines: Iterable[str], spec: FinetuneTaskConfig, uri: str, limit: int | None = None) -> TaskData:
    """Parse a task file's lines (without decoding concerns); `limit` keeps the first N rows."""
    regression, tagging = is_regression(spec), is_tagging(spec)
    label_ids = {label: i for i, label in enumerate(spec.labels or [])}
    header = spec.columns
    indexes: list[int] = [] if header is None else _column_indexes(spec, header, uri)
    texts: list[list[str]] = [[] for _ in spec.text_columns]
    labels: list = []
    for number, fields in _delimited(lines, spec):
        if header is None:
            header = [f.strip() for f in fields]
            indexes = _column_indexes(spec, header, uri)
            continue
        if len(fields) != len(header):
            absent = [header[i] for i in indexes if i >= len(fields)]
            hint = f" (missing column {', '.join(map(repr, absent))})" if absent else " (a delimiter inside the text?)"
            raise DataError(f"{uri} line {number}: {len(fields)} fields, expected {len(header)}{hint}")
        *text_idx, label_idx = indexes
        raw = fields[label_idx].strip()
        if tagging:
            labels.append(_tag_ids(raw, fields[text_idx[0]], label_ids, spec, f"{uri} line {number}"))
        elif regression:
            try:
                value = float(raw)
            except ValueError:
                raise DataError(f"{uri} line {number}: {spec.label_column} {raw!r} is not a number") from None
            if not math.isfinite(value):  # nan/inf would train to nan and report a meaningless score
                raise DataError(f"{uri} line {number}: {spec.label_column} {raw!r} is not a finite number")
            labels.append(value)
        elif raw in label_ids:
            labels.append(label_ids[raw])
        else:
            raise DataError(
                f"{uri} line {number}: unknown label {raw!r} in column {spec.label_column!r} for task "
                f"{spec.name!r} (labels: {', '.join(spec.labels)})"
            )
        for column, i in zip(texts, text_idx, strict=True):
            column.append(fields[i])
        if limit is not None and len(labels) >= limit:
            break
    if header is None:
        raise DataError(f"{uri}: empty file (no header line); expected the {spec.name!r} task's columns")
    if not labels:
        raise DataError(f"{uri}: no data rows after the header")
    return TaskData(uri, texts[0], texts[1] if len(texts) == 2 else None, labels)


def read_split(data_dir: str, spec: FinetuneTaskConfig, split: str, limit: int | None = None) -> TaskData:
    """Read one split of a task from `data_dir` (local or s3://); DataError naming file and line on bad input."""
    uri = split_uri(data_dir, spec, split)
    if not storage.exists(uri):
        name = split_file(spec, split)
        where = (
            f"{split}_file={name}"
            if uri == name
            else f"finetune.data_dir={data_dir}, folder={spec.folder or spec.name}, {split}_file={name}"
        )
        raise DataError(
            f"{uri}: not found; task {spec.name!r} expects its {split} file there ({where}); change "
            f"finetune.data_dir, or the task's folder or {split}_file in finetune.task_specs ({split}_file "
            "may also be a full path or URI of its own)"
        )
    with storage.open_uri(uri, "rb", compression="infer") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="\n")  # a stray \r stays inside its line
        try:
            if is_span(spec):
                return TaskData(uri, *parse_squad(text.read(), uri, limit))
            return parse_lines(text, spec, uri, limit)
        except UnicodeDecodeError as e:
            raise DataError(f"{uri}: not UTF-8 text ({e.reason} at byte {e.start} of a block)") from None
