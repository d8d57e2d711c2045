"""The long format for users' own logs: one row per (prompt, model) call, as CSV, JSONL or Parquet.

Required columns: ``prompt_id, prompt, model, score``; optional ``cost`` (the cost of that call),
``task`` (default ``"default"``), ``reference`` (a reference answer) and ``answer`` (the model's
answer, kept as its canonical key by the task's answer kind, ``uniroute.answers``). See
docs/DATA.md.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from uniroute._io import atomic_write_bytes
from uniroute.answers import answer_keys
from uniroute.data.dataset import RoutingDataset
from uniroute.data.jsonl import iter_jsonl_objects
from uniroute.errors import DataError

REQUIRED_COLUMNS = ("prompt_id", "prompt", "model", "score")
OPTIONAL_COLUMNS = ("cost", "task", "reference", "answer")
DEFAULT_TASK = "default"
LONG_FORMAT_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

# Spellings of an empty numeric cell written by common tools; any other text must parse as a number.
MISSING_NUMBER_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none"})


def parse_numbers(values: pd.Series, describe_row: Callable[[int], str], column: str) -> np.ndarray:
    """A column as floats, NaN where the cell is empty; any other non-number is a DataError.

    ``describe_row(i)`` names the file and row of position ``i`` for the error message.
    """
    if pd.api.types.is_bool_dtype(values.dtype):
        raise DataError(
            f"{describe_row(0)}, column {column!r}: booleans are not scores; write 1 or 0"
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=float, na_value=np.nan)
    cells = values.astype(object)
    is_bool = cells.map(lambda cell: isinstance(cell, bool | np.bool_)).to_numpy(dtype=bool)
    if is_bool.any():
        i = int(np.flatnonzero(is_bool)[0])
        raise DataError(
            f"{describe_row(i)}, column {column!r}: {cells.iloc[i]!r} is a boolean, not a number; "
            "write 1 or 0"
        )
    numbers = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    missing = cells.isna().to_numpy() | (
        cells.astype(str).str.strip().str.lower().isin(MISSING_NUMBER_TOKENS).to_numpy()
    )
    bad = np.isnan(numbers) & ~missing
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{describe_row(i)}, column {column!r}: {cells.iloc[i]!r} is not a number")
    return numbers


def text_cells(values: pd.Series) -> np.ndarray:
    """A column as an object array of str, None where the cell is empty or missing."""
    cells = values.astype(object).to_numpy()
    out = np.full(len(cells), None, dtype=object)
    for i, cell in enumerate(cells):
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            continue
        text = cell if isinstance(cell, str) else str(cell)
        if text != "":
            out[i] = text
    return out


@dataclass
class _Table:
    """Rows of one or more long-format files, with where each row came from."""

    frame: pd.DataFrame
    files: list[Path]
    file_of_row: np.ndarray
    number_of_row: np.ndarray
    unit_of_file: list[str]

    def where(self, i: int) -> str:
        """File and user-counted row (or line) of position ``i``."""
        f = int(self.file_of_row[i])
        return f"{self.files[f]}, {self.unit_of_file[f]} {int(self.number_of_row[i])}"


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # Every cell as text, nothing guessed: "None" or "NA" stays a string in text columns.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: empty file, expected a header row with {list(REQUIRED_COLUMNS)}"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    numbered = list(iter_jsonl_objects(path))
    records = [record for _, record in numbered]
    line_numbers = np.array([line_number for line_number, _ in numbered], dtype=int)
    return pd.DataFrame.from_records(records), line_numbers


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors derive from these
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def _encoding_of(path: Path) -> str:
    encoding = LONG_FORMAT_SUFFIXES.get(path.suffix.lower())
    if encoding is None:
        raise DataError(
            f"{path}: unknown long-format extension {path.suffix!r}; "
            f"use one of {sorted(LONG_FORMAT_SUFFIXES)}"
        )
    return encoding


def _read_tables(paths: Sequence[Path]) -> _Table:
    frames, file_of_row, number_of_row, units = [], [], [], []
    for f, path in enumerate(paths):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        encoding = _encoding_of(path)
        if encoding == "jsonl":
            frame, numbers = _read_jsonl(path)
            units.append("line")
        else:
            frame = _read_csv(path) if encoding == "csv" else _read_parquet(path)
            numbers = np.arange(1, len(frame) + 1)
            units.append("row")
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path}: missing required column(s) {missing}; "
                f"found {[str(c) for c in frame.columns]}"
            )
        frames.append(frame.reset_index(drop=True))
        file_of_row.append(np.full(len(frame), f, dtype=int))
        number_of_row.append(numbers)
    return _Table(
        frame=pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0],
        files=list(paths),
        file_of_row=np.concatenate(file_of_row),
        number_of_row=np.concatenate(number_of_row),
        unit_of_file=units,
    )


def _require_present(table: _Table, values: np.ndarray, column: str) -> None:
    empty = np.array([v is None for v in values], dtype=bool)
    if empty.any():
        raise DataError(f"{table.where(int(np.flatnonzero(empty)[0]))}: empty {column!r}")


def _check_consistent(
    table: _Table, prompt_ids: np.ndarray, values: np.ndarray, column: str, skip_missing: bool
) -> None:
    """Every row of one prompt id must carry the same value of ``column``."""
    first_row: dict[str, int] = {}
    for i, (prompt_id, value) in enumerate(zip(prompt_ids, values, strict=True)):
        if skip_missing and value is None:
            continue
        j = first_row.setdefault(prompt_id, i)
        if values[j] != value:
            raise DataError(
                f"{table.where(i)}: prompt_id {prompt_id!r} has a different {column!r} than at "
                f"{table.where(j)}; one prompt id must name one prompt"
            )


def _check_prompt_rows(
    table: _Table,
    prompt_ids: np.ndarray,
    models: np.ndarray,
    prompts: np.ndarray,
    tasks: np.ndarray,
    references: np.ndarray | None,
) -> None:
    """One prompt id names one prompt (text, task, reference) and one row per model."""
    _check_consistent(table, prompt_ids, prompts, "prompt", skip_missing=False)
    _check_consistent(table, prompt_ids, tasks, "task", skip_missing=False)
    if references is not None:
        _check_consistent(table, prompt_ids, references, "reference", skip_missing=True)

    pair = pd.DataFrame({"prompt_id": prompt_ids, "model": models})
    repeated = pair.duplicated(keep="first").to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        same = (pair["prompt_id"] == prompt_ids[i]) & (pair["model"] == models[i])
        j = int(np.flatnonzero(same.to_numpy())[0])
        raise DataError(
            f"{table.where(i)}: duplicate row for prompt_id {prompt_ids[i]!r}, model {models[i]!r} "
            f"(first given at {table.where(j)})"
        )


def _build(
    table: _Table, costs: Mapping[str, float] | None, name: str, source: str
) -> RoutingDataset:
    """Check every row and assemble the dataset."""
    frame = table.frame
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")
    prompt_ids = text_cells(frame["prompt_id"])
    models = text_cells(frame["model"])
    prompts = text_cells(frame["prompt"])
    _require_present(table, prompt_ids, "prompt_id")
    _require_present(table, models, "model")
    _require_present(table, prompts, "prompt")
    scores = parse_numbers(frame["score"], table.where, "score")
    bad = np.isinf(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{table.where(i)}, column 'score': {scores[i]} is outside [0, 1]")
    given_tasks = text_cells(frame["task"]) if "task" in frame.columns else [None] * len(frame)
    tasks = np.array([DEFAULT_TASK if t is None else t for t in given_tasks], dtype=object)
    has_references = "reference" in frame.columns
    references = text_cells(frame["reference"]) if has_references else None
    call_cost_values = None
    if "cost" in frame.columns:
        call_cost_values = parse_numbers(frame["cost"], table.where, "cost")
        bad = np.isinf(call_cost_values) | (call_cost_values < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{table.where(i)}, column 'cost': {call_cost_values[i]} is not a finite cost >= 0"
            )

    _check_prompt_rows(table, prompt_ids, models, prompts, tasks, references)
    answer_cells = text_cells(frame["answer"]) if "answer" in frame.columns else None

    row_of, unique_prompt_ids = pd.factorize(pd.Series(prompt_ids, dtype=object), sort=False)
    col_of, model_names = pd.factorize(pd.Series(models, dtype=object), sort=False)
    n, m = len(unique_prompt_ids), len(model_names)
    _, first = np.unique(row_of, return_index=True)
    score_matrix = np.full((n, m), np.nan)
    score_matrix[row_of, col_of] = scores

    answers = None
    if answer_cells is not None:
        answers = np.full((n, m), None, dtype=object)
        answers[row_of, col_of] = answer_keys(answer_cells, tasks, prompts)
    call_costs = None
    # Placeholder costs for models without any; a cost map (checked below) replaces them all.
    model_costs = np.zeros(m)
    uncosted = [str(model) for model in model_names]
    if call_cost_values is not None:
        call_costs = np.full((n, m), np.nan)
        call_costs[row_of, col_of] = call_cost_values
        known = np.isfinite(call_costs)
        counts = known.sum(axis=0)
        totals = np.where(known, call_costs, 0.0).sum(axis=0)
        model_costs = np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)
        uncosted = [str(model_names[j]) for j in np.flatnonzero(counts == 0)]
    if uncosted and costs is None:
        raise DataError(
            f"{source}: no 'cost' given for model(s) {uncosted}; add a 'cost' column or pass a "
            "cost map (--costs costs.json)"
        )
    dataset = RoutingDataset(
        prompt_ids=np.asarray(unique_prompt_ids, dtype=object),
        prompts=prompts[first],
        tasks=tasks[first],
        models=[str(name) for name in model_names],
        model_costs=model_costs,
        scores=score_matrix,
        call_costs=call_costs,
        references=None if references is None else _first_present(references, row_of, n),
        answers=answers,
        name=name,
        source=source,
    )
    if costs is not None:
        dataset = dataset.with_costs(costs, source=f"cost map for {source}")
    return dataset


def _first_present(values: np.ndarray, row_of: np.ndarray, n: int) -> np.ndarray:
    """Per prompt, the first non-missing value among its rows."""
    out = np.full(n, None, dtype=object)
    for value, row in zip(values, row_of, strict=True):
        if value is not None and out[row] is None:
            out[row] = value
    return out


def load_long_format(
    path: str | Path | Sequence[str | Path],
    costs: Mapping[str, float] | None = None,
    name: str | None = None,
) -> RoutingDataset:
    """Read one long-format file (or several, merged row by row) into a RoutingDataset.

    The encoding follows the extension: ``.csv``, ``.jsonl``/``.ndjson`` or ``.parquet``.
    Files given together are merged before checking, so one prompt may have its models spread
    over several files; a (prompt_id, model) pair must still appear only once overall.
    ``costs`` ({model: cost per query}), when given, replaces the per-call costs.
    """
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    if not paths:
        raise DataError("no long-format files given")
    table = _read_tables(paths)
    source = ", ".join(str(p) for p in paths)
    return _build(table, costs, name or paths[0].stem, source)


def _long_rows(dataset: RoutingDataset) -> pd.DataFrame:
    """One row per recorded (prompt, model) pair: a known score or a known call cost."""
    recorded = np.isfinite(dataset.scores)
    if dataset.call_costs is not None:
        recorded |= np.isfinite(dataset.call_costs)
    rows, cols = np.nonzero(recorded)
    columns: dict[str, object] = {
        "prompt_id": dataset.prompt_ids[rows],
        "prompt": dataset.prompts[rows],
        "model": np.asarray(dataset.models, dtype=object)[cols],
        "score": dataset.scores[rows, cols],
        "cost": dataset.effective_call_costs()[rows, cols],
        "task": dataset.tasks[rows],
    }
    if dataset.references is not None:
        columns["reference"] = dataset.references[rows]
    if dataset.answers is not None:
        # Keys read back as themselves, so a written dataset keeps its answers.
        columns["answer"] = dataset.answers[rows, cols]
    return pd.DataFrame(columns)


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and np.isnan(value)


def write_long_format(dataset: RoutingDataset, path: str | Path) -> None:
    """Write a dataset in the long format (encoding by extension), atomically.

    Each call's cost is the recorded one where known, else the model's per-query cost, so
    reading the file back gives the same scores and, per model, the mean of those costs.
    """
    path = Path(path)
    encoding = _encoding_of(path)
    frame = _long_rows(dataset)
    if encoding == "csv":
        data = frame.to_csv(index=False, na_rep="").encode("utf-8")
    elif encoding == "jsonl":
        lines = []
        for record in frame.to_dict(orient="records"):
            clean = {k: None if _is_nan(v) else v for k, v in record.items()}
            lines.append(json.dumps(clean, ensure_ascii=False, allow_nan=False))
        data = ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")
    else:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
    atomic_write_bytes(path, data)
